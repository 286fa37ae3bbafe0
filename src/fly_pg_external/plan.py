"""The planning core: every decision of a run, computed from data, with no I/O.

Given the run's `Intent` (intent.py: what it asks for, and no secret) and the ClusterState read
from Fly, `make_plan` decides which IP families to allocate (or release), which machines need a
new config and in which order (machines whose role check is failing first, then replicas, the
primary last), what their new configs are, the fly.toml before/after and the URL as shown.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import ownership, ports
from .domain import (
    IP_FAMILIES,
    ClusterState,
    ImagePolicy,
    IpAddress,
    IpFamily,
    Machine,
    Mode,
    PlanWarning,
    UpdateRequest,
)
from .errors import PlanError
from .fly import config as machine_config
from .fly import flytoml
from .intent import Intent
from .ownership import PERSISTENT, Ownership
from .releases import Holding, Kept, expose_record, plan_releases, record_warnings

_TAG_RE = re.compile(r"^(?P<major>\d+)(?:\.\d+)*(?:[-.].*)?$")


@dataclass(frozen=True)
class MachineUpdate:
    machine: Machine
    new_config: dict[str, Any] = field(repr=False)
    services_change: bool
    image_after: str

    @property
    def skip_launch(self) -> bool:
        # As `fly deploy` does: a machine that was not running stays stopped after the update
        # (scale-to-zero clusters keep sleeping).
        return self.machine.state not in ("started", "starting", "failed")

    def request(self) -> UpdateRequest:
        """The update, conditional on the version the plan was made from: a resent or late
        request cannot restart the machine twice."""
        return UpdateRequest(
            config=self.new_config,
            region=self.machine.region,
            skip_launch=self.skip_launch,
            current_version=self.machine.instance_id,
        )


@dataclass(frozen=True)
class Plan:
    app: str
    mode: Mode
    read_only: bool
    requested: tuple[IpFamily, ...]
    allocate: tuple[IpFamily, ...]
    existing: dict[IpFamily, tuple[str, ...]]
    release: tuple[IpAddress, ...]
    updates: tuple[MachineUpdate, ...]
    untouched: tuple[Machine, ...]
    # On a host Fly cannot reach: down, config unknown, never leased or updated. While there is
    # one, no machine may restart (it would be a second one down).
    unreachable: tuple[Machine, ...]
    fly_toml_before: str
    fly_toml_after: str
    config_diff: str
    host: str
    port: int
    image_policy: ImagePolicy
    redacted_url: str | None
    warnings: tuple[PlanWarning, ...]
    # The ownership record (ownership.py) as read, who this run holds the exposure for, the
    # record to write (before this run's allocations or releases; None: nothing to write), the
    # addresses a releasing run keeps and why, and the holds it drops.
    holder: str = PERSISTENT
    ownership: Ownership = field(default_factory=Ownership)
    record: Ownership | None = None
    kept: tuple[Kept, ...] = ()
    dropped_holds: tuple[str, ...] = ()
    now: int = 0  # unix seconds the plan was made at (hold times, allocation attempts)

    @property
    def machines(self) -> tuple[Machine, ...]:
        """Every machine Fly can reach, by ID: where the record lives."""
        return tuple(sorted((*(u.machine for u in self.updates), *self.untouched), key=_by_id))

    @property
    def turn_machine(self) -> Machine | None:
        """The machine whose lease is the record's mutex: the first by ID, the same for every
        run that reads the same cluster."""
        return self.machines[0] if self.machines else None

    @property
    def open_ports(self) -> tuple[ports.OpenPort, ...]:
        """The ports a public address of the app opens once the plan is carried out: every
        service of the machines, 5433 of `fly pg create` included, not only `port`."""
        configs = [*(u.new_config for u in self.updates), *(m.config for m in self.untouched)]
        return ports.open_ports(configs)

    @property
    def opens(self) -> bool:
        """Does the app have (or get) a public address once this expose is carried out?"""
        return not self.releasing and bool(self.existing or self.allocate)

    @property
    def changed(self) -> bool:
        """Does the run change the exposure (addresses, machines)? The record is bookkeeping."""
        return bool(self.allocate or self.release or self.updates)

    @property
    def releasing(self) -> bool:
        return self.mode in ("unexpose", "sweep")


def _by_id(machine: Machine) -> str:
    return machine.id


def rollout_order(machine: Machine) -> tuple[int, str]:
    """Failing role checks first, then replicas, the primary last; by ID within a group."""
    role = machine.role
    rank = 2 if role in ("primary", "leader") else (0 if role in ("error", "unknown") else 1)
    return (rank, machine.id)


def major_image(image: str) -> str:
    """`flyio/postgres-flex:16.4@sha256:…` → `flyio/postgres-flex:16` (same major, never other)."""
    name = image.split("@", 1)[0]
    repo, sep, tag = name.rpartition(":")
    if not sep or "/" in tag:
        raise PlanError(
            f"the image {image!r} has no version tag, so its major version is unknown; "
            "use postgres-image: keep.",
            "postgres-image",
        )
    m = _TAG_RE.match(tag)
    if not m:
        raise PlanError(
            f"cannot read a Postgres major version from the tag {tag!r} of {image!r}; "
            "use postgres-image: keep.",
            "postgres-image",
        )
    return f"{repo}:{m.group('major')}"


def _same_image(current: str, wanted: str) -> bool:
    return current.split("@", 1)[0] == wanted


def plan_machine(machine: Machine, port: int, image_policy: ImagePolicy) -> MachineUpdate | None:
    """The update one machine needs, or None when it already complies."""
    services_change = not machine_config.serves_pg_tls(machine.config, port)
    image_after = machine.image
    if image_policy == "major":
        wanted = major_image(machine.image)
        if not _same_image(machine.image, wanted):
            image_after = wanted
    if not services_change and image_after == machine.image:
        return None
    config = (
        machine_config.with_pg_tls_service(machine.config, port)
        if services_change
        else machine.config
    )
    new_config = machine_config.with_image(config, image_after)
    return MachineUpdate(machine, new_config, services_change, image_after)


def _unreachable_warning(machine: Machine, restarts: bool, read_only: bool) -> str:
    text = (
        f"Machine {machine.id} ({machine.region}) is on a host Fly cannot reach (host_status "
        f"{machine.host_status}): it counts as down, and its config cannot be read or changed."
    )
    if restarts:
        verb = "would stop" if read_only else "stops"
        text += (
            f" The run {verb} before restarting any machine, so that no second machine of the "
            "cluster goes down; re-run once the host is back (fly machine status "
            f"{machine.id})."
        )
    return text


def make_plan(intent: Intent, cluster: ClusterState, holding: Holding | None = None) -> Plan:
    holding = holding or Holding()
    if not cluster.machines:
        raise PlanError(f"app {intent.app!r} has no active machines to serve Postgres.")
    existing = {
        fam: addrs
        for fam in IP_FAMILIES
        if (addrs := tuple(ip.address for ip in cluster.public_ips(fam)))
    }
    reachable = [m for m in cluster.machines if m.reachable]
    owned = ownership.read(reachable, cluster.app.ips, now=holding.now)
    d = _decide(intent, cluster, reachable, owned, holding=holding, existing=existing)
    before, after = _fly_tomls(intent.app, reachable, d.updates)
    return Plan(
        app=intent.app,
        mode=intent.mode,
        read_only=intent.read_only,
        requested=intent.families,
        allocate=d.allocate,
        existing=existing,
        release=d.release,
        updates=d.updates,
        untouched=d.untouched,
        unreachable=cluster.unreachable,
        fly_toml_before=before,
        fly_toml_after=after,
        config_diff=flytoml.unified_diff(before, after),
        host=intent.host,
        port=intent.port,
        image_policy=intent.image_policy,
        redacted_url=None if intent.releasing else intent.shown_url,
        warnings=_warnings(intent, cluster, d.allocate, list(d.updates))
        + record_warnings(owned)
        + tuple(k.warning(intent.app) for k in d.kept if k.foreign),
        holder=holding.holder,
        ownership=owned,
        record=d.record,
        kept=d.kept,
        dropped_holds=d.dropped,
        now=holding.now,
    )


@dataclass(frozen=True)
class _Decision:
    """What the run changes: addresses to allocate or release, machine updates, the record."""

    record: Ownership | None
    allocate: tuple[IpFamily, ...] = ()
    release: tuple[IpAddress, ...] = ()
    updates: tuple[MachineUpdate, ...] = ()
    untouched: tuple[Machine, ...] = ()
    kept: tuple[Kept, ...] = ()
    dropped: tuple[str, ...] = ()


def _decide(
    intent: Intent,
    cluster: ClusterState,
    reachable: list[Machine],
    owned: Ownership,
    *,
    holding: Holding,
    existing: dict[IpFamily, tuple[str, ...]],
) -> _Decision:
    """A releasing run's releases (the release rule decides), or an exposing run's
    allocations and machine updates."""
    if intent.releasing:
        dropped, record, decided = plan_releases(intent, cluster, owned, holding)
        return _Decision(
            record,
            release=decided.release,
            untouched=tuple(reachable),
            kept=decided.kept,
            dropped=dropped,
        )
    allocate = tuple(f for f in intent.families if f not in existing)
    updates, untouched = _machine_updates(intent, reachable)
    record = expose_record(owned, holding, allocating=bool(allocate))
    return _Decision(record, allocate, updates=tuple(updates), untouched=tuple(untouched))


def _fly_tomls(
    app: str, reachable: list[Machine], updates: Sequence[MachineUpdate]
) -> tuple[str, str]:
    """The app's fly.toml before and after. Only reachable machines: an unreachable machine's
    config is incomplete, and would make a wrong fly.toml."""
    new_by_id = {u.machine.id: u.new_config for u in updates}
    before = flytoml.render_most_common(app, [m.config for m in reachable])
    after = flytoml.render_most_common(app, [new_by_id.get(m.id, m.config) for m in reachable])
    return before, after


def _machine_updates(
    intent: Intent, reachable: list[Machine]
) -> tuple[list[MachineUpdate], list[Machine]]:
    """The updates in rollout order, and the machines that already comply."""
    for machine in reachable:
        conflict = machine_config.port_conflict(machine.config, intent.port)
        if conflict is not None:
            raise PlanError(
                f"port {intent.port} is already used on machine {machine.id} by the service "
                f"to internal port {conflict.internal_port}; choose another port "
                "(5432 is the default and reaches the primary through HAProxy).",
                "port",
            )
    updates: list[MachineUpdate] = []
    untouched: list[Machine] = []
    for machine in sorted(reachable, key=rollout_order):
        update = plan_machine(machine, intent.port, intent.image_policy)
        if update is None:
            untouched.append(machine)
        else:
            updates.append(update)
    return updates, untouched


def _warnings(
    intent: Intent,
    cluster: ClusterState,
    allocate: tuple[IpFamily, ...],
    updates: list[MachineUpdate],
) -> tuple[PlanWarning, ...]:
    warnings: list[PlanWarning] = []
    exposing = not intent.releasing
    if cluster.app.shared_ipv4 and exposing:
        warnings.append(
            PlanWarning(
                "shared-ipv4",
                f"The app has a shared IPv4 ({cluster.app.shared_ipv4}); it cannot carry "
                "pg_tls, so it is not counted as external access.",
            )
        )
    if exposing and "v6" in intent.families and "v4" not in intent.families:
        warnings.append(
            PlanWarning(
                "ipv6-only",
                "Only IPv6 is requested: GitHub-hosted runners have no IPv6, so jobs there "
                "cannot reach the database. Add v4 to ip-versions for CI access.",
            )
        )
    for machine in cluster.unreachable:
        text = _unreachable_warning(machine, bool(updates), intent.read_only)
        warnings.append(PlanWarning("unreachable-host", text, subject=machine.id))
    if updates:
        warnings.append(
            PlanWarning(
                "restarts",
                f"{len(updates)} machine(s) will restart, one at a time, the primary last: "
                "connections through the primary drop while it restarts.",
            )
        )
    if "v4" in allocate:
        warnings.append(
            PlanWarning("billing", "A dedicated IPv4 is billed by Fly (about $2/month).")
        )
    return tuple(warnings)
