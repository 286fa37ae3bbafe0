"""The log's account of what was read and what the plan will do, for the person reading it."""

from __future__ import annotations

import logging

from . import ports
from .domain import ClusterState, WarningKind
from .plan import Plan

log = logging.getLogger(__name__)

# The annotation title of each kind of plan warning. No colon in a title: the runner escapes it.
WARNING_TITLES: dict[WarningKind, str] = {
    "shared-ipv4": "Shared IPv4 not counted",
    "ipv6-only": "IPv6 unreachable from GitHub runners",
    "unreachable-host": "Machine on an unreachable host",
    "restarts": "Machines will restart",
    "billing": "Dedicated IPv4 is billed",
    "kept": "Address kept",
    "record": "Ownership record unreadable",
}


def describe_state(cluster: ClusterState) -> None:
    ips = ", ".join(f"{ip.type} {ip.address}" for ip in cluster.app.ips) or "none"
    log.info(f"App {cluster.app.name}: Postgres cluster with {len(cluster.machines)} machine(s).")
    log.info(f"IP addresses: {ips}")
    for m in cluster.machines:
        state = m.state if m.reachable else f"{m.state}, host {m.host_status} (down)"
        log.info(f"  machine {m.id} {m.region} {state:<8} role={m.role:<8} image={m.image}")


def describe_plan(plan: Plan) -> None:
    verb = "would" if plan.read_only else "will"
    _describe_addresses(plan, verb)
    for u in plan.updates:
        what = []
        if u.services_change:
            what.append(f"add pg_tls service on port {plan.port}")
        if u.image_after != u.machine.image:
            what.append(f"image → {u.image_after}")
        log.info(f"- {verb} update machine {u.machine.id} ({u.machine.role}): {', '.join(what)}")
    if plan.opens:
        open_ports = plan.open_ports
        log.info(f"- every public address opens port(s) {ports.describe(open_ports)}")
        if note := ports.node_port_note(open_ports):
            log.info(f"  {note}")
    if plan.record is not None and not plan.releasing:
        log.info(f"- {verb} record the hold of {plan.holder} on the exposure")
    if not plan.changed:
        log.info("- nothing to change: the cluster is already as asked")
    for warning in plan.warnings:
        log.warning(warning.text, extra={"title": WARNING_TITLES[warning.kind]})
    if plan.config_diff:
        log.info("fly.toml diff:")
        log.info(plan.config_diff.rstrip("\n"))


def _describe_addresses(plan: Plan, verb: str) -> None:
    for holder in plan.dropped_holds:
        log.info(f"- {verb} drop the hold of {holder}")
    for ip in plan.release:
        log.info(f"- {verb} release {ip.type} {ip.address}")
    for kept in plan.kept:
        if not kept.foreign:  # a foreign one is a warning below
            log.info(f"- {verb} keep {kept.ip.type} {kept.ip.address}: {kept.reason}")
    for fam in plan.allocate:
        log.info(f"- {verb} allocate a public {fam} address")
