"""The sections of the report, drawn with the Markdown helpers of `markdown.py`.

The report reads top down in the order a pull request reviewer asks: what happened (title, and
for a dry run how to apply it), where to connect (and whether that was checked), the addresses
and the service, the warnings, which machines restart (or restarted) and in which order, then the
fly.toml diff, collapsed. Each fact is said once, in the tense of the run's status: a plan says
what applying will do, an applied run what it did, a failed one how far it got.

Each section is a pure function of an `Outcome` whose free text is already redacted (see
`outcome.redacted`): nothing here does I/O, reads a clock or knows a secret. Text from Fly or
from an exception is escaped, so it shows as text and cannot open HTML or close a code block.
`report.fit` sizes what `render` returns, with the fly.toml diff it draws itself.
"""

from __future__ import annotations

import re

from . import ports
from .connstr import hide_secrets
from .domain import PlanWarning, WarningKind
from .markdown import clip, escape, fenced, inline_code, plural, table
from .outcome import IpChange, MachineChange, Outcome, VerifyResult

# Free text from Fly or from an exception is capped so one runaway message cannot crowd the
# diff (and the rest of the report) out of a comment.
_MAX_ERROR_CHARS = 8_000
_MAX_WARNING_CHARS = 2_000

_TITLE_ICON = {"plan": "📋", "applied": "✅", "no-change": "⚪", "failed": "❌"}

# A digest in a table is cut to this many hex digits (as `docker images` shows image IDs); the
# full reference is in the collapsed details.
SHORT_DIGEST = 12
_DIGEST_RE = re.compile(rf"@sha256:([0-9a-f]{{{SHORT_DIGEST}}})[0-9a-f]{{{64 - SHORT_DIGEST}}}\b")

# The plan's warnings that the report says in its own words, in the tense of the run (the plan
# writes them for the log, before anything has happened): the restarts and the IPv4 billing.
_RESTATED: frozenset[WarningKind] = frozenset({"restarts", "billing"})


def short_image(image: str) -> str:
    """`flyio/postgres-flex:15.6@sha256:<64 hex>` → `flyio/postgres-flex:15.6@sha256:1a2b3c4d5e6f…`:
    the digest cut to `SHORT_DIGEST` hex digits, enough to tell images apart at a glance."""
    return _DIGEST_RE.sub(lambda m: f"@sha256:{m.group(1)}…", image)


# -- title, lead, endpoint ------------------------------------------------------------------


def _title(outcome: Outcome) -> str:
    app = inline_code(outcome.app)
    releasing = outcome.mode in ("unexpose", "sweep")
    if releasing and any(ip.action == "keep" and ip.addresses for ip in outcome.ips):
        return f"### {_TITLE_ICON[outcome.status]} {_kept_open_title(outcome, app)}"
    # An unexpose run (or one releasing addresses) takes external access away.
    closing = releasing or any(ip.action == "release" for ip in outcome.ips)
    verb, state = ("close", "closed") if closing else ("open", "open")
    text = {
        "plan": f"Plan: {verb} {app} to external connections",
        "applied": f"Applied: {app} is {state} to external connections",
        "no-change": f"No change: {app} is already {state} to external connections",
    }.get(outcome.status, f"Failed: could not {verb} {app} to external connections")
    return f"### {_TITLE_ICON[outcome.status]} {text}"


def _kept_open_title(outcome: Outcome, app: str) -> str:
    """A releasing run that keeps some address: the app stays open, and the title says so."""
    n = sum(len(ip.addresses) for ip in outcome.ips if ip.action == "release")
    return {
        "plan": f"Plan: release {n} address{'' if n == 1 else 'es'} of {app}; "
        "it stays open to external connections",
        "applied": f"Applied: {app} stays open to external connections (addresses kept)",
        "no-change": f"No change: {app} stays open to external connections (addresses kept)",
    }.get(outcome.status, f"Failed: could not release the addresses of {app}")


def _lead(outcome: Outcome) -> str:
    if outcome.status == "plan":
        return (
            "**Dry run:** nothing was changed on Fly.io. To apply this plan, re-run without "
            "`dry-run: true`."
        )
    job = (
        " Open for this job only (`lifetime: job`): when the job ends, its post step closes "
        "what it opened and updates this report."
        if outcome.closes_at_job_end and outcome.mode == "expose"
        else ""
    )
    if outcome.status == "no-change":
        return "Everything was already in place: this run changed nothing." + job
    if outcome.status == "failed":
        return "The run stopped on an error; the tables below show how far it got."
    return job.lstrip()


def _hide_password(url: str) -> str:
    """Structural belt and braces: whatever the Outcome holds, a URL never shows a password or
    the value of a parameter that could be secret."""
    return hide_secrets(url)


def _endpoint(outcome: Outcome) -> str:
    """Where to connect, first: the external URL (or the host when there is none)."""
    if outcome.mode in ("unexpose", "sweep"):
        return ""
    if outcome.redacted_url:
        when = {
            "plan": " (after apply)",
            "failed": " (the run failed: it may not accept connections yet)",
        }.get(outcome.status, "")
        url = inline_code(_hide_password(outcome.redacted_url))
        return f"**Connect{when}:** {url} (password hidden)"
    if outcome.host:
        return f"**Host:** {inline_code(f'{outcome.host}:{outcome.service_port}')}"
    return ""


def _verify_detail(v: VerifyResult) -> str:
    detail = " ".join(clip(v.detail, 500).splitlines())
    if v.server_version and v.server_version not in detail:
        detail += f", PostgreSQL {v.server_version}"
    return escape(detail)


def _verify_section(outcome: Outcome) -> str:
    """One line when every target answered alike, else one line per target."""
    if not outcome.verify:
        return ""
    details = {_verify_detail(v) for v in outcome.verify}
    if len(details) == 1 and all(v.ok for v in outcome.verify):
        targets = ", ".join(inline_code(v.target) for v in outcome.verify)
        return f"✅ **Connection check:** {targets}: {details.pop()}"
    lines = ["**Connection check**", ""]
    for v in outcome.verify:
        icon = "✅" if v.ok else ("⚠️" if v.warning_only else "❌")
        extra = " (not counted as a failure)" if (v.warning_only and not v.ok) else ""
        lines.append(f"- {icon} {inline_code(v.target)}: {_verify_detail(v)}{extra}")
    return "\n".join(lines)


# -- addresses, service, image ----------------------------------------------------------------


def _ip_row(ip: IpChange, outcome: Outcome, *, said: bool = False) -> list[str]:
    """One family's row; `said`: an earlier row gave the same reason for keeping it."""
    label = "Dedicated IPv4" if ip.family == "v4" else "IPv6"
    addrs = ", ".join(inline_code(a) for a in ip.addresses)
    if ip.action == "absent":
        return [label, "none", "none"]
    if ip.action == "keep":
        kept = "kept: for the same reason" if said else f"kept: {escape(ip.note)}"
        return [label, addrs or "present", kept if ip.note else "unchanged"]
    allocate = ip.action == "allocate"
    before = "none" if allocate else (addrs or "present")
    verb = "allocated" if allocate else "released"
    if ip.done and allocate:
        after = f"{addrs} (allocated)" if addrs else "allocated"
    elif ip.done:
        after = "none (released)"
    elif outcome.status == "plan":
        after = f"{verb} on apply"
    elif outcome.status == "failed":
        after = f"not {verb} (the run stopped first)"
    else:
        after = f"not {verb}"
    return [label, before, after]


def _service_row(outcome: Outcome) -> list[str]:
    label = f"`pg_tls` on port {outcome.service_port}"
    n = len(outcome.machines)
    changing = [m for m in outcome.machines if m.services_change]
    if not changing:
        return [label, "on the machine" if n == 1 else f"on all {n} machines", "unchanged"]
    before = f"missing on {len(changing)} of {plural(n, 'machine')}"
    done = sum(1 for m in changing if m.result == "updated")
    if outcome.status == "plan":
        after = f"added to {plural(len(changing), 'machine')} on apply"
    elif done == len(changing):
        after = f"added to {plural(done, 'machine')}"
    else:
        after = f"added to {done} of {plural(len(changing), 'machine')}"
    return [label, before, after]


def _images(names: set[str]) -> str:
    return ", ".join(inline_code(short_image(i)) for i in sorted(names))


def _image_row(outcome: Outcome) -> list[str]:
    changing = [m for m in outcome.machines if m.image_before != m.image_after]
    if not changing:
        return ["Image", _images({m.image_before for m in outcome.machines}), "unchanged"]
    after = _images({m.image_after for m in changing})
    done = sum(1 for m in changing if m.result == "updated")
    if outcome.status == "plan":
        after += " on apply"
    elif done != len(changing):
        after += f" on {done} of {plural(len(changing), 'machine')}"
    return ["Image", _images({m.image_before for m in changing}), after]


def _summary_table(outcome: Outcome) -> str:
    rows: list[list[str]] = []
    notes: set[str] = set()
    for ip in outcome.ips:
        rows.append(_ip_row(ip, outcome, said=ip.action == "keep" and ip.note in notes))
        notes |= {ip.note} if ip.action == "keep" else set()
    if outcome.machines:
        rows += [_service_row(outcome), _image_row(outcome)]
    if not rows:
        return ""
    return table(["", "Before", "After apply" if outcome.status == "plan" else "After"], rows)


# -- warnings ---------------------------------------------------------------------------------


def _billing(outcome: Outcome) -> list[str]:
    new_v4 = [ip for ip in outcome.ips if ip.family == "v4" and ip.action == "allocate"]
    # "\$": GitHub reads a pair of dollar signs in a paragraph as math.
    if new_v4 and outcome.status == "plan":
        return [
            "**Billing:** applying will allocate a dedicated IPv4 address; Fly.io bills it "
            "(about \\$2/month) until `mode: unexpose` releases it."
        ]
    if any(ip.done for ip in new_v4):
        return [
            "**Billing:** Fly.io bills the new dedicated IPv4 address (about \\$2/month) until "
            "`mode: unexpose` releases it."
        ]
    return []


def _kept_hint(warning: PlanWarning, outcome: Outcome) -> str | None:
    """A kept address whose reason the table already gives: only how to release it."""
    if warning.kind != "kept":
        return None
    in_table = any(
        ip.action == "keep" and ip.note and warning.subject in ip.addresses for ip in outcome.ips
    )
    if not in_table:
        return None
    return f"Kept {inline_code(warning.subject)}. {escape(' '.join(warning.hint.split()))}".rstrip()


def _warnings(outcome: Outcome) -> str:
    out = _billing(outcome)
    for w in outcome.warnings:
        if w.kind in _RESTATED:
            continue
        kept = _kept_hint(w, outcome)
        out.append(kept or escape(" ".join(clip(w.text, _MAX_WARNING_CHARS).splitlines())))
    # A blank quoted line between warnings keeps each in its own paragraph.
    return "\n>\n".join(f"> ⚠️ {w}" for w in out)


# -- restarts -----------------------------------------------------------------------------------

_RESULT_TEXT = {"updated": "✅ updated", "rolled-back": "↩️ rolled back", "failed": "❌ failed"}
_REACHED = ("updated", "rolled-back", "failed")


def _restart_lead(outcome: Outcome) -> str:
    restart, n = outcome.machines_to_restart, len(outcome.machines)
    if outcome.status == "plan":
        return (
            f"⚠️ **Applying will restart {len(restart)} of {plural(n, 'machine')}**, one at a time "
            "in this order, the primary last. Each drops its connections while it restarts; "
            "writes pause while the primary restarts."
        )
    count = {r: sum(1 for m in restart if m.result == r) for r in _REACHED}
    if outcome.status != "failed":
        return (
            f"**Restarted {count['updated']} of {plural(n, 'machine')}**, one at a time in "
            "this order, the primary last; clients connected to them had to reconnect."
        )
    rest = len(restart) - sum(count.values())
    parts = [f"{count['updated']} of {len(restart)} updated"]
    parts += [f"{count['rolled-back']} rolled back"] if count["rolled-back"] else []
    parts += [f"{count['failed']} failed"] if count["failed"] else []
    parts += [f"{rest} not reached"] if rest else []
    return f"**Restarts:** {', '.join(parts)} (one at a time in this order, the primary last)."


def _machine_cells(i: int, m: MachineChange, status: str) -> list[str]:
    change = ["`pg_tls` service"] if m.services_change else []
    if m.image_before != m.image_after:
        change.append(f"image → {inline_code(short_image(m.image_after))}")
    cells = [str(i), inline_code(m.id), escape(m.region), escape(m.role)]
    cells.append(", ".join(change) or "none")
    if status == "plan":
        return cells
    if m.result in _RESULT_TEXT:
        result = _RESULT_TEXT[m.result]
    elif m.result == "pending" or (m.restarts and status == "failed"):
        result = "not reached"
    else:
        result = "unchanged"
    return [*cells, result]


def _restart_section(outcome: Outcome) -> str:
    """Which machines restart (or restarted), in rollout order, with what happened to each."""
    restart = outcome.machines_to_restart
    reached = any(m.result in _REACHED for m in restart)
    if not restart or (outcome.status in ("applied", "no-change") and not reached):
        return ""
    head = ["#", "Machine", "Region", "Role", "Change"]
    head += [] if outcome.status == "plan" else ["Result"]
    rows = [_machine_cells(i, m, outcome.status) for i, m in enumerate(outcome.machines, 1)]
    return _restart_lead(outcome) + "\n\n" + table(head, rows)


# -- error and the whole ---------------------------------------------------------------------


def _error_section(outcome: Outcome) -> str:
    if outcome.status != "failed" and not outcome.error:
        return ""
    text = outcome.error or "The run failed; the log of the step has the details."
    return "**Error**\n\n" + fenced(clip(text, _MAX_ERROR_CHARS), "text")


def render(outcome: Outcome, diff_section: str) -> str:
    """The report without its footer, around `diff_section` (which `report.fit` sizes)."""
    blocks = [
        _title(outcome),
        _lead(outcome),
        _error_section(outcome),
        _endpoint(outcome),
        _verify_section(outcome),
        _summary_table(outcome),
        ports.markdown(outcome.open_ports),
        _warnings(outcome),
        _restart_section(outcome),
        diff_section,
    ]
    return "\n\n".join(b for b in blocks if b) + "\n"
