"""Every GraphQL document the action sends is valid against Fly's real schema.

The schema is `src/flysim/fly-schema.graphql`, a verbatim copy of superfly/fly-go's
`schema.graphql`; the simulator serves the same file, so a field, argument or enum value Fly's
API lacks fails there too. The documents are found by scanning `fly_pg_external.fly.graphql` for
strings that parse as GraphQL operations, so one added later is checked without editing this file.
"""

from __future__ import annotations

import ast
import inspect
import json
import tomllib
import typing
from collections.abc import Callable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import (
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    NoDeprecatedCustomRule,
    OperationDefinitionNode,
    build_schema,
    get_named_type,
    is_leaf_type,
    parse,
    validate,
)
from graphql.execution.values import get_variable_values

from fly_pg_external.domain import IpFamily
from fly_pg_external.fly import graphql as action_graphql
from fly_pg_external.fly.http import FlyHttp, RetryPolicy
from fly_pg_external.flytoken import parse_token
from flysim import Simulator, graphql_api

ROOT = Path(__file__).resolve().parents[2]


@cache
def fly_schema() -> GraphQLSchema:
    """Fly's schema as flysim ships it (read as package data, no resolvers)."""
    sdl = resources.files("flysim").joinpath("fly-schema.graphql").read_text(encoding="utf-8")
    return build_schema(sdl)


def _operations(text: str) -> DocumentNode | None:
    """``text`` parsed, if it is a GraphQL document with at least one operation."""
    try:
        document = parse(text)
    except GraphQLError:
        return None
    if any(isinstance(d, OperationDefinitionNode) for d in document.definitions):
        return document
    return None


@cache
def action_documents() -> dict[str, str]:
    """The action's GraphQL documents by name: module-level strings, then any other literal."""
    found: dict[str, str] = {
        name: value
        for name, value in vars(action_graphql).items()
        if isinstance(value, str) and _operations(value) is not None
    }
    tree = ast.parse(inspect.getsource(action_graphql))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value not in found.values()
            and _operations(node.value) is not None
        ):
            found[f"literal at line {node.lineno}"] = node.value
    return found


DOCUMENTS = action_documents()


def test_the_scan_finds_the_actions_queries_and_mutations() -> None:
    kinds = {
        definition.operation.value
        for text in DOCUMENTS.values()
        for definition in parse(text).definitions
        if isinstance(definition, OperationDefinitionNode)
    }
    assert kinds == {"query", "mutation"}, DOCUMENTS


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_the_document_is_valid_against_flys_schema(name: str) -> None:
    errors = validate(fly_schema(), parse(DOCUMENTS[name]))
    assert not errors, [error.message for error in errors]


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_the_document_uses_nothing_fly_has_deprecated(name: str) -> None:
    errors = validate(fly_schema(), parse(DOCUMENTS[name]), [NoDeprecatedCustomRule])
    assert not errors, [error.message for error in errors]


class _RecordingTransport(httpx.BaseTransport):
    """A real HTTP transport that keeps every GraphQL request body it sends."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.bodies: list[dict[str, Any]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/graphql"):
            self.bodies.append(json.loads(request.read()))
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


def test_the_variables_the_action_sends_type_check(flysim: Callable[..., Simulator]) -> None:
    """The action's client, over real HTTP to the simulator, for every IP family it allocates."""
    sim = flysim(apps={"my-db": {"machines": 1}}, postgres=False)
    transport = _RecordingTransport()
    http = FlyHttp(timeout=5.0, retry=RetryPolicy(attempts=1), transport=transport)
    client = action_graphql.GraphQL(http, sim.api_base_url, parse_token(sim.token))
    try:
        assert client.get_app("my-db").is_postgres
        for family in typing.get_args(IpFamily):
            created, listed = client.allocate_ip("my-db", family)
            assert created.type == family and created in listed
            client.release_ip("my-db", created.address)
    finally:
        http.close()

    sent = {body["query"] for body in transport.bodies}
    assert sent == set(DOCUMENTS.values()), (
        "every document must be sent here so its variables are checked: call the method that "
        "sends a new one above"
    )
    for body in transport.bodies:
        (operation,) = [
            d for d in parse(body["query"]).definitions if isinstance(d, OperationDefinitionNode)
        ]
        coerced = get_variable_values(
            fly_schema(), operation.variable_definitions or (), body["variables"]
        )
        assert not isinstance(coerced, list), [error.message for error in coerced]


# -- the simulator serves the real schema -------------------------------------------------------
def _post(sim: Simulator, query: str) -> dict[str, Any]:
    response = httpx.post(
        f"{sim.api_base_url}/graphql",
        json={"query": query, "variables": {}},
        headers={"Authorization": f"Bearer {sim.token}"},
    )
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def test_the_simulator_rejects_what_flys_api_lacks(flysim: Callable[..., Simulator]) -> None:
    sim = flysim(apps={"my-db": {"machines": 1}}, postgres=False)
    for query, message in [
        ('{ app(name: "my-db") { label } }', "Cannot query field 'label' on type 'App'."),
        ('{ app(slug: "my-db") { id } }', "Unknown argument 'slug' on field 'Queries.app'."),
        ('{ app(name: "my-db") { role { databasesCount } } }', "'databasesCount'"),
        (
            'mutation { releaseIpAddress(input: {ip: "::1", force: true}) { clientMutationId } }',
            "'force'",
        ),
    ]:
        body = _post(sim, query)
        assert "data" not in body, body
        assert message in body["errors"][0]["message"], body


def test_the_simulator_accepts_real_fields_the_old_sdl_lacked(
    flysim: Callable[..., Simulator],
) -> None:
    sim = flysim(
        apps={
            "my-db": {"machines": 1},
            "builder": {"machines": 0, "role": "remote-docker-builder"},
        },
        postgres=False,
    )
    body = _post(
        sim,
        """{
          app(name: "my-db") {
            internalNumericId currentRelease { id } imageUpgradeAvailable
            role { __typename name ... on PostgresClusterAppRole { name } }
            ipAddresses(first: 10) {
              totalCount edges { cursor } pageInfo { hasNextPage hasPreviousPage endCursor }
            }
            egressIpAddresses { totalCount pageInfo { hasNextPage } }
          }
          builder: app(name: "builder") { role { __typename name } }
          organization(slug: "personal") { id }
        }""",
    )
    assert "errors" not in body, body
    app = body["data"]["app"]
    assert app["currentRelease"] is None and app["imageUpgradeAvailable"] is None
    assert app["role"] == {"__typename": "PostgresClusterAppRole", "name": "postgres_cluster"}
    single_page = {"hasNextPage": False, "hasPreviousPage": False, "endCursor": None}
    assert app["ipAddresses"] == {"totalCount": 1, "edges": None, "pageInfo": single_page}
    assert app["egressIpAddresses"] == {"totalCount": 0, "pageInfo": {"hasNextPage": False}}
    assert body["data"]["builder"]["role"] == {
        "__typename": "EmptyAppRole",
        "name": "remote-docker-builder",
    }
    assert body["data"]["organization"] is None  # no resolver: null, as the schema allows


def _merged(items: list[Any]) -> dict[str, Any] | None:
    """One dict with every key of the list's dicts (the first non-null value of each)."""
    merged: dict[str, Any] = {}
    for item in items:
        if isinstance(item, dict):
            for key, value in item.items():
                if merged.get(key) is None:
                    merged[key] = value
    return merged or None


def _selection(schema: GraphQLSchema, type_name: str, value: dict[str, Any]) -> str:
    """A selection set asking for every key of ``value``; each must be a field of the type."""
    parent = schema.get_type(type_name)
    fields = getattr(parent, "fields", {})
    parts = []
    for key, item in value.items():
        if key.startswith("__"):
            continue
        assert key in fields, f"the simulator gives {type_name}.{key}, which Fly's schema lacks"
        named = get_named_type(fields[key].type)
        if is_leaf_type(named):
            parts.append(key)
            continue
        sample = _merged(item) if isinstance(item, list) else item
        inner = _selection(schema, named.name, sample) if isinstance(sample, dict) else ""
        parts.append(f"{key} {{ __typename {inner} }}")
    return " ".join(parts)


def test_every_field_the_simulator_provides_resolves(flysim: Callable[..., Simulator]) -> None:
    sim = flysim(
        apps={"my-db": {"machines": 1, "public_v4": True, "shared_v4": True}}, postgres=False
    )
    schema = graphql_api.base_schema()
    app = graphql_api.query_app(sim, "my-db")
    assert {ip["type"] for ip in app["ipAddresses"]["nodes"]} == {"v4", "private_v6"}
    assert app["sharedIpAddress"]
    body = _post(sim, f'{{ app(name: "my-db") {{ {_selection(schema, "App", app)} }} }}')
    assert "errors" not in body, body
    assert body["data"]["app"]["organization"]["slug"] == "personal"
    assert body["data"]["app"]["platformVersion"] == "machines"


def test_the_schema_ships_with_flysim() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "fly-schema.graphql" in pyproject["tool"]["setuptools"]["package-data"]["flysim"]
    schema = fly_schema()
    assert schema.query_type is not None and schema.query_type.name == "Queries"
    assert schema.mutation_type is not None and schema.mutation_type.name == "Mutations"
    assert graphql_api.schema_sdl() == (ROOT / "src/flysim/fly-schema.graphql").read_text()
