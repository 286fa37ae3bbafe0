"""Machine metadata as the Machines API's metadata endpoints change it.

Sources: fly-go ``flaps/flaps_machines.go`` (``SetMetadata``, ``GetMetadata``, ``DeleteMetadata``
at 22d6e518), Fly's docs (machines resource; runtime environment). The endpoints read and write
``config.metadata`` of the machine, and "changing the Machine's metadata using the metadata
endpoint doesn't trigger a new version": no new ``instance_id``, no restart, no state change and
no timeline entry, while GET machine and List Machines show the new value at once.

Leases: fly-go sends no lease nonce with these requests (its headers are nil), and flyctl's
blue-green deploy writes metadata on machines it has leased, without the nonce. Whether someone
else's lease blocks them is UNCONFIRMED; we take the safe reading that a lease never does, so the
nonce is neither required nor checked here.

Every function takes a live :class:`~flysim.models.Machine`; the caller holds the simulator's lock.
"""

from __future__ import annotations

import re
from typing import Any

from flysim.errors import ApiError
from flysim.models import Machine

# fly-go puts the key into the path as it is (no escaping). UNCONFIRMED: which keys Fly accepts;
# we take letters, digits, `_`, `.` and `-`, which every key Fly and flyctl write uses
# (`fly_platform_version`, `fly-managed-postgres`, `fly_process_group`, ...).
KEY_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")


def validate_key(key: str) -> str:
    """The key from the path, or the API's 400."""
    # `.` and `..` match the pattern but are path segments a client or proxy would resolve away.
    if not KEY_PATTERN.fullmatch(key) or key in {".", ".."}:
        raise ApiError(400, f"invalid metadata key {key!r}: use letters, digits, '_', '.', '-'")
    return key


def validate_value(body: Any) -> str:
    """The ``value`` of a set body, ``{"value": "<string>"}``, or the API's 400."""
    if not isinstance(body, dict):
        raise ApiError(400, 'request body must be a JSON object {"value": "<string>"}')
    value = body.get("value")
    if not isinstance(value, str):
        raise ApiError(400, "value is required and must be a string")
    return value


def read(machine: Machine) -> dict[str, str]:
    """The machine's metadata, a copy: ``config.metadata`` (empty when the config has none)."""
    return dict(machine.config.get("metadata") or {})


def set_value(machine: Machine, key: str, value: str) -> None:
    """Write ``config.metadata[key]``: no new version, no restart, no state change."""
    metadata = machine.config.get("metadata")
    if not isinstance(metadata, dict):
        metadata = machine.config["metadata"] = {}
    metadata[key] = value


def delete(machine: Machine, key: str) -> None:
    """Remove ``config.metadata[key]``. UNCONFIRMED: deleting a key that is not there is
    answered 204 like any delete (fly-go only expects a 2xx), not 404."""
    metadata = machine.config.get("metadata")
    if isinstance(metadata, dict):
        metadata.pop(key, None)
