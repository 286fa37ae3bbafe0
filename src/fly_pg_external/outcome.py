"""What a run did (or would do), as plain data: the input of every report.

The log summary, the job summary, the PR comment and the step outputs are all rendered from one
`Outcome`, so they cannot disagree. Nothing here holds a secret: URLs are stored redacted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

IpFamily = Literal["v4", "v6"]
Mode = Literal["expose", "plan", "unexpose"]
# plan: mode plan with changes pending; applied: expose/unexpose changed something;
# no-change: nothing to do; failed: the run stopped on an error.
Status = Literal["plan", "applied", "no-change", "failed"]
MachineResult = Literal["pending", "updated", "rolled-back", "failed", "untouched"]


@dataclass(frozen=True)
class IpChange:
    """One public IP family: what exists and what the run does about it."""

    family: IpFamily
    # allocate: none exists, one is (or would be) allocated; keep: one exists already;
    # release: unexpose removes it; absent: unexpose found none.
    action: Literal["allocate", "keep", "release", "absent"]
    addresses: tuple[str, ...] = ()  # known addresses (empty for an allocation not yet made)
    done: bool = False  # the change actually happened on Fly in this run


@dataclass(frozen=True)
class MachineChange:
    """One machine of the cluster and what the rollout does to it, in rollout order."""

    id: str
    region: str
    role: str  # primary / replica / unknown / error, from the `role` check
    state: str  # machine state when read
    services_change: bool  # the pg_tls service is added or fixed on this machine
    image_before: str
    image_after: str
    # pending: to be updated; updated: done and healthy; rolled-back: failed, previous config
    # restored; failed: its state is unknown (rollback failed, or an update that may have
    # landed could not be read back); untouched: left alone (already compliant, not reached
    # after a failure, or its update was refused).
    result: MachineResult = "pending"

    @property
    def restarts(self) -> bool:
        return self.services_change or self.image_before != self.image_after


@dataclass(frozen=True)
class VerifyResult:
    target: str  # address or host, as dialled
    ok: bool
    detail: str  # e.g. "TLSv1.3" or the error
    server_version: str | None = None
    warning_only: bool = False  # an IPv6 the runner cannot route: reported, not fatal


@dataclass
class Outcome:
    app: str
    mode: Mode
    status: Status
    changed: bool
    ips: list[IpChange] = field(default_factory=list)
    machines: list[MachineChange] = field(default_factory=list)  # rollout order, primary last
    service_port: int = 5432
    image_policy: Literal["keep", "major"] = "keep"
    fly_toml_before: str = ""
    fly_toml_after: str = ""
    config_diff: str = ""  # unified diff of fly.toml before/after; "" when configs are unchanged
    fly_toml_path: str | None = None  # where the "after" fly.toml was written
    redacted_url: str | None = None  # external URL with the password as ***; None without input
    host: str = ""
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    verify: list[VerifyResult] = field(default_factory=list)

    @property
    def machines_to_restart(self) -> list[MachineChange]:
        return [m for m in self.machines if m.restarts]

    def addresses(self, family: IpFamily) -> list[str]:
        """Public addresses of the family that exist on Fly at the end of the run."""
        out: list[str] = []
        for ip in self.ips:
            if ip.family != family:
                continue
            exists = ip.action == "keep" or (ip.action == "allocate") == ip.done
            # allocate+done: made by this run; release+not done: still there (plan or failure)
            if exists and ip.action != "absent":
                out.extend(ip.addresses)
        return out
