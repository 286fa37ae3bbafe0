"""Malformed answers: a request carried out as usual, then answered 200 with a body a client
must not trust, as a proxy, a half-sent answer or an API change would give it.

What goes wrong is a place and a value: ``at`` is a dotted path into the answer (``0.config``,
``data.app.ipAddresses.nodes``; list items by index, "" for the whole body) and the value put
there is any JSON value, ``ABSENT`` (the key left out; at "" an empty body) or ``NOT_JSON`` (the
whole body replaced by JSON cut short).
"""

from __future__ import annotations

import copy
import enum
import json
from typing import Any


class Special(enum.Enum):
    NOT_JSON = "not-json"
    ABSENT = "absent"


NOT_JSON = Special.NOT_JSON
ABSENT = Special.ABSENT
# A JSON answer cut off after its first bytes: Content-Length matches, the parse fails.
CUT_SHORT = b'{"id": "148e21ea7e5d89", "config": {'


def parse_value(text: str) -> Any:
    """A value as the command line gives it: `not-json`, `absent`, or JSON text."""
    for special in Special:
        if text == special.value:
            return special
    return json.loads(text)


def body(payload: Any, at: str, value: Any) -> tuple[bytes, Any]:
    """The body to send instead of ``payload``, and what the request log records of it."""
    if value is NOT_JSON:
        return CUT_SHORT, CUT_SHORT.decode()
    if not at and value is ABSENT:
        return b"", None
    mangled = _put(copy.deepcopy(payload), at, value)
    return json.dumps(mangled).encode(), mangled


def _put(payload: Any, at: str, value: Any) -> Any:
    if not at:
        return value
    *parents, last = at.split(".")
    parent = payload
    for part in parents:
        parent = parent[_key(parent, part)]
    key = _key(parent, last)
    if value is ABSENT:
        del parent[key]
    else:
        parent[key] = value
    return payload


def _key(container: Any, part: str) -> Any:
    """A list index for a list, a key for an object; a wrong path fails loudly in the test."""
    if isinstance(container, list):
        return int(part)
    if isinstance(container, dict):
        return part
    raise KeyError(f"malformed answer: {part!r} is inside a {type(container).__name__}")
