"""What each step does about temporary credentials (`credentials: temporary`).

- The main step, once the endpoint is verified and the run hands out URLs: makes the run's role
  and returns the settings whose URLs, `user` and `password` carry it. The password is masked
  the moment it exists; a `lifetime: job` run names the role in the step state before creating
  it, so the post step drops whatever was made. If anything fails, the run fails and hands out
  no URL: never the long-lived one in the temporary one's place.
- The post step (`lifetime: job`), before the addresses close: drops the role, ends its
  sessions, and says so in the log and the job summary.
- A sweep, before it releases anything (the database is still reachable): drops the temporary
  roles whose validity has passed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from . import step_state
from .credentials import TemporaryRole, comment_for, new_role, temporary_conn
from .errors import CredentialsError
from .gha import Actions
from .markdown import inline_code
from .settings import Settings

if TYPE_CHECKING:
    from .pgroles import Account, Dropped, Endpoint

log = logging.getLogger(__name__)


def shown(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"


def hand_out(settings: Settings, gha: Actions, env: Mapping[str, str]) -> Settings:
    """The run's role, made and logged in with; the settings whose URLs carry it. A
    `CredentialsError` when it cannot be made: the run then fails and hands out no URL, never
    one with the internal URL's credentials instead."""
    db = settings.database_url
    if db is None:  # settings.py refuses temporary credentials without database-url
        return settings
    role = new_role(settings.credentials, db.user)
    gha.add_mask(role.password)
    if settings.lifetime == "job":
        step_state.save_temp_role(gha, role.name)
    with gha.group("Temporary credentials"):
        until = _make(settings, role, env)
        temporary = replace(settings, database_url=temporary_conn(db, role))
        for secret in temporary.secrets:
            gha.add_mask(secret)
        ends = (
            "the post step drops it at the end of the job"
            if settings.lifetime == "job"
            else "then it can no longer log in, and a sweep with credentials: temporary drops it"
        )
        log.info(
            f"Created role {role.name} for this run: it becomes {role.target} at login, so what "
            f"it creates belongs to {role.target}; valid until {shown(until)} "
            f"({duration(role.valid_for)}), at most {role.connection_limit} connections; {ends}. "
            f"The URL outputs, user and password carry it, never {db.user}'s password."
        )
    return temporary


def _make(settings: Settings, role: TemporaryRole, env: Mapping[str, str]) -> datetime:
    """Create the role and log in with it; one that does not log in as it should is dropped."""
    from .pgroles import check_login, create, drop, endpoint_of  # libpq, only when used

    endpoint, account = endpoint_of(settings)
    run = env.get("GITHUB_RUN_ID", "")
    repository = env.get("GITHUB_REPOSITORY", "")
    until = create(endpoint, account, role, lambda at: comment_for(repository, run, at))
    try:
        check_login(endpoint, role)
    except CredentialsError as exc:
        try:
            drop(endpoint, account, role.name, role.target)
        except CredentialsError as dropping:
            exc.hint = f"It could not be dropped either ({dropping}); it expires {shown(until)}."
        raise
    return until


# -- the post step ---------------------------------------------------------------------------


def drop_at_job_end(
    settings: Settings,
    env: Mapping[str, str],
    gha: Actions,
    *,
    cancelled: type[BaseException] = KeyboardInterrupt,
) -> int:
    """Drop the role the main step made (named in the step state); the exit code. `cancelled`
    is what a cancellation raises: reported like any failure, so the addresses still close."""
    name = step_state.load(env).temp_role
    if not name or settings.database_url is None:
        return 0
    from .pgroles import drop, endpoint_of

    endpoint, account = endpoint_of(settings)
    target = settings.credentials.target(account.user)
    try:
        dropped = drop(endpoint, account, name, target)
    except (CredentialsError, cancelled) as exc:
        why = exc.explained if isinstance(exc, CredentialsError) else f"cancelled ({exc})."
        message = (
            f"Role {name} was not dropped: {why} It can no longer log in once its "
            "validity ends; a mode: sweep run with credentials: temporary drops it then. Or, "
            f"as {account.user}, in each database where it owns something: REASSIGN OWNED BY "
            f"{name} TO {target}; DROP OWNED BY {name}; then DROP ROLE {name};"
        )
        log.error(message, extra={"title": "Temporary role not dropped"})
        gha.append_summary(_job_end_summary(name, f"**not dropped**: {message}"))
        return 1
    _report(dropped)
    gha.append_summary(_job_end_summary(name, _what_became(dropped)))
    return 0 if dropped.gone and not dropped.sessions_left else 1


def _report(dropped: Dropped) -> None:
    if not dropped.existed:
        log.info(f"Role {dropped.name} is already gone (never made, or dropped by a sweep).")
        return
    if not dropped.gone:
        log.error(
            f"Role {dropped.name} still exists after DROP ROLE.",
            extra={"title": "Temporary role not dropped"},
        )
        return
    if dropped.sessions_left:
        log.error(
            f"Role {dropped.name} was dropped, but {dropped.sessions_left} of its sessions are "
            "still open.",
            extra={"title": "Temporary role's sessions still open"},
        )
    log.info(f"✓ Role {dropped.name}: {_what_became(dropped)}")


def _what_became(dropped: Dropped) -> str:
    if not dropped.existed:
        return "already gone"
    if not dropped.gone:
        return "**still exists**"
    said = f"dropped; {dropped.sessions_ended} session(s) ended"
    if dropped.databases:
        where = ", ".join(dropped.databases)
        said += f"; what it owned went to {dropped.target}, its privileges revoked ({where})"
    return said


def _job_end_summary(name: str, what: str) -> str:
    return (
        "### fly-pg-external: temporary credentials at the end of the job\n\n"
        f"Role {inline_code(name)}: {what}\n"
    )


# -- sweep -----------------------------------------------------------------------------------


def sweep_expired(settings: Settings, gha: Actions) -> bool:
    """In a sweep with `credentials: temporary`, drop the expired temporary roles (list them,
    in a dry run); False when one could not be dropped. True when there is nothing to do."""
    if settings.mode != "sweep" or not settings.credentials.temporary:
        return True
    from .pgroles import endpoint_of, expired, is_unreachable

    endpoint, account = endpoint_of(settings)
    with gha.group("Expired temporary roles"):
        try:
            roles = expired(endpoint, account)
        except CredentialsError as exc:
            if not is_unreachable(exc):
                log.error(exc.explained, extra={"title": "Expired roles not swept"})
                return False
            log.warning(
                f"Expired temporary roles were not looked for: {exc} They can no longer log "
                "in; the next sweep that reaches the database drops them.",
                extra={"title": "Role sweep could not connect"},
            )
            return True
        rows, ok = _sweep(roles, settings, endpoint, account)
    if rows:
        gha.append_summary(
            "### fly-pg-external: expired temporary roles\n\n| Role | Expired | Result |\n"
            "|---|---|---|\n" + "".join(rows)
        )
    return ok


def _sweep(
    roles: list[tuple[str, datetime]], settings: Settings, endpoint: Endpoint, account: Account
) -> tuple[list[str], bool]:
    """Drop each expired role (or say that a dry run would); the summary's rows, and whether
    every one is gone."""
    if not roles:
        log.info("No temporary role has expired.")
        return [], True
    from .pgroles import drop

    rows, ok = [], True
    for name, until in roles:
        if settings.read_only:
            log.info(f"Would drop {name}, expired {shown(until)} (dry run).")
            result = "would be dropped (dry run)"
        else:
            try:
                dropped = drop(endpoint, account, name, settings.credentials.target(account.user))
            except CredentialsError as exc:
                log.error(
                    f"Expired role {name} was not dropped: {exc.explained}",
                    extra={"title": "Expired role not dropped"},
                )
                rows.append(f"| {inline_code(name)} | {shown(until)} | **not dropped** |\n")
                ok = False
                continue
            _report(dropped)
            result = _what_became(dropped)
            ok = ok and dropped.gone
        rows.append(f"| {inline_code(name)} | {shown(until)} | {result} |\n")
    return rows, ok
