"""Identifier and timestamp formats that look like Fly's."""

from __future__ import annotations

import datetime as dt
import random
import secrets
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

_ADJECTIVES = ("aged", "bold", "calm", "dry", "late", "misty", "quiet", "red", "shy", "wild")
_NOUNS = ("wind", "leaf", "dawn", "frost", "lake", "moon", "pine", "river", "snow", "star")


def ulid(now: float | None = None) -> str:
    """A 26-character ULID (48-bit millisecond time + 80 random bits), like Machine instance IDs."""
    millis = int((time.time() if now is None else now) * 1000)
    value = (millis << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def machine_id(rng: random.Random) -> str:
    """14 lowercase hex digits, e.g. ``3d8d413b29d089``."""
    return f"{rng.getrandbits(56):014x}"


def machine_name(rng: random.Random) -> str:
    return f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}-{rng.randrange(1000, 10000)}"


def volume_id(rng: random.Random) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "vol_" + "".join(rng.choice(alphabet) for _ in range(16))


def ip_id(rng: random.Random) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "ip_" + "".join(rng.choice(alphabet) for _ in range(14))


def lease_nonce() -> str:
    return secrets.token_hex(6)


def request_id(region: str = "iad") -> str:
    return f"{ulid()}-{region}"


def sha256_digest(rng: random.Random) -> str:
    return "sha256:" + f"{rng.getrandbits(256):064x}"


def rfc3339(ts: float) -> str:
    """Second precision, UTC, ``Z`` suffix: the format Fly uses for ``created_at`` and friends."""
    return dt.datetime.fromtimestamp(int(ts), tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
