"""Requests to the Machines API checked against Fly's published OpenAPI spec.

The spec (`src/flysim/fly-machines-openapi.json`, the October 2024 snapshot, Apache 2.0) is
what Fly documents. A request the action sends is described here as a list of *deviations*:
each shape the spec does not have (a path or method, a query parameter, a value outside a
parameter's enum, a body where the spec has none, a body field its schema does not name), as a
key such as ``GET /apps/{app_name}/machines/{machine_id}/wait ?state=settled``. A deviation is
allowed only when `docs/fly-behaviour.md` names its source in the table "Request shapes the
spec lacks". A body that breaks the spec's types is never allowed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "src" / "flysim" / "fly-machines-openapi.json"
DOC_PATH = ROOT / "docs" / "fly-behaviour.md"
DOC_TABLE = "## Request shapes the spec lacks"
ENDPOINTS_TABLE = "## Requests the action sends"


# Where the spec's schema is wrong about what Fly reads, with the source that says so (also in
# the doc's table). `fly.Duration` is generated from Go's struct as an object; Fly sends and
# reads durations as Go duration strings ("15s"), or a number of nanoseconds (fly-go
# `duration.go`, Duration.MarshalJSON / UnmarshalJSON).
SCHEMA_CORRECTIONS: dict[str, dict[str, Any]] = {
    "fly.Duration": {"type": ["string", "integer"]},
}


@cache
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
    loaded["components"]["schemas"].update(SCHEMA_CORRECTIONS)
    _drop_object_type_beside_corrected(loaded["components"])
    return loaded


def _drop_object_type_beside_corrected(node: Any) -> None:
    """A property written `{"type": "object", "allOf": [{"$ref": …fly.Duration}]}` takes its
    type from the corrected schema, not from the generator's `object` beside it."""
    if isinstance(node, dict):
        refs = {p.get("$ref", "").rsplit("/", 1)[-1] for p in node.get("allOf", [])}
        if refs & set(SCHEMA_CORRECTIONS):
            node.pop("type", None)
        for value in node.values():
            _drop_object_type_beside_corrected(value)
    elif isinstance(node, list):
        for value in node:
            _drop_object_type_beside_corrected(value)


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    body = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(f"^{body}$")


@cache
def _templates() -> list[tuple[str, re.Pattern[str]]]:
    return [(t, _template_regex(t)) for t in spec()["paths"]]


def template_of(path: str) -> str | None:
    """The spec's path template for a request path (the `/v1` prefix taken off)."""
    bare = path.removeprefix("/v1")
    return next((t for t, rx in _templates() if rx.match(bare)), None)


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec()["components"]["schemas"][name]
    return schema


def _unknown_fields(value: Any, schema: dict[str, Any], where: str) -> Iterator[str]:
    """Body fields the schema does not name, as dotted paths (`config.services[].ports`)."""
    schema = _resolve(schema)
    for part in schema.get("allOf", []):
        yield from _unknown_fields(value, part, where)
    if isinstance(value, list) and "items" in schema:
        for item in value:
            yield from _unknown_fields(item, schema["items"], f"{where}[]")
        return
    if not isinstance(value, dict):
        return
    properties: dict[str, Any] = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    for key, item in value.items():
        if key in properties:
            yield from _unknown_fields(item, properties[key], f"{where}.{key}")
        elif isinstance(extra, dict):
            yield from _unknown_fields(item, extra, f"{where}.*")
        elif properties or extra is False:
            yield f"{where}.{key}"


def _query_deviations(key: str, operation: dict[str, Any], query: dict[str, str]) -> list[str]:
    params = {p["name"]: p for p in operation.get("parameters", []) if p.get("in") == "query"}
    found = []
    for name, joined in sorted(query.items()):
        if name not in params:
            found.append(f"{key} ?{name}")
            continue
        schema = params[name].get("schema", {})
        for value in joined.split(","):
            if "enum" in schema and value not in schema["enum"]:
                found.append(f"{key} ?{name}={value}")
            elif schema.get("type") == "integer" and not re.fullmatch(r"-?\d+", value):
                raise AssertionError(f"{key}: ?{name}={value!r} is not an integer")
    return found


def _body_schema(operation: dict[str, Any]) -> dict[str, Any] | None:
    content = (operation.get("requestBody") or {}).get("content", {})
    media = content.get("application/json") or next(iter(content.values()), None)
    return None if media is None else media.get("schema")


def deviations(method: str, path: str, query: dict[str, str], body: Any) -> list[str]:
    """What this request does that the spec does not document; raises on a body that breaks
    the spec's types (that has no source to name)."""
    template = template_of(path)
    if template is None:
        return [f"{method} {path.removeprefix('/v1')}"]
    key = f"{method} {template}"
    operation = spec()["paths"][template].get(method.lower())
    if operation is None:
        return [key]
    found = _query_deviations(key, operation, query)
    if body is None:
        return found
    schema = _body_schema(operation)
    if schema is None:
        return [*found, f"{key} body"]
    # The body's schema at the root of a document that also holds the spec's components, so
    # that its `#/components/schemas/...` references resolve.
    validator = jsonschema.Draft202012Validator(
        {**_resolve(schema), "components": spec()["components"]}
    )
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(body)]
    assert not errors, f"{key}: the body breaks the spec: {errors[:3]}"
    return [*found, *(f"{key} body{p}" for p in sorted(set(_unknown_fields(body, schema, ""))))]


def _response_schema(operation: dict[str, Any], status: int) -> dict[str, Any] | None:
    answer = operation.get("responses", {}).get(str(status))
    if answer is None:
        return None
    content = answer.get("content", {})
    media = content.get("application/json") or next(iter(content.values()), None)
    return None if media is None else media.get("schema")


def response_deviations(method: str, path: str, status: int, body: Any) -> list[str]:
    """What a successful answer of the simulator has that the spec's response does not: an
    undocumented status, or fields its schema does not name. Raises on a field of the wrong
    type (the simulator must not teach the action a shape Fly does not send)."""
    template = template_of(path)
    operation = spec()["paths"].get(template or "", {}).get(method.lower())
    if operation is None or not 200 <= status < 300:
        return []
    key = f"{method} {template} -> {status}"
    schema = _response_schema(operation, status)
    if schema is None:
        return [] if body is None else [f"{key} body"]
    document = {**_resolve(schema), "components": spec()["components"]}
    errors = [
        f"{e.json_path}: {e.message}"
        for e in jsonschema.Draft202012Validator(document).iter_errors(body)
    ]
    assert not errors, f"{key}: the simulator's answer breaks the spec: {errors[:3]}"
    return [f"{key} body{p}" for p in sorted(set(_unknown_fields(body, schema, "")))]


def documented() -> dict[str, str]:
    """The doc's table: deviation key → its source."""
    return _table_rows(DOC_TABLE)


def _table_rows(heading: str) -> dict[str, str]:
    text = DOC_PATH.read_text(encoding="utf-8")
    assert heading in text, f"{DOC_PATH.name} has no table {heading!r}"
    table = text.split(heading, 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].startswith("`") and cells[0].endswith("`"):
            rows[cells[0].strip("`")] = cells[1]
    return rows


def endpoints(records: Iterable[Any]) -> dict[str, str]:
    """Every `METHOD template` the REST requests among `records` use → its operationId in the
    spec ("" when the spec has no such operation)."""
    found: dict[str, str] = {}
    for r in records:
        if r.api != "rest":
            continue
        template = template_of(r.path) or r.path.removeprefix("/v1")
        operation = spec()["paths"].get(template, {}).get(r.method.lower()) or {}
        found[f"{r.method} {template}"] = operation.get("operationId", "")
    return found


def documented_endpoints() -> dict[str, str]:
    """The doc's table "Requests the action sends": `METHOD template` → its source."""
    return _table_rows(ENDPOINTS_TABLE)


def all_deviations(records: Iterable[Any]) -> dict[str, int]:
    """Every deviation of the REST requests among `records`, with how often it was seen."""
    seen: dict[str, int] = {}
    for r in records:
        if r.api != "rest":
            continue
        found = deviations(r.method, r.path, dict(r.query), r.json)
        if r.status is not None:
            found += response_deviations(r.method, r.path, r.status, r.response)
        for d in found:
            seen[d] = seen.get(d, 0) + 1
    return seen
