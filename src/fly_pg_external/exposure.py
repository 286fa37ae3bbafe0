"""Can a client outside Fly reach the database once the run is over (in a dry run: now)?

The `exposed` output, and what `mode: connect` fails on. Reachable means: every requested
IP family has a public address (a dedicated IPv4 for v4), and every machine whose config Fly could
read serves pg_tls on the port, at least one of them. A machine on a host Fly cannot reach is not
counted either way: its config is unknown, and the cluster answers through the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .domain import IpFamily
from .fly.config import serves_pg_tls
from .outcome import Outcome, VerifyResult
from .plan import Plan

_FAMILY_NAMES = {"v4": "no dedicated IPv4 (v4)", "v6": "no public IPv6 (v6)"}


@dataclass(frozen=True)
class Exposure:
    missing: tuple[IpFamily, ...]  # requested families without a public address
    not_serving: tuple[str, ...]  # machines without the pg_tls service on the port
    serving: int  # machines known to serve it
    # False when the verification after an expose found the endpoint not answering as it must:
    # then the URL cannot connect, whatever the configuration says.
    answers: bool = True

    @property
    def exposed(self) -> bool:
        return not self.missing and not self.not_serving and self.serving > 0 and self.answers

    def gaps(self, port: int) -> list[str]:
        """What is missing, one phrase each, for an error a reader can act on."""
        out = [_FAMILY_NAMES[f] for f in self.missing]
        if self.not_serving:
            out.append(
                f"machine(s) {', '.join(self.not_serving)} serve no pg_tls service on port {port}"
            )
        elif self.serving == 0:
            out.append(f"no machine Fly can reach serves pg_tls on port {port}")
        if not self.answers:
            out.append("the endpoint did not pass verification")
        return out


def exposure_of(
    plan: Plan, outcome: Outcome, verify: Sequence[VerifyResult] | None = None
) -> Exposure:
    """As the run leaves the database (`outcome`: what the change did), with the verification's
    results (`verify`, by default those the outcome holds)."""
    missing = tuple(f for f in plan.requested if not outcome.addresses(f))
    changed = {m.id: m for m in outcome.machines if m.services_change}
    not_serving = [id_ for id_, m in changed.items() if m.result != "updated"]
    serving = len(changed) - len(not_serving)
    # Image-only updates keep the service they had; the rest were checked as they were read.
    for machine in (*plan.untouched, *(u.machine for u in plan.updates if not u.services_change)):
        if serves_pg_tls(machine.config, plan.port):
            serving += 1
        else:
            not_serving.append(machine.id)
    # After unexpose the checks are that released addresses closed, which says nothing here.
    checks = outcome.verify if verify is None else verify
    failed_checks = [v for v in checks if not v.ok and not v.warning_only]
    answers = plan.releasing or not failed_checks
    return Exposure(missing, tuple(sorted(not_serving)), serving, answers)
