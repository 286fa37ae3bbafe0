"""Render the app's fly.toml the way `fly config save` does for a Machines app, and diff it.

flyctl synthesizes fly.toml from the machines when the app has no release (the usual case for
`fly pg create` apps): each machine's config is turned into TOML, the most common one wins
(flyctl `appconfig/from_machine_set.go`). Image, metadata, restart and guest are not part of it.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterable
from typing import Any

import tomlkit
from tomlkit.items import AoT, Table


def _service_table(service: dict[str, Any]) -> Table:
    t = tomlkit.table()
    for key, toml_key in (
        ("protocol", "protocol"),
        ("internal_port", "internal_port"),
        ("autostop", "auto_stop_machines"),
        ("autostart", "auto_start_machines"),
        ("min_machines_running", "min_machines_running"),
    ):
        if service.get(key) is not None:
            t[toml_key] = service[key]
    ports = AoT([])
    for port in service.get("ports") or []:
        pt = tomlkit.table()
        for k, v in port.items():
            if v is not None:
                pt[k] = v
        ports.append(pt)
    if len(ports):
        t["ports"] = ports
    if service.get("concurrency"):
        c = tomlkit.table()
        for k, v in service["concurrency"].items():
            c[k] = v
        t["concurrency"] = c
    tcp_checks = [c for c in service.get("checks") or [] if c.get("type", "tcp") == "tcp"]
    http_checks = [c for c in service.get("checks") or [] if c.get("type") == "http"]
    for name, checks in (("tcp_checks", tcp_checks), ("http_checks", http_checks)):
        if checks:
            aot = AoT([])
            for check in checks:
                ct = tomlkit.table()
                for k, v in check.items():
                    if k not in ("type", "grace_period") and v is not None:
                        ct[k] = v
                aot.append(ct)
            t[name] = aot
    return t


def render(app: str, config: dict[str, Any]) -> str:
    doc = tomlkit.document()
    doc["app"] = app
    env = config.get("env") or {}
    region = env.get("PRIMARY_REGION") or env.get("FLY_PRIMARY_REGION")
    if region:
        doc["primary_region"] = region
    if env:
        et = tomlkit.table()
        for k in sorted(env):
            et[k] = env[k]
        doc["env"] = et
    cmd = (config.get("init") or {}).get("cmd")
    if cmd:
        pt = tomlkit.table()
        pt["app"] = " ".join(cmd) if isinstance(cmd, list) else str(cmd)
        doc["processes"] = pt
    mounts = config.get("mounts") or []
    if mounts:
        mt = tomlkit.table()
        mt["source"] = mounts[0].get("name") or mounts[0].get("volume", "")
        mt["destination"] = mounts[0].get("path", "")
        doc["mounts"] = AoT([mt])
    services = config.get("services") or []
    if services:
        doc["services"] = AoT([_service_table(s) for s in services])
    checks = config.get("checks") or {}
    if checks:
        ct = tomlkit.table()
        for name in sorted(checks):
            one = tomlkit.table()
            for k, v in checks[name].items():
                if v is not None:
                    one[k] = v
            ct[name] = one
        doc["checks"] = ct
    metrics = config.get("metrics")
    if metrics:
        mt = tomlkit.table()
        for k, v in metrics.items():
            if v is not None:
                mt[k] = v
        doc["metrics"] = AoT([mt])
    return tomlkit.dumps(doc)


def render_most_common(app: str, configs: Iterable[dict[str, Any]]) -> str:
    """The fly.toml that `fly config save` would write: the most common machine rendering."""
    rendered = [render(app, c) for c in configs]
    if not rendered:
        return render(app, {})
    counts = Counter(rendered)
    best = max(counts.values())
    # Ties are broken by first occurrence (machines are sorted by ID), so output is stable.
    return next(r for r in rendered if counts[r] == best)


def unified_diff(before: str, after: str) -> str:
    if before == after:
        return ""
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile="fly.toml (current)",
            tofile="fly.toml (after)",
        )
    )
