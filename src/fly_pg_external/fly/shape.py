"""Reading Fly's answers: the JSON, then every field the action uses, checked for its type.

An answer is data from outside: a proxy's page or a body cut short instead of JSON, a field of
another type after an API change, null where a list was. Read through these helpers, each of
those becomes a `FlyBadAnswer` that names the request and the field (`GET /v1/apps/a/machines:
machines[1].config is a list, expected an object`), not a KeyError deep in the core. Values are
quoted short: an answer can be large, and is not the action's to print whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import httpx

from ..errors import FlyBadAnswer

QUOTE_MAX = 80
# Far deeper than any machine config; a deeper answer would exhaust the stack in the copies and
# renderings that walk it later.
DEPTH_MAX = 32
MISSING: Any = object()
# JSON's types by the Python types `json` gives them (bool before int: a bool is an int).
_KINDS: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),
    (int, "a number"),
    (float, "a number"),
    (str, "a string"),
    (list, "a list"),
    (dict, "an object"),
)


@dataclass(frozen=True)
class Where:
    """A value's place: the request that answered it, and the path to it in the answer."""

    request: str  # `GET /v1/apps/a/machines`, `GraphQL query app (POST /graphql)`
    path: str = ""  # `machines[1].config`
    status: int | None = None
    request_id: str | None = None

    @classmethod
    def of(cls, response: httpx.Response, request: str, root: str) -> Where:
        rid = response.headers.get("fly-request-id")
        return cls(request, root, response.status_code, rid)

    def at(self, key: str | int) -> Where:
        if isinstance(key, int):
            return replace(self, path=f"{self.path}[{key}]")
        return replace(self, path=f"{self.path}.{key}" if self.path else key)

    def wrong(self, problem: str) -> FlyBadAnswer:
        """The error for the value here; `problem` says what is wrong with it."""
        subject = self.path or "the answer"
        return FlyBadAnswer(
            f"{self.request}: {subject} {problem}", status=self.status, request_id=self.request_id
        )

    def unexpected(self, value: Any, expected: str) -> FlyBadAnswer:
        return self.wrong(f"is {describe(value)}, expected {expected}")


def clip(text: str) -> str:
    return text if len(text) <= QUOTE_MAX else text[: QUOTE_MAX - 1] + "…"


def describe(value: Any) -> str:
    """What a value is, for an error message: its JSON type, and a short quote of a scalar
    (JSON-quoted: a newline in a string cannot start a line of the log)."""
    if value is MISSING or value is None:
        return "missing" if value is MISSING else "null"
    kind = next((name for cls, name in _KINDS if isinstance(value, cls)), type(value).__name__)
    scalar = isinstance(value, bool | int | float | str)
    return f"{kind} ({clip(json.dumps(value))})" if scalar else kind


def json_body(response: httpx.Response, request: str) -> Any:
    """The answer's JSON; a body that does not parse is named by its type and size, not quoted."""
    try:
        return response.json()
    except (ValueError, RecursionError):
        kind = clip(response.headers.get("content-type") or "no content type")
        where = Where.of(response, request, "")
        raise FlyBadAnswer(
            f"{request} answered with a body that is not JSON ({kind}, "
            f"{len(response.content)} bytes)",
            status=where.status,
            request_id=where.request_id,
        ) from None


# -- values ----------------------------------------------------------------------------------


def as_object(value: Any, where: Where) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise where.unexpected(value, "an object")
    return value


def as_list(value: Any, where: Where) -> list[Any]:
    if not isinstance(value, list):
        raise where.unexpected(value, "a list")
    return value


def objects(
    items: list[Any], where: Where, *, skip_null: bool = False
) -> Iterator[tuple[Where, dict[str, Any]]]:
    """Each item with its place, as (Where, object); every item must be an object (or null,
    left out, when `skip_null`)."""
    for index, item in enumerate(items):
        if item is None and skip_null:
            continue
        yield where.at(index), as_object(item, where.at(index))


def strings(items: list[Any], where: Where) -> list[str]:
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise where.at(index).unexpected(item, "a string")
    return items


def string_values(obj: dict[str, Any], where: Where) -> dict[str, str]:
    """An object whose every value is a string (Fly's `map[string]string` fields)."""
    for key, value in obj.items():
        if not isinstance(value, str):
            raise where.at(key).unexpected(value, "a string")
    return obj


# -- fields of an object: `where` is the object's place ------------------------------------


def want_object(
    obj: dict[str, Any], key: str, where: Where, *, optional: bool = False
) -> dict[str, Any]:
    """`obj[key]`, an object; {} when it is absent or null and `optional`."""
    value = obj.get(key, MISSING)
    if optional and (value is MISSING or value is None):
        return {}
    return as_object(value, where.at(key))


def want_list(obj: dict[str, Any], key: str, where: Where, *, optional: bool = False) -> list[Any]:
    """`obj[key]`, a list; [] when it is absent or null and `optional`."""
    value = obj.get(key, MISSING)
    if optional and (value is MISSING or value is None):
        return []
    return as_list(value, where.at(key))


def want_str(obj: dict[str, Any], key: str, where: Where, *, required: bool = False) -> str:
    """`obj[key]`, a string; "" when it is absent or null, unless `required` (then it must be
    a string that is not empty)."""
    value = obj.get(key, MISSING)
    if isinstance(value, str) and (value or not required):
        return value
    if not required and (value is MISSING or value is None):
        return ""
    raise where.at(key).unexpected(value, "a string" if not required else "a non-empty string")


def want_opt_str(obj: dict[str, Any], key: str, where: Where) -> str | None:
    """`obj[key]`, a string, or None when it is absent or null."""
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise where.at(key).unexpected(value, "a string or null")


def want_int(obj: dict[str, Any], key: str, where: Where) -> int | None:
    """`obj[key]`, an integer, or None when it is absent or null."""
    value = obj.get(key)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise where.at(key).unexpected(value, "an integer")


# -- whole values ----------------------------------------------------------------------------


def check_depth(value: Any, where: Where) -> None:
    """Refuse nesting deeper than DEPTH_MAX, without recursing to find out."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > DEPTH_MAX:
            raise where.wrong(f"nests deeper than {DEPTH_MAX} levels")
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def check_table(obj: dict[str, Any], where: Where) -> None:
    """`obj` as a fly.toml table: a null value of its own is left out, but TOML cannot say null
    inside a value (a list item, a nested table's value)."""
    stack = [(where.at(key), value) for key, value in obj.items() if value is not None]
    while stack:
        place, value = stack.pop()
        if value is None:
            raise place.unexpected(value, "a value (fly.toml has no null)")
        if isinstance(value, dict):
            stack.extend((place.at(key), child) for key, child in value.items())
        elif isinstance(value, list):
            stack.extend((place.at(index), child) for index, child in enumerate(value))
