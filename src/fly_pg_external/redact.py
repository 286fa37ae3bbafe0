"""Replace every form of a secret in text before it reaches a log, a summary or a comment.

The runner masks what `::add-mask::` registered in the log and in the step summary, but not in a
PR comment, not in files, and not when the action runs outside Actions. So the action scrubs its
own text, and in every encoding a secret travels in: raw, percent-encoded (the password inside a
URL) and base64 (HTTP basic auth, tokens in JSON blobs).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = "***"
# Short strings would redact ordinary words ("a", "on"), so they are only matched raw.
_MIN_ENCODED_LEN = 4


def secret_forms(secret: str) -> set[str]:
    """All the spellings of `secret` that the action could ever print or send."""
    forms = {secret}
    if len(secret) < _MIN_ENCODED_LEN:
        return forms
    for encoded in (quote(secret, safe=""), quote_plus(secret), quote(secret, safe="/:@")):
        forms.add(encoded)
        forms.add(encoded.lower())
        # percent-escapes in lower-case hex, the rest unchanged
        forms.add(_lower_hex_escapes(encoded))
    raw = secret.encode()
    for b64 in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        text = b64.decode()
        forms.add(text)
        forms.add(text.rstrip("="))
    return {f for f in forms if f}


def _lower_hex_escapes(text: str) -> str:
    out = []
    i = 0
    while i < len(text):
        if text[i] == "%" and i + 2 < len(text) + 1:
            out.append(text[i : i + 3].lower())
            i += 3
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


class Redactor:
    """Knows the run's secrets; `redact` hides each of them in any text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._forms: list[str] = []
        for s in secrets:
            self.add(s)

    def add(self, secret: str) -> None:
        if not secret:
            return
        new = secret_forms(secret) - set(self._forms)
        # Longest first, so a URL that contains a password is replaced whole.
        self._forms = sorted({*self._forms, *new}, key=len, reverse=True)

    @property
    def forms(self) -> tuple[str, ...]:
        return tuple(self._forms)

    def redact(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        return text
