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


def _table(values: dict[str, Any], *, skip: tuple[str, ...] = ()) -> Table:
    """A TOML table of the non-null values, in their order."""
    t = tomlkit.table()
    for k, v in values.items():
        if v is not None and k not in skip:
            t[k] = v
    return t


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
    ports = [_table(port) for port in service.get("ports") or []]
    if ports:
        t["ports"] = AoT(ports)
    if service.get("concurrency"):
        t["concurrency"] = _table(service["concurrency"])
    checks = service.get("checks") or []
    for name, kind in (("tcp_checks", "tcp"), ("http_checks", "http")):
        # A check without a type is a TCP check.
        same = [c for c in checks if c.get("type", "tcp") == kind]
        if same:
            t[name] = AoT([_table(c, skip=("type", "grace_period")) for c in same])
    return t


def render(app: str, config: dict[str, Any]) -> str:
    doc = tomlkit.document()
    doc["app"] = app
    env = config.get("env") or {}
    region = env.get("PRIMARY_REGION") or env.get("FLY_PRIMARY_REGION")
    if region:
        doc["primary_region"] = region
    if env:
        doc["env"] = _table({k: env[k] for k in sorted(env)})
    cmd = (config.get("init") or {}).get("cmd")
    if cmd:
        doc["processes"] = _table({"app": " ".join(cmd) if isinstance(cmd, list) else str(cmd)})
    _render_sections(doc, config)
    return tomlkit.dumps(doc)


def _render_sections(doc: tomlkit.TOMLDocument, config: dict[str, Any]) -> None:
    mounts = config.get("mounts") or []
    if mounts:
        mount = {
            "source": mounts[0].get("name") or mounts[0].get("volume", ""),
            "destination": mounts[0].get("path", ""),
        }
        doc["mounts"] = AoT([_table(mount)])
    services = config.get("services") or []
    if services:
        doc["services"] = AoT([_service_table(s) for s in services])
    checks = config.get("checks") or {}
    if checks:
        ct = tomlkit.table()
        for name in sorted(checks):
            ct[name] = _table(checks[name])
        doc["checks"] = ct
    metrics = config.get("metrics")
    if metrics:
        doc["metrics"] = AoT([_table(metrics)])


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
