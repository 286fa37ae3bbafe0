"""The outcome as the main step concludes it from the verification's results."""

from __future__ import annotations

from fly_pg_external.errors import VerifyError
from fly_pg_external.outcome import Outcome, VerifyResult, concluded
from fly_pg_external.verification import raise_if_failed


def verified(facts: Outcome, results: list[VerifyResult], host: str) -> Outcome:
    """`facts` with the results, failed with the error they raise (as main.py does)."""
    try:
        raise_if_failed(results, host)
    except VerifyError as exc:
        return concluded(facts, verify=results, error=exc.explained)
    return concluded(facts, verify=results)
