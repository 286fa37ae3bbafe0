"""Wiring only: settings → read → plan → apply → verify → report. Decisions live in plan.py."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from types import FrameType

from .cluster import ClusterState
from .fly.errors import FlyAuthError, FlyError
from .fly.graphql import GraphQL
from .fly.http import FlyHttp
from .fly.machines import Machines
from .gha import Actions
from .outcome import Outcome, VerifyResult
from .plan import Plan, PlanError, make_plan
from .rollout import Fly, RunError, apply, read_cluster
from .settings import InputError, Settings, from_environ
from .verify import Login, ProbeError, is_ipv6, probe_all, still_open

UNEXPOSE_VERIFY_BOUND = 30.0

Publisher = Callable[[Outcome, Settings, Actions, Mapping[str, str]], str]


class Cancelled(BaseException):
    """SIGTERM/SIGINT (a cancelled workflow): unwind so every lease is released."""


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise Cancelled(signal.Signals(signum).name)


def make_fly(settings: Settings) -> Fly:
    http = FlyHttp(timeout=settings.http_timeout)
    return Fly(
        http,
        GraphQL(http, settings.api_base_url, settings.fly_auth),
        Machines(http, settings.flaps_base_url, settings.fly_auth),
    )


def _describe_state(cluster: ClusterState, gha: Actions) -> None:
    ips = ", ".join(f"{ip.type} {ip.address}" for ip in cluster.app.ips) or "none"
    gha.info(f"App {cluster.app.name}: Postgres cluster with {len(cluster.machines)} machine(s).")
    gha.info(f"IP addresses: {ips}")
    for m in cluster.machines:
        state = m.state if m.reachable else f"{m.state}, host {m.host_status} (down)"
        gha.info(f"  machine {m.id} {m.region} {state:<8} role={m.role:<8} image={m.image}")


def _describe_plan(plan: Plan, gha: Actions) -> None:
    verb = "would" if plan.read_only else "will"
    if plan.mode == "unexpose":
        for ip in plan.release:
            gha.info(f"- {verb} release {ip.type} {ip.address}")
    for fam in plan.allocate:
        gha.info(f"- {verb} allocate a public {fam} address")
    for u in plan.updates:
        what = []
        if u.services_change:
            what.append(f"add pg_tls service on port {plan.port}")
        if u.image_after != u.machine.image:
            what.append(f"image → {u.image_after}")
        gha.info(f"- {verb} update machine {u.machine.id} ({u.machine.role}): {', '.join(what)}")
    if not plan.changed:
        gha.info("- nothing to change: the cluster is already as asked")
    for warning in plan.warnings:
        gha.warning(warning)
    if plan.config_diff:
        gha.info("fly.toml diff:")
        gha.info(plan.config_diff.rstrip("\n"))


def _write_fly_toml(plan: Plan, env: Mapping[str, str], gha: Actions) -> str | None:
    base = Path(env.get("RUNNER_TEMP") or tempfile.gettempdir()) / "fly-pg-external" / plan.app
    try:
        base.mkdir(parents=True, exist_ok=True)
        path = base / "fly.toml"
        path.write_text(gha.redactor.redact(plan.fly_toml_after), encoding="utf-8")
    except OSError as exc:
        gha.warning(f"Could not write fly.toml to {base}: {exc}")
        return None
    gha.info(f"Wrote the app's fly.toml (after) to {path}")
    return str(path)


def _verify_expose(outcome: Outcome, settings: Settings, gha: Actions) -> None:
    login = None
    if settings.database_url is not None:
        u = settings.database_url
        login = Login(u.user, u.password, u.database)
    targets = [*outcome.addresses("v4"), *outcome.addresses("v6"), settings.host]
    # All at once, within one bound for the whole step; reported in the order of `targets`.
    results = probe_all(
        targets,
        settings.port,
        server_name=settings.host,
        sslmode=settings.sslmode,
        login=login,
        bound=settings.verify_timeout,
    )
    for target, result in zip(targets, results, strict=True):
        if isinstance(result, ProbeError):
            exc = result
            # Only "cannot reach it" is excusable for IPv6: a v6 that answers must work.
            v6 = is_ipv6(target) and exc.stage == "tcp"
            outcome.verify.append(VerifyResult(target, False, str(exc), warning_only=v6))
            if v6:
                gha.warning(
                    f"IPv6 {target} port {settings.port} did not answer ({exc}). Runners without "
                    "IPv6 (GitHub-hosted ones) cannot reach it; IPv4 and the hostname are what "
                    "count."
                )
            else:
                gha.error(f"Verification of {target}:{settings.port} failed: {exc}")
            continue
        detail = result.tls_version + (
            f", logged in, PostgreSQL {result.server_version}" if login else ""
        )
        outcome.verify.append(VerifyResult(target, True, detail, result.server_version))
        gha.info(f"✓ {target}:{settings.port} answers pg_tls ({detail})")
    if any(not v.ok and not v.warning_only for v in outcome.verify):
        outcome.status = "failed"
        outcome.error = "The external endpoint did not pass verification (see the errors above)."


def _verify_unexpose(outcome: Outcome, settings: Settings, gha: Actions) -> None:
    released = [a for ip in outcome.ips if ip.action == "release" and ip.done for a in ip.addresses]
    if not released:
        return
    deadline = UNEXPOSE_VERIFY_BOUND
    end = time.monotonic() + deadline
    pending = list(released)
    while pending and time.monotonic() < end:
        pending = [a for a in pending if still_open(a, settings.port, timeout=1.0)]
        if pending:
            time.sleep(0.5)
    for address in released:
        ok = address not in pending
        outcome.verify.append(VerifyResult(address, ok, "closed" if ok else "still accepts"))
        if ok:
            gha.info(f"✓ {address}:{settings.port} no longer accepts connections")
        else:
            gha.warning(
                f"{address}:{settings.port} still accepts connections {deadline:.0f} s after its "
                "release; Fly's proxy may take a moment to forget it."
            )


def set_outputs(outcome: Outcome, settings: Settings, plan: Plan | None, gha: Actions) -> None:
    url = ""
    if (
        plan is not None
        and plan.external_url
        and outcome.mode != "unexpose"
        and outcome.status != "failed"
    ):
        url = plan.external_url
    db = settings.database_url
    gha.set_output("database-url", url)
    gha.set_output("host", settings.host)
    gha.set_output("port", str(settings.port))
    gha.set_output("database", db.database if db else "")
    gha.set_output("user", db.user if db else "")
    gha.set_output("ipv4", ",".join(outcome.addresses("v4")))
    gha.set_output("ipv6", ",".join(outcome.addresses("v6")))
    gha.set_output("changed", "true" if outcome.changed else "false")
    gha.set_output("config-diff", outcome.config_diff)


def _final_summary(outcome: Outcome, gha: Actions) -> None:
    updated = [m.id for m in outcome.machines if m.result == "updated"]
    v4 = ", ".join(outcome.addresses("v4")) or "none"
    v6 = ", ".join(outcome.addresses("v6")) or "none"
    gha.info(f"Result: {outcome.status} (changed={str(outcome.changed).lower()})")
    gha.info(f"  IPv4: {v4}")
    gha.info(f"  IPv6: {v6}")
    gha.info(f"  machines updated: {', '.join(updated) or 'none'}")
    if outcome.redacted_url and outcome.mode != "unexpose":
        gha.info(f"  URL: {outcome.redacted_url}")


def run(
    settings: Settings,
    fly: Fly,
    gha: Actions,
    env: Mapping[str, str],
    publish: Publisher | None = None,
) -> int:
    """One run of the action against `fly`; returns the exit code."""
    plan: Plan | None = None
    outcome: Outcome | None = None
    try:
        with gha.group(f"Read {settings.app} from Fly"):
            cluster = read_cluster(fly, settings.app)
            _describe_state(cluster, gha)
        plan = make_plan(settings, cluster)
        if settings.database_url is None and settings.mode != "unexpose":
            gha.notice(
                "No database-url input: the database-url output stays empty. Pass the app's "
                "internal DATABASE_URL (from fly pg attach) to get the external one."
            )
        title = "Plan (read only)" if plan.read_only else "Plan"
        with gha.group(title):
            _describe_plan(plan, gha)
        if plan.read_only or not plan.changed:
            outcome = plan.outcome()
        else:
            with gha.group("Apply"):
                outcome = apply(
                    fly,
                    plan,
                    gha,
                    wait_timeout=settings.wait_timeout,
                    lease_wait=settings.lease_wait,
                )
        if settings.mode != "unexpose":
            outcome.fly_toml_path = _write_fly_toml(plan, env, gha)
        if settings.verify and not settings.read_only and outcome.status != "failed":
            with gha.group("Verify"):
                if settings.mode == "unexpose":
                    _verify_unexpose(outcome, settings, gha)
                else:
                    _verify_expose(outcome, settings, gha)
    except (InputError, PlanError) as exc:
        gha.error(str(exc))
        return 1
    except FlyAuthError as exc:
        gha.error(
            f"{exc}. Use a Fly token that can manage app {settings.app} "
            f"(fly tokens create deploy -a {settings.app})."
        )
        return 1
    except (RunError, FlyError) as exc:
        gha.error(str(exc) if isinstance(exc, RunError) else f"Fly API error: {exc}")
        if plan is None:
            return 1
        outcome = replace(plan.outcome("failed"), error=str(exc), changed=False)
    except Cancelled as exc:
        gha.error(
            f"Cancelled ({exc}) while working on {settings.app}; every lease this run held was "
            "released. Re-run the workflow to finish: the action picks up where it stopped."
        )
        if plan is not None:
            outcome = outcome or plan.outcome("failed")
            set_outputs(outcome, settings, plan, gha)
        return 1

    assert plan is not None and outcome is not None
    if outcome.status == "failed" and outcome.error:
        gha.error(outcome.error)
    set_outputs(outcome, settings, plan, gha)
    comment_url = ""
    if publish is not None:
        with gha.group("Report"):
            comment_url = publish(outcome, settings, gha, env)
    gha.set_output("comment-url", comment_url)
    _final_summary(outcome, gha)
    return 1 if outcome.status == "failed" else 0


def _publish(outcome: Outcome, settings: Settings, gha: Actions, env: Mapping[str, str]) -> str:
    # Imported here: PyGithub costs start-up time that a run without a report does not need.
    from . import github

    try:
        url: str = github.publish(
            outcome,
            token=settings.github_token,
            pr_comment=settings.pr_comment,
            env=env,
            gha=gha,
            redactor=gha.redactor,
        )
    except Exception as exc:
        gha.warning(f"Could not write the report: {type(exc).__name__}: {exc}")
        return ""
    return url


def main(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    gha = Actions(env)
    try:
        settings = from_environ(env, gha.input)
    except InputError as exc:
        # Mask whatever token-looking input we got before printing anything at all.
        for name in ("fly-api-token", "github-token", "database-url"):
            gha.add_mask((gha.input(name) or "").strip())
        for var in ("FLY_API_TOKEN", "FLY_ACCESS_TOKEN"):
            gha.add_mask(env.get(var, "").strip())
        gha.error(str(exc))
        return 1
    for secret in settings.secrets:
        gha.add_mask(secret)
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    fly = make_fly(settings)
    try:
        return run(settings, fly, gha, env, _publish)
    except Exception as exc:
        gha.error(f"Unexpected error: {type(exc).__name__}: {exc}")
        sys.stderr.write(gha.redactor.redact(traceback.format_exc()))
        return 1
    finally:
        fly.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
