"""The markdown report: what it says for each outcome, and that it stays safe and within limits."""

from __future__ import annotations

import html
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import cmarkgfm
import pytest
from cmarkgfm.cmark import Options

from fly_pg_external.comment_marker import (
    GITHUB_COMMENT_LIMIT,
    content_digest,
    parse_marker,
    render_marker,
)
from fly_pg_external.domain import AppInfo, ClusterState, IpAddress, PlanWarning
from fly_pg_external.fly.machines import machine_from_api
from fly_pg_external.markdown import fenced, inline_code
from fly_pg_external.outcome import (
    IpChange,
    MachineChange,
    Outcome,
    VerifyResult,
    build_outcome,
    concluded,
    redacted,
)
from fly_pg_external.plan import Plan, make_plan
from fly_pg_external.progress import Progress
from fly_pg_external.redact import Redactor, secret_forms
from fly_pg_external.report import (
    SUMMARY_MAX_BYTES,
    comment_body,
    fit,
    render_markdown,
    summary_markdown,
)
from fly_pg_external.settings import from_environ

from machines_data import IMAGE, machine, owning

IMG = "flyio/postgres-flex:16.4"
URL = "postgres://postgres:***@my-pg.fly.dev:5432/postgres?sslmode=require"
DIFF = """--- fly.toml
+++ fly.toml
@@ -1,2 +1,8 @@
 app = "my-pg"
+
+[[services]]
+  internal_port = 5432
+  [[services.ports]]
+    handlers = ["pg_tls"]
+    port = 5432
"""
RUN = "https://github.com/acme/db/actions/runs/42"
SHA = "0123456789abcdef0123456789abcdef01234567"


def free_text(text: str) -> PlanWarning:
    """A warning whose text the report shows as it is (a machine on an unreachable host's)."""
    return PlanWarning("unreachable-host", text)


def machines(result: str = "pending", image_after: str = IMG) -> list[MachineChange]:
    return [
        MachineChange("m-replica", "fra", "replica", "started", True, IMG, image_after, result),  # type: ignore[arg-type]
        MachineChange("m-primary", "fra", "primary", "started", True, IMG, image_after, result),  # type: ignore[arg-type]
    ]


def plan_outcome(**kw: object) -> Outcome:
    base = Outcome(
        app="my-pg",
        mode="expose",
        status="plan",
        changed=False,
        ips=[IpChange("v4", "allocate"), IpChange("v6", "keep", ("2a09:8280::1",))],
        machines=machines(),
        config_diff=DIFF,
        fly_toml_after="app = 'my-pg'\n",
        redacted_url=URL,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def applied_outcome(**kw: object) -> Outcome:
    base = plan_outcome(
        mode="expose",
        status="applied",
        changed=True,
        ips=[
            IpChange("v4", "allocate", ("137.66.1.2",), done=True),
            IpChange("v6", "keep", ("2a09:8280::1",)),
        ],
        machines=machines("updated"),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def table_row(text: str, label: str) -> str:
    for line in text.splitlines():
        if line.startswith(f"| {label} |"):
            return line
    raise AssertionError(f"no table row {label!r} in:\n{text}")


# -- titles and content -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "words"),
    [
        (plan_outcome(), "Plan: open `my-pg` to external connections"),
        (applied_outcome(), "Applied: `my-pg` is open to external connections"),
        (
            plan_outcome(status="no-change", mode="expose", machines=[], config_diff=""),
            "No change: `my-pg` is already open to external connections",
        ),
        (
            plan_outcome(status="failed", mode="expose", error="lease held"),
            "Failed: could not open `my-pg` to external connections",
        ),
        (
            plan_outcome(
                mode="unexpose",
                status="applied",
                ips=[IpChange("v4", "release", ("137.66.1.2",), done=True)],
            ),
            "Applied: `my-pg` is closed to external connections",
        ),
    ],
)
def test_title_names_the_app_and_the_outcome(outcome: Outcome, words: str) -> None:
    text = render_markdown(outcome, commit=SHA, run_url=RUN)
    assert text.splitlines()[0].startswith("### ")
    assert words in text.splitlines()[0]


def test_plan_table_lists_every_change_and_says_nothing_was_done() -> None:
    text = render_markdown(plan_outcome(), commit=SHA, run_url=RUN)
    assert "nothing was changed on Fly.io" in text
    assert "After apply" in text
    assert "allocated on apply" in table_row(text, "Dedicated IPv4")
    assert "`2a09:8280::1`" in table_row(text, "IPv6")
    assert "unchanged" in table_row(text, "IPv6")
    service = table_row(text, "`pg_tls` on port 5432")
    assert "missing on 2 of 2 machines" in service
    assert "added to 2 machines on apply" in service
    assert "unchanged" in table_row(text, "Image")
    assert "**Applying will restart 2 of 2 machines**" in text


def test_dry_run_says_how_to_apply_it() -> None:
    text = render_markdown(plan_outcome(), commit=SHA, run_url=RUN)
    assert "re-run without `dry-run: true`" in text
    assert "mode: plan" not in text
    assert "mode: expose" not in text


def test_rollout_table_keeps_the_primary_last() -> None:
    text = render_markdown(plan_outcome(), commit=SHA, run_url=RUN)
    assert text.index("`m-replica`") < text.index("`m-primary`")
    assert re.search(r"\| 2 \| `m-primary` \| fra \| primary \|", text)


def test_image_change_shows_both_images() -> None:
    text = render_markdown(
        plan_outcome(machines=machines(image_after="flyio/postgres-flex:16.6")),
        commit=SHA,
        run_url=RUN,
    )
    row = table_row(text, "Image")
    assert "`flyio/postgres-flex:16.4`" in row
    assert "`flyio/postgres-flex:16.6` on apply" in row


def test_applied_table_shows_the_new_ipv4() -> None:
    text = render_markdown(applied_outcome(), commit=SHA, run_url=RUN)
    assert "`137.66.1.2` (allocated)" in table_row(text, "Dedicated IPv4")
    assert "added to 2 machines" in table_row(text, "`pg_tls` on port 5432")
    assert "**Restarted 2 of 2 machines**, one at a time in this order, the primary last" in text
    assert "| 2 | `m-primary` | fra | primary | `pg_tls` service | ✅ updated |" in text


def test_warns_about_ipv4_billing_and_restarts_in_a_plan() -> None:
    text = render_markdown(plan_outcome(), commit=SHA, run_url=RUN)
    assert "**Billing:**" in text
    assert "billed" in text or "bills" in text
    assert "⚠️ **Applying will restart 2 of 2 machines**" in text
    assert "writes pause while the primary restarts" in text


def test_no_billing_warning_when_the_ipv4_already_exists() -> None:
    outcome = plan_outcome(ips=[IpChange("v4", "keep", ("137.66.1.2",))], machines=[])
    text = render_markdown(outcome, commit=SHA, run_url=RUN)
    assert "**Billing:**" not in text
    assert "restart" not in text.lower()


def test_outcome_warnings_are_shown_as_text_not_html() -> None:
    outcome = plan_outcome(
        warnings=[free_text("IPv6 is not routable </details><script>x</script>")]
    )
    text = render_markdown(outcome, commit=SHA, run_url=RUN)
    assert "&lt;/details&gt;&lt;script&gt;" in text
    assert "<script>" not in text
    assert text.count("</details>") == 1


def test_failed_run_shows_the_error_and_what_was_reached() -> None:
    ms = [
        replace(machines()[0], result="updated"),
        replace(machines()[1], result="rolled-back"),
    ]
    outcome = plan_outcome(
        mode="expose", status="failed", machines=ms, error="health check timed out"
    )
    text = render_markdown(outcome, commit=SHA, run_url=RUN)
    assert "**Error**" in text
    assert "health check timed out" in text
    assert "**Restarts:** 1 of 2 updated, 1 rolled back (one at a time" in text
    assert "↩️ rolled back" in text
    assert "added to 1 of 2 machines" in table_row(text, "`pg_tls` on port 5432")


def test_unexpose_release_rows() -> None:
    outcome = plan_outcome(
        mode="unexpose",
        status="applied",
        ips=[
            IpChange("v4", "release", ("137.66.1.2",), done=True),
            IpChange("v6", "absent"),
        ],
        machines=[],
        config_diff="",
    )
    text = render_markdown(outcome, commit=SHA, run_url=RUN)
    assert "none (released)" in table_row(text, "Dedicated IPv4")
    assert "**Connect" not in text


def test_verify_results_are_listed() -> None:
    outcome = applied_outcome(
        verify=[
            VerifyResult("137.66.1.2:5432", True, "TLSv1.3", server_version="16.4"),
            VerifyResult("[2a09:8280::1]:5432", False, "network unreachable", warning_only=True),
        ]
    )
    text = render_markdown(outcome, commit=SHA, run_url=RUN)
    assert "- ✅ `137.66.1.2:5432`: TLSv1.3, PostgreSQL 16.4" in text
    assert "- ⚠️ `[2a09:8280::1]:5432`: network unreachable (not counted as a failure)" in text


def test_targets_that_answered_alike_share_one_line_and_the_version_is_said_once() -> None:
    detail = "TLSv1.3, logged in, PostgreSQL 16.4 (Debian 16.4-1)"
    version = "16.4 (Debian 16.4-1)"
    outcome = applied_outcome(
        verify=[VerifyResult(t, True, detail, version) for t in ("137.66.1.2", "my-pg.fly.dev")]
    )
    text = render_markdown(outcome, commit=SHA, run_url=RUN)
    assert f"✅ **Connection check:** `137.66.1.2`, `my-pg.fly.dev`: {detail}\n" in text
    assert text.count("PostgreSQL 16.4") == 1


# -- connection string ------------------------------------------------------------------------


def test_connection_string_shows_the_password_as_stars() -> None:
    text = render_markdown(plan_outcome(), commit=SHA, run_url=RUN)
    assert f"**Connect (after apply):** `{URL}` (password hidden)" in text
    applied = render_markdown(applied_outcome(), commit=SHA, run_url=RUN)
    assert f"**Connect:** `{URL}` (password hidden)" in applied


def test_a_clear_text_password_in_the_url_is_still_hidden() -> None:
    outcome = plan_outcome(redacted_url="postgres://app:hunter2@my-pg.fly.dev:5432/db")
    text = render_markdown(outcome, commit=SHA, run_url=RUN)
    assert "hunter2" not in text
    assert "postgres://app:***@my-pg.fly.dev:5432/db" in text


def test_clear_text_secret_parameters_in_the_url_are_still_hidden() -> None:
    url = (
        "postgres://app:***@my-pg.fly.dev:5432/db?password=hunter2&options=-c%20x%3Dhunter3"
        "&application_name=ci%20job&sslmode=require"
    )
    text = render_markdown(plan_outcome(redacted_url=url), commit=SHA, run_url=RUN)
    assert "hunter2" not in text and "hunter3" not in text
    assert (
        "postgres://app:***@my-pg.fly.dev:5432/db?password=***&options=***"
        "&application_name=ci%20job&sslmode=require"
    ) in text


# -- diff block -------------------------------------------------------------------------------


def test_diff_is_in_a_collapsed_diff_block() -> None:
    text = render_markdown(plan_outcome(), commit=SHA, run_url=RUN)
    assert "<details><summary><code>fly.toml</code> diff (+6 −0)</summary>" in text
    assert "```diff\n--- fly.toml" in text
    assert text.index("<details>") < text.index("```diff") < text.index("</details>")


def test_diff_containing_backticks_gets_a_longer_fence() -> None:
    diff = DIFF + "+# see ``` and ```` in comments\n"
    text = render_markdown(plan_outcome(config_diff=diff), commit=SHA, run_url=RUN)
    assert "`````diff\n" in text
    block = text.split("`````diff\n", 1)[1]
    # The block closes on its own 5-backtick line, after the whole diff.
    closing = block.index("\n`````\n")
    assert block[:closing].endswith("+# see ``` and ```` in comments")


def test_fenced_and_inline_code_survive_backticks() -> None:
    assert fenced("a\n```\nb") == "````\na\n```\nb\n````"
    assert fenced("plain", "diff") == "```diff\nplain\n```"
    assert inline_code("a`b") == "``a`b``"
    assert inline_code("`x") == "`` `x ``"


def test_table_cells_escape_pipes() -> None:
    outcome = plan_outcome(machines=[replace(machines()[0], region="fra|x")])
    text = render_markdown(outcome, commit=SHA, run_url=RUN)
    assert "fra\\|x" in text


def test_no_diff_section_when_the_config_is_unchanged() -> None:
    text = render_markdown(plan_outcome(config_diff=""), commit=SHA, run_url=RUN)
    assert "<details>" not in text
    assert "`fly.toml`: no change." in text


# -- footer, marker and digest ----------------------------------------------------------------


def test_footer_has_the_commit_and_the_run_link() -> None:
    text = render_markdown(plan_outcome(), commit=SHA, run_url=RUN)
    footer = text.rstrip().splitlines()[-1]
    assert "commit 0123456" in footer
    assert f"[workflow run]({RUN})" in footer


def test_comment_starts_with_a_marker_naming_the_app() -> None:
    body = comment_body(plan_outcome(), commit=SHA, run_url=RUN)
    first = body.splitlines()[0]
    assert first.startswith('<!-- fly-pg-external: {"v":1,"app":"my-pg","digest":"sha256:')
    marker = parse_marker(body)
    assert marker is not None
    assert marker.app == "my-pg"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", marker.digest)


def test_digest_ignores_the_footer() -> None:
    a = comment_body(plan_outcome(), commit=SHA, run_url=RUN)
    b = comment_body(plan_outcome(), commit="f" * 40, run_url=RUN + "9")
    assert a != b
    assert parse_marker(a) == parse_marker(b)


def test_digest_changes_with_the_content() -> None:
    a = parse_marker(comment_body(plan_outcome(), commit=SHA, run_url=RUN))
    b = parse_marker(comment_body(applied_outcome(), commit=SHA, run_url=RUN))
    assert a is not None and b is not None
    assert a.digest != b.digest


def test_digest_is_over_the_content_as_posted() -> None:
    body = comment_body(plan_outcome(), commit=SHA, run_url=RUN)
    marker = parse_marker(body)
    assert marker is not None
    content = body.split("\n", 1)[1].split("\n---\n<sub>")[0]
    assert marker.digest == content_digest(content)


def test_marker_is_only_recognised_on_the_first_line() -> None:
    marker = render_marker("my-pg", "sha256:" + "0" * 64)
    assert parse_marker(marker + "\nbody") is not None
    assert parse_marker("> quoting\n" + marker) is None
    assert parse_marker("<!-- fly-pg-external: {not json} -->") is None
    assert parse_marker('<!-- fly-pg-external: {"v":1,"app":3,"digest":"x"} -->') is None
    assert parse_marker("") is None
    assert parse_marker(None) is None


def test_marker_cannot_end_the_html_comment_early() -> None:
    marker = render_marker("a-->b", "sha256:x")
    assert marker.count("-->") == 1
    parsed = parse_marker(marker)
    assert parsed is not None
    assert parsed.app == "a-->b"


# -- size limits ------------------------------------------------------------------------------


def huge_diff(lines: int = 20_000) -> str:
    return "--- fly.toml\n+++ fly.toml\n" + "".join(f"+key_{i} = {i}\n" for i in range(lines))


def test_long_diff_is_cut_with_a_notice_to_fit_max_chars() -> None:
    outcome = plan_outcome(config_diff=huge_diff())
    text = render_markdown(outcome, commit=SHA, run_url=RUN, max_chars=10_000, note="See X.")
    assert len(text) <= 10_000
    assert "✂️ The diff is cut after line" in text
    assert "See X." in text
    # The code block and the <details> are still closed, the footer still there.
    assert text.count("```") == 2
    assert "</details>" in text
    assert text.rstrip().endswith("</sub>")
    assert "diff (+20000 −0), cut" in text


def test_without_max_chars_the_full_diff_is_kept() -> None:
    outcome = plan_outcome(config_diff=huge_diff(3000))
    text = render_markdown(outcome, commit=SHA, run_url=RUN)
    assert "+key_2999 = 2999" in text
    assert "✂️" not in text


def test_comment_body_fits_github_limit_and_points_to_the_summary() -> None:
    body = comment_body(plan_outcome(config_diff=huge_diff()), commit=SHA, run_url=RUN)
    assert len(body) <= GITHUB_COMMENT_LIMIT
    assert "job summary" in body
    assert f"[workflow run]({RUN})" in body
    assert parse_marker(body) is not None


def test_flood_of_warnings_is_still_cut_to_fit() -> None:
    outcome = plan_outcome(warnings=[free_text("w" * 1500)] * 100)
    text = fit(outcome, max_chars=20_000)
    assert len(text) <= 20_000
    assert "cut to fit" in text


def test_comment_body_fits_when_redaction_lengthened_the_text() -> None:
    # Redaction happens before rendering (a secret shorter than "***" makes the text longer);
    # the comment is sized on the redacted text, so it still fits.
    outcome = redacted(plan_outcome(config_diff=huge_diff()), Redactor(["key_"]))
    body = comment_body(outcome, commit=SHA, run_url=RUN, max_chars=30_000)
    assert len(body) <= 30_000
    assert "key_" not in body
    assert "+***0 = 0" in body
    marker = parse_marker(body)
    assert marker is not None
    assert marker.digest == content_digest(body.split("\n", 1)[1].split("\n---\n<sub>")[0])


def test_summary_is_sized_in_bytes_not_characters() -> None:
    # Two bytes a character: a character budget would let twice the runner's limit through.
    diff = "--- a\n+++ b\n" + "".join(f"+é_{i:07d} = {'ü' * 60}\n" for i in range(12_000))
    assert len(diff) < SUMMARY_MAX_BYTES < len(diff.encode())
    text = summary_markdown(plan_outcome(config_diff=diff), commit=SHA, run_url=RUN)
    assert SUMMARY_MAX_BYTES - 1_000 < len(text.encode()) <= SUMMARY_MAX_BYTES
    assert "✂️ The diff is cut after line" in text
    assert "holds at most 1 MiB" in text
    assert text.rstrip().endswith("</sub>")
    # Whole lines only: the last line shown before the fence is a complete one.
    shown = text.split("```diff\n", 1)[1].split("\n```", 1)[0]
    assert shown.splitlines()[-1].endswith("ü" * 60)


def test_a_small_summary_is_whole() -> None:
    outcome = plan_outcome(config_diff=huge_diff(3000))
    text = summary_markdown(outcome, commit=SHA, run_url=RUN)
    assert text == render_markdown(outcome, commit=SHA, run_url=RUN)
    assert "✂️" not in text


def test_flood_of_multibyte_warnings_is_cut_to_whole_characters() -> None:
    outcome = plan_outcome(warnings=[free_text("ü" * 1500)] * 100)
    text = fit(outcome, max_bytes=20_001, note="N.")
    assert len(text.encode()) <= 20_001
    assert text.endswith("cut to fit the size limit. N.\n")
    text.encode().decode()  # valid UTF-8: no character cut in half


def test_fit_takes_one_limit() -> None:
    with pytest.raises(ValueError, match="not both"):
        fit(plan_outcome(), max_chars=10, max_bytes=10)
    assert fit(plan_outcome()) == fit(plan_outcome(), max_chars=10**9)


def test_rendering_redacts_nothing_and_a_redacted_outcome_leaks_nothing() -> None:
    # The report prints what the Outcome holds; `redacted` (applied once, where main builds the
    # Outcome) is what keeps secrets out, in every free-text field and every spelling.
    secret = "hunter2-Pa55/wörd"
    forms = sorted(secret_forms(secret))
    leaky = " ".join(forms)
    outcome = plan_outcome(
        mode="expose",
        status="failed",
        warnings=[free_text(f"flyctl said {leaky}")],
        error=f"connect failed: {leaky}",
        config_diff="--- a\n+++ b\n" + "".join(f"+# {f}\n" for f in forms),
        fly_toml_path=f"/tmp/{secret}/fly.toml",
        verify=[VerifyResult("137.66.1.2:5432", False, f"auth failed for {leaky}")],
    )
    raw = render_markdown(outcome, commit=SHA, run_url=RUN)
    assert secret in raw  # rendering alone does not know the secret
    clean = redacted(outcome, Redactor([secret]))
    for text in (
        summary_markdown(clean, commit=SHA, run_url=RUN),
        comment_body(clean, commit=SHA, run_url=RUN),
        comment_body(clean, commit=SHA, run_url=RUN, max_chars=2_000),
    ):
        assert not [f for f in forms if f in text]
        assert "***" in text


# -- read at a glance: each fact once, in the tense of the run --------------------------------
# Outcomes made by the real planner from a legacy cluster (two machines without the pg_tls
# service, no public address), so the plan's own warnings are in them as a run has them.

V4 = IpAddress("ip1", "137.66.1.2", "v4", "global", "2026-01-02T00:00:00Z")
V6 = IpAddress("ip2", "2a09:8280:1::1", "v6", "global", "2026-01-02T00:00:00Z")
RUNNER_FLY_TOML = "/home/runner/work/_temp/fly-pg-external/my-db/fly.toml"


def real_plan(
    machines: list[dict[str, Any]], ips: tuple[IpAddress, ...] = (), **inputs: str
) -> Plan:
    """What `make_plan` makes of this cluster for these inputs (the database-url given)."""
    env = {
        "INPUT_APP": "my-db",
        "INPUT_FLY-API-TOKEN": "fo1_x",
        "INPUT_DATABASE-URL": "postgres://app:pw@my-db.flycast:5432/app",
        **{f"INPUT_{k.upper()}": v for k, v in inputs.items()},
    }
    settings = from_environ(env, lambda n: env.get("INPUT_" + n.upper()))
    app = AppInfo("app1", "my-db", "postgres_cluster", ips, None)
    return make_plan(settings.intent, ClusterState.of(app, [machine_from_api(m) for m in machines]))


def legacy_machines() -> list[dict[str, Any]]:
    return [machine(mid, role, legacy=True) for mid, role in (("m1", "primary"), ("m2", "replica"))]


def legacy_plan() -> Outcome:
    outcome = build_outcome(real_plan(legacy_machines(), **{"dry-run": "true"}))
    assert outcome.status == "plan"
    return outcome


def legacy_applied() -> Outcome:
    plan = real_plan(legacy_machines())
    progress = Progress()
    progress.allocated_ip("v4", V4)
    progress.allocated_ip("v6", V6)
    for u in plan.updates:
        progress.machine(u.machine.id, "updated")
    facts = build_outcome(plan, progress)
    assert facts.status == "applied"
    # As main concludes it after the change: where fly.toml went, what the check saw.
    detail = "TLSv1.3, logged in, PostgreSQL 16.4"
    checks = [VerifyResult(t, True, detail, "16.4") for t in ("137.66.1.2", "my-db.fly.dev")]
    return concluded(facts, verify=checks, fly_toml_path=RUNNER_FLY_TOML)


def kept_addresses(status: str) -> Outcome:
    """An unexpose that releases the action's own IPv4 and keeps an IPv6 made by hand."""
    ms = [owning(machine("m1", "primary"), {V4.id: V4.address})]
    read_only = {"dry-run": "true"} if status == "plan" else {}
    plan = real_plan(ms, (V4, V6), mode="unexpose", **read_only)
    progress = None
    if status == "applied":
        progress = Progress()
        progress.released_ip("v4", V4.address)
    outcome = build_outcome(plan, progress)
    assert outcome.status == status
    return outcome


def sentences(body: str) -> list[str]:
    """What a reader reads, in pieces: the HTML GitHub makes of `body`, without code blocks and
    the hidden marker, cut at each block, table cell, sentence end and clause mark (so that a
    reason repeated inside a longer sentence still counts as repeated). Pieces under four
    words ("allocated on apply", "primary last") are left out: table cells repeat those."""
    page = cmarkgfm.github_flavored_markdown_to_html(body, options=Options.CMARK_OPT_UNSAFE)
    page = re.sub(r"<pre.*?</pre>|<!--.*?-->", "\n", page, flags=re.S)
    page = re.sub(r"</?(code|strong|em|a|sub)\b[^>]*>", "", page)
    text = html.unescape(re.sub(r"<[^>]+>", "\n", page))
    out = []
    for piece in re.split(r"[\n;:,()]|(?<=[.!?])\s", text):
        words = piece.strip(" .").split()
        if len(words) >= 4:
            out.append(" ".join(words))
    return out


GLANCE = {
    "legacy plan": legacy_plan,
    "legacy applied": legacy_applied,
    "kept, plan": lambda: kept_addresses("plan"),
    "kept, applied": lambda: kept_addresses("applied"),
    "hand-built plan with warnings": lambda: plan_outcome(
        warnings=[
            PlanWarning(
                "shared-ipv4", "The app has a shared IPv4 (66.241.1.1); it cannot carry pg_tls."
            )
        ]
    ),
}


@pytest.mark.parametrize("make", GLANCE.values(), ids=GLANCE.keys())
def test_no_sentence_appears_twice(make: Any) -> None:
    body = comment_body(make(), commit=SHA, run_url=RUN)
    seen = Counter(sentences(body))
    assert seen, body
    assert [s for s, n in seen.items() if n > 1] == [], body


@pytest.mark.parametrize("make", [legacy_plan, legacy_applied])
def test_each_fact_of_a_legacy_rollout_is_said_once(make: Any) -> None:
    body = comment_body(make(), commit=SHA, run_url=RUN)
    for fact in ("one at a time", "primary last", "\\$2/month", "machine(s)", "will restart"):
        assert body.count(fact) <= 1, (fact, body)
    assert body.count("one at a time") == 1
    assert "A dedicated IPv4 is billed by Fly" not in body  # the plan's log wording


def test_a_kept_address_gives_its_reason_once_and_how_to_release_it() -> None:
    from fly_pg_external.releases import FOREIGN

    for status in ("plan", "applied"):
        body = comment_body(kept_addresses(status), commit=SHA, run_url=RUN)
        assert body.count(FOREIGN) == 1, body
        assert f"kept: {FOREIGN}" in table_row(body, "IPv6")
        assert "> ⚠️ Kept `2a09:8280:1::1`. To release it, name it in the addresses input" in body
        assert "fly ips release 2a09:8280:1::1 -a my-db" in body


def test_the_same_reason_for_two_kept_addresses_is_given_once() -> None:
    reason = "still held by pr-7 (since 2026-01-02 10:00 UTC)"
    outcome = plan_outcome(
        mode="unexpose",
        status="no-change",
        ips=[IpChange(f, "keep", (a,), note=reason) for f, a in (("v4", "1.2.3.4"), ("v6", "::1"))],
        machines=[],
        config_diff="",
    )
    body = comment_body(outcome, commit=SHA, run_url=RUN)
    assert f"kept: {reason}" in table_row(body, "Dedicated IPv4")
    assert "kept: for the same reason" in table_row(body, "IPv6")
    assert body.count(reason) == 1


def test_no_path_on_the_runner_appears() -> None:
    outcome = legacy_applied()
    assert outcome.fly_toml_path == RUNNER_FLY_TOML
    for text in (
        comment_body(outcome, commit=SHA, run_url=RUN),
        summary_markdown(outcome, commit=SHA, run_url=RUN),
    ):
        assert "/home/runner" not in text
        assert "_temp" not in text


def test_a_plan_says_what_will_restart_and_an_applied_run_what_restarted() -> None:
    plan = comment_body(legacy_plan(), commit=SHA, run_url=RUN)
    applied = comment_body(legacy_applied(), commit=SHA, run_url=RUN)
    assert "⚠️ **Applying will restart 2 of 2 machines**" in plan
    assert "estarted" not in plan
    assert "**Restarted 2 of 2 machines**" in applied
    assert "will restart" not in applied
    assert "Applying" not in applied
    assert "applying will allocate a dedicated IPv4 address" in plan
    assert "Fly.io bills the new dedicated IPv4 address" in applied
    # The rollout table of a plan has no result column; an applied one says what each did.
    assert "| 2 | `m1` | iad | primary | `pg_tls` service |\n" in plan
    assert "| 2 | `m1` | iad | primary | `pg_tls` service | ✅ updated |" in applied


def test_the_image_digest_is_short_in_tables_and_whole_in_the_details() -> None:
    short = "`flyio/postgres-flex:16.4@sha256:abababababab…`"
    for outcome in (legacy_plan(), legacy_applied()):
        body = comment_body(outcome, commit=SHA, run_url=RUN)
        assert short in table_row(body, "Image")
        details = body.split("<details>", 1)[1].split("</details>", 1)[0]
        assert body.count(IMAGE) == 1
        assert f"**Image:** `{IMAGE}`" in details


def test_an_image_change_is_short_in_both_tables() -> None:
    new = "flyio/postgres-flex:16.6@sha256:" + "cd" * 32
    outcome = plan_outcome(machines=machines(image_after=new))
    body = comment_body(
        replace(outcome, machines=[replace(m, image_before=IMAGE) for m in outcome.machines]),
        commit=SHA,
        run_url=RUN,
    )
    assert "`flyio/postgres-flex:16.6@sha256:cdcdcdcdcdcd…` on apply" in table_row(body, "Image")
    assert "image → `flyio/postgres-flex:16.6@sha256:cdcdcdcdcdcd…`" in body
    assert f"**Image:** `{IMAGE}` → `{new}`" in body
    assert body.count(new) == 1


def test_github_renders_a_title_two_tables_and_the_diff_folded() -> None:
    body = comment_body(legacy_plan(), commit=SHA, run_url=RUN)
    page = cmarkgfm.github_flavored_markdown_to_html(body, options=Options.CMARK_OPT_UNSAFE)
    assert page.startswith("<!-- fly-pg-external: ")
    assert "<h3>📋 Plan: open <code>my-db</code> to external connections</h3>" in page
    assert page.count("<table>") == 2
    assert "<th>Before</th>\n<th>After apply</th>" in page
    folded = re.search(r"<details><summary>(.*?)</summary>(.*?)</details>", page, re.S)
    assert folded is not None
    assert folded[1] == "<code>fly.toml</code> diff (+14 −0)"
    assert '<pre lang="diff"><code>--- fly.toml (current)' in folded[2]
    assert "+handlers = [&quot;pg_tls&quot;]" in folded[2]
    # The facts a reader needs come before the fold; the footer after it.
    assert page.index("<table>") < page.index("<details>") < page.index("<sub>")
    assert page.index("Connect (after apply)") < page.index("<table>")


# -- the documentation's example ----------------------------------------------------------------


def documented_example() -> str:
    """The plan comment shown in docs/pr-comment.md."""
    diff = (
        "--- fly.toml (live)\n+++ fly.toml (after)\n@@ -21,3 +21,12 @@\n [[mounts]]\n"
        '   source = "pg_data"\n   destination = "/data"\n+\n+[[services]]\n'
        '+  protocol = "tcp"\n+  internal_port = 5432\n+\n+  [[services.ports]]\n'
        '+    port = 5432\n+    handlers = ["pg_tls"]\n'
    )
    ms = [
        MachineChange(mid, "ams", role, "started", True, IMG, IMG)
        for mid, role in (
            ("3d8d9e1c2e7089", "replica"),
            ("e82d4d3fe71448", "replica"),
            ("148ed599c63e89", "primary"),
        )
    ]
    outcome = Outcome(
        app="acme-db",
        mode="expose",
        status="plan",
        changed=False,
        ips=[IpChange("v4", "allocate"), IpChange("v6", "allocate")],
        machines=ms,
        config_diff=diff,
        fly_toml_after="x",
        redacted_url="postgres://postgres:***@acme-db.fly.dev:5432/postgres?sslmode=require",
    )
    return comment_body(
        outcome,
        commit="9fceb02d0ae598e95dc970b74767f19372d61af8",
        run_url="https://github.com/acme/infra/actions/runs/1234",
    )


def test_documented_example_is_what_the_renderer_writes() -> None:
    page = (Path(__file__).parents[2] / "docs" / "pr-comment.md").read_text(encoding="utf-8")
    section = page.split("<!-- section:pr-comment -->")[1]
    section = section.split("<!-- /section:pr-comment -->")[0]
    quoted = [line for line in section.splitlines() if line.startswith(">")]
    shown = "\n".join(line[2:] if line.startswith("> ") else "" for line in quoted).strip()
    expected = documented_example().strip()
    fresh = "\n".join(f"> {line}" if line else ">" for line in expected.splitlines())
    assert shown == expected, f"docs/pr-comment.md's example is stale; replace it with:\n{fresh}"


def test_job_end_comment_puts_the_end_of_the_job_first_and_folds_the_main_report() -> None:
    from fly_pg_external.comment_marker import job_end_comment, main_step_report, parse_marker

    main = '<!-- fly-pg-external: {"v":1,"app":"my-db","digest":"sha256:x"} -->\n### Applied\n'
    end = "### fly-pg-external: end of the job on `my-db`\n\n| a | released |\n"
    body = job_end_comment(main, end, app="my-db")
    marker = parse_marker(body)
    assert marker is not None and marker.app == "my-db" and marker.digest != "sha256:x"
    assert body.splitlines()[1] == end.splitlines()[0]
    assert main_step_report(body) == "### Applied"
    # Again (a re-run of the post step): its own part replaced, the main report folded once.
    twice = job_end_comment(body, end.replace("released", "already gone"), app="my-db")
    assert twice.count("What the main step reported") == 1 and twice.count("### Applied") == 1
    assert "already gone" in twice and "| a | released |" not in twice


def test_job_end_comment_drops_the_main_report_rather_than_exceed_the_limit() -> None:
    from fly_pg_external.comment_marker import job_end_comment

    main = '<!-- fly-pg-external: {"v":1,"app":"my-db","digest":"sha256:x"} -->\n' + ("x" * 2000)
    body = job_end_comment(main, "### end\n", app="my-db", max_chars=1000)
    assert len(body) <= 1000
    assert "job summary of its workflow run" in body and "xxxx" not in body
