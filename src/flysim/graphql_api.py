"""Fly's GraphQL API, run by graphql-core on Fly's real schema (``fly-schema.graphql``).

Requests are parsed, validated and executed for real, so aliases, variables and fragments behave
as they do against api.fly.io, and a field, argument or enum value Fly's API lacks fails
validation. Only apps and IP addresses have resolvers (``Queries.app``,
``Mutations.allocateIpAddress``, ``Mutations.releaseIpAddress``, here as :func:`query_app`,
:func:`allocate_ip_address` and :func:`release_ip_address` on the state core); any
other root field resolves to null, and a field the simulator's dicts do not carry is null (or an
error where the schema says non-null).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol

from graphql import (
    DocumentNode,
    GraphQLAbstractType,
    GraphQLError,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLSchema,
    GraphQLSyntaxError,
    assert_valid_schema,
    build_schema,
    execute_sync,
    parse,
    validate,
)

from flysim.errors import ApiError
from flysim.models import App
from flysim.requestlog import operation_info

if TYPE_CHECKING:
    from flysim.state import State

SCHEMA_RESOURCE = "fly-schema.graphql"
"""Fly's real schema (superfly/fly-go ``schema.graphql``), shipped as package data of flysim."""

# The concrete `AppRole` type for each role name the simulator gives an app; any other name is an
# `EmptyAppRole` (the interface's plain implementation).
ROLE_TYPES = {"postgres_cluster": "PostgresClusterAppRole"}
DEFAULT_ROLE_TYPE = "EmptyAppRole"

# The simulator's connections are never paginated: every node is on the one page.
SINGLE_PAGE = {
    "hasNextPage": False,
    "hasPreviousPage": False,
    "startCursor": None,
    "endCursor": None,
}

_EXTENSION_KEY = "flysim"

# UNCONFIRMED: Fly's exact status/body for a bad token on GraphQL. We answer an HTTP 401, which
# fly-go reports as "server returned a non-200 status code: 401" - the strict reading.
UNAUTHENTICATED_BODY = {"errors": [{"message": "You must be authenticated to view this."}]}


class NotFoundError(GraphQLError):
    """``Could not find App`` and friends; ``extensions.code`` NOT_FOUND is UNCONFIRMED."""

    def __init__(self, message: str) -> None:
        super().__init__(message, extensions={"code": "NOT_FOUND"})


class InvalidInputError(GraphQLError):
    def __init__(self, message: str) -> None:
        super().__init__(message, extensions={"code": "UNPROCESSABLE"})


@dataclass
class ParsedRequest:
    """A GraphQL request body, parsed once (for the request log) and executed later."""

    query: str | None = None
    variables: dict[str, Any] | None = None
    operation_name: str | None = None
    document: DocumentNode | None = None
    operation_type: str | None = None
    fields: list[str] = field(default_factory=list)
    error: str | None = None  # the body is not a GraphQL request at all
    syntax_error: GraphQLError | None = None


def parse_request(raw: bytes) -> ParsedRequest:
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        return ParsedRequest(error="request body is not valid JSON")
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        return ParsedRequest(error="No query string was present")
    variables = body.get("variables")
    if variables is not None and not isinstance(variables, dict):
        return ParsedRequest(error="variables must be an object")
    operation_name = body.get("operationName")
    if not isinstance(operation_name, str) or not operation_name:
        operation_name = None
    parsed = ParsedRequest(query=body["query"], variables=variables, operation_name=operation_name)
    try:
        parsed.document = parse(body["query"])
    except GraphQLSyntaxError as exc:
        parsed.syntax_error = exc
        return parsed
    operation, parsed.fields = operation_info(parsed.document, operation_name)
    if operation is not None:
        parsed.operation_type = operation.operation.value
        if parsed.operation_name is None and operation.name is not None:
            parsed.operation_name = operation.name.value
    return parsed


def schema_sdl() -> str:
    """The text of Fly's schema, as shipped with flysim."""
    return resources.files("flysim").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")


_base_lock = threading.Lock()
_base: GraphQLSchema | None = None


def base_schema() -> GraphQLSchema:
    """Fly's schema with the simulator's resolvers, built and checked once per process.

    Parsing the ~11k-line SDL takes a fifth of a second, too much for each of the hundreds of
    simulators a test run makes. The resolvers bound here find their state core through
    ``info.schema.extensions`` (see :func:`build`), so one set of types serves every simulator.
    """
    global _base  # noqa: PLW0603 - a process-wide cache, built on first use
    with _base_lock:
        if _base is None:
            schema = build_schema(schema_sdl())
            assert_valid_schema(schema)
            _bind(schema)
            _base = schema
        return _base


def build(state: State) -> GraphQLSchema:
    """The schema bound to ``state``: the shared types of :func:`base_schema`, ``state`` attached.

    Costs about a millisecond (collecting the type map again), not a schema parse.
    """
    kwargs = base_schema().to_kwargs()
    kwargs["extensions"] = {**kwargs["extensions"], _EXTENSION_KEY: state}
    kwargs["assume_valid"] = True  # the base schema was checked when it was built
    return GraphQLSchema(**kwargs)


def _state(info: GraphQLResolveInfo[Any]) -> State:
    state: State = info.schema.extensions[_EXTENSION_KEY]
    return state


def _resolve_app(
    _root: object,
    info: GraphQLResolveInfo[Any],
    name: str | None = None,
    id: str | None = None,
    **_ignored: Any,
) -> dict[str, Any]:
    # Fly's App.id is the app name, so `id` and `name` address the same thing.
    return query_app(_state(info), name or id or "")


def _resolve_allocate(
    _root: object, info: GraphQLResolveInfo[Any], input: dict[str, Any]
) -> dict[str, Any]:
    return allocate_ip_address(_state(info), input)


def _resolve_release(
    _root: object, info: GraphQLResolveInfo[Any], input: dict[str, Any]
) -> dict[str, Any]:
    return release_ip_address(_state(info), input)


# -- the root fields, on the state core --------------------------------------------------------
class AppReader(Protocol):
    """What reading an app needs: the state core, or the ``Simulator`` in front of it (a test
    asks a simulator for an app as GraphQL gives it)."""

    @property
    def lock(self) -> threading.RLock: ...

    def find_app(self, name: str) -> App | None: ...


def query_app(state: AppReader, name: str) -> dict[str, Any]:
    """``Queries.app``: the app named ``name`` as Fly's GraphQL API gives it."""
    with state.lock:
        app = state.find_app(name)
        if app is None:
            raise NotFoundError("Could not find App")
        return app_object(app)


def allocate_ip_address(state: State, data: dict[str, Any]) -> dict[str, Any]:
    """``Mutations.allocateIpAddress`` with its ``input``."""
    with state.lock:
        app = state.find_app(str(data.get("appId") or ""))
        if app is None:
            raise NotFoundError("Could not find App")
        try:
            ip = state.allocate_ip(
                app,
                str(data["type"]),
                str(data.get("region") or ""),
                data.get("network"),
                data.get("serviceName"),
            )
        except ApiError as exc:
            raise InvalidInputError(exc.message) from exc
        return {
            "ipAddress": ip.to_graphql() if ip is not None else None,
            "app": app_object(app),
            "clientMutationId": data.get("clientMutationId"),
        }


def release_ip_address(state: State, data: dict[str, Any]) -> dict[str, Any]:
    """``Mutations.releaseIpAddress`` with its ``input``: by id or address, in one app or any."""
    with state.lock:
        ip_id, address = data.get("ipAddressId"), data.get("ip")
        if not ip_id and not address:
            raise InvalidInputError("ipAddressId or ip is required")
        if data.get("appId"):
            app = state.find_app(str(data["appId"]))
            if app is None:
                raise NotFoundError("Could not find App")
            apps = [app]
        else:
            apps = list(state.apps().values())
        for candidate in apps:
            if state.release_ip(candidate, ip_id=ip_id, address=address):
                return {
                    "app": app_object(candidate),
                    "clientMutationId": data.get("clientMutationId"),
                }
        raise NotFoundError("Could not find IPAddress")


def app_object(app: App) -> dict[str, Any]:
    """An ``App`` object (as a dict) with its organization, role and IP addresses."""
    org = {
        "id": f"org_{app.org_slug}",
        "internalNumericId": str(app.internal_numeric_id * 7),
        "slug": app.org_slug,
        "name": app.org_slug,
        "paidPlan": True,
    }
    nodes = [ip.to_graphql() for ip in app.ips]
    return {
        "id": app.name,  # Fly's App.id is the app name
        "name": app.name,
        "internalNumericId": app.internal_numeric_id,
        "hostname": f"{app.name}.fly.dev",
        "cnameTarget": None,
        "appUrl": f"https://{app.name}.fly.dev",
        "deployed": bool(app.machines),
        "status": "deployed" if app.machines else "pending",
        "platformVersion": "machines",
        "network": "default",
        "organization": org,
        "role": {"name": app.role} if app.role else None,
        "ipAddresses": {"nodes": nodes, "totalCount": len(nodes)},
        "sharedIpAddress": app.shared_ip,
        "egressIpAddresses": {"nodes": []},
        "currentReleaseUnprocessed": None,
    }


# -- schema plumbing ---------------------------------------------------------------------------
def _resolve_role_type(
    value: Any, _info: GraphQLResolveInfo[Any], _type: GraphQLAbstractType
) -> str:
    """``App.role`` is the ``AppRole`` interface: pick the concrete type from the role's name."""
    explicit = value.get("__typename") if isinstance(value, dict) else None
    if isinstance(explicit, str):
        return explicit
    name = value.get("name") if isinstance(value, dict) else None
    return ROLE_TYPES.get(str(name), DEFAULT_ROLE_TYPE)


def _resolve_total_count(connection: Any, _info: GraphQLResolveInfo[Any]) -> Any:
    if isinstance(connection, dict):
        if "totalCount" in connection:
            return connection["totalCount"]
        return len(connection.get("nodes") or [])
    return None


def _resolve_page_info(connection: Any, _info: GraphQLResolveInfo[Any]) -> Any:
    if isinstance(connection, dict):
        return connection.get("pageInfo") or SINGLE_PAGE
    return None


def _bind(schema: GraphQLSchema) -> None:
    query_type, mutation_type = schema.query_type, schema.mutation_type
    assert query_type is not None and mutation_type is not None
    query_type.fields["app"].resolve = _resolve_app
    mutation_type.fields["allocateIpAddress"].resolve = _resolve_allocate
    mutation_type.fields["releaseIpAddress"].resolve = _resolve_release
    role = schema.get_type("AppRole")
    assert isinstance(role, GraphQLInterfaceType)
    role.resolve_type = _resolve_role_type
    # The simulator's dicts give a connection's `nodes`; the count and the (single) page follow.
    for name in ("IPAddressConnection", "EgressIPAddressConnection"):
        connection = schema.get_type(name)
        assert isinstance(connection, GraphQLObjectType)
        connection.fields["totalCount"].resolve = _resolve_total_count
        connection.fields["pageInfo"].resolve = _resolve_page_info


def execute(schema: GraphQLSchema, parsed: ParsedRequest) -> tuple[int, dict[str, Any]]:
    """Run a parsed request: ``(http status, response body)``; errors are 200 + ``errors[]``."""
    if parsed.error is not None:
        return 400, {"errors": [{"message": parsed.error}]}
    if parsed.syntax_error is not None:
        return 200, {"errors": [parsed.syntax_error.formatted]}
    assert parsed.document is not None
    validation_errors = validate(schema, parsed.document)
    if validation_errors:
        return 200, {"errors": [error.formatted for error in validation_errors]}
    result = execute_sync(
        schema,
        parsed.document,
        variable_values=parsed.variables,
        operation_name=parsed.operation_name,
    )
    return 200, dict(result.formatted)
