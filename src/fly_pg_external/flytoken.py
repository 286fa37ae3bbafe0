"""Fly API tokens → Authorization headers, following fly-go's `tokens` package.

A token may arrive with a pasted scheme (`FlyV1 fm2_…`) and may be a comma-separated list
(`fly tokens deploy` prints two macaroons). Macaroons (`fm1r_`, `fm1a_`, `fm2_`) use the `FlyV1`
scheme; anything else (e.g. `fo1_` from `fly auth token`) is an OAuth token sent as `Bearer`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import ValueProblem

_SCHEME_RE = re.compile(r"^\s*(flyv1|bearer)\s+", re.IGNORECASE)
_MACAROON_PREFIXES = ("fm1r", "fm1a", "fm2")
# Base64 alphabets plus the separators fly tokens use; anything else is a paste accident.
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_\-+/=.~]+$")


class TokenError(ValueProblem):
    """The token does not parse; the message never quotes it."""


@dataclass(frozen=True)
class FlyAuth:
    macaroons: tuple[str, ...] = field(repr=False)
    oauth: tuple[str, ...] = field(repr=False)
    raw: str = field(repr=False, default="")

    @property
    def graphql_header(self) -> str:
        if self.macaroons:
            return "FlyV1 " + ",".join((*self.macaroons, *self.oauth))
        return "Bearer " + ",".join(self.oauth)

    @property
    def flaps_header(self) -> str:
        if self.macaroons:
            return "FlyV1 " + ",".join(self.macaroons)
        return "Bearer " + ",".join(self.oauth)

    @property
    def secrets(self) -> list[str]:
        """The token as given, each bare token, and the joined forms sent in headers."""
        joined = [",".join(self.macaroons), ",".join((*self.macaroons, *self.oauth))]
        return [s for s in (self.raw.strip(), *self.macaroons, *self.oauth, *joined) if s]


def strip_scheme(token: str) -> str:
    previous = None
    while previous != token:
        previous = token
        token = _SCHEME_RE.sub("", token)
    return token.strip()


def parse_token(raw: str) -> FlyAuth:
    bare = strip_scheme(raw)
    parts = [p.strip() for p in bare.split(",") if p.strip()]
    if not parts:
        raise TokenError("is empty after removing the FlyV1/Bearer prefix.")
    for part in parts:
        if not _TOKEN_RE.match(part):
            # Never echo the token: say what is wrong with it, not what it is.
            raise TokenError(
                "does not look like a Fly token (it contains spaces, quotes or other characters "
                "a token never has). Paste the whole output of `fly tokens create deploy`."
            )
    macaroons = tuple(p for p in parts if p.split("_", 1)[0] in _MACAROON_PREFIXES)
    oauth = tuple(p for p in parts if p not in macaroons)
    return FlyAuth(macaroons=macaroons, oauth=oauth, raw=raw)
