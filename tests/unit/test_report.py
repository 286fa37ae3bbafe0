"""The markdown report: what it says for each outcome, and that it stays safe and within limits."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from fly_pg_external.outcome import IpChange, MachineChange, Outcome, VerifyResult, redacted
from fly_pg_external.redact import Redactor, secret_forms
from fly_pg_external.report import (
    GITHUB_COMMENT_LIMIT,
    SUMMARY_MAX_BYTES,
    comment_body,
    content_digest,
    fit,
    parse_marker,
    render_markdown,
    render_marker,
    summary_markdown,
)
from fly_pg_external.report_sections import fenced, inline_code

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


def machines(result: str = "pending", image_after: str = IMG) -> list[MachineChange]:
    return [
        MachineChange("m-replica", "fra", "replica", "started", True, IMG, image_after, result),  # type: ignore[arg-type]
        MachineChange("m-primary", "fra", "primary", "started", True, IMG, image_after, result),  # type: ignore[arg-type]
    ]


def plan_outcome(**kw: object) -> Outcome:
    base = Outcome(
        app="my-pg",
        mode="plan",
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
    service = table_row(text, "`pg_tls` service on port 5432")
    assert "2 of 2 machines" in service
    assert "added on 2 machines on apply" in service
    assert "unchanged" in table_row(text, "Image")
    assert "primary last" in table_row(text, "Machines restarted")


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
    assert "2 of 2, one at a time, primary last" in table_row(text, "Machines restarted")
    assert "✅ updated" in text


def test_warns_about_ipv4_billing_and_restarts_in_a_plan() -> None:
    text = render_markdown(plan_outcome(), commit=SHA, run_url=RUN)
    assert "**Billing:**" in text
    assert "billed" in text or "bills" in text
    assert "**Restarts:**" in text
    assert "restarts 2 Postgres machines" in text


def test_no_billing_warning_when_the_ipv4_already_exists() -> None:
    outcome = plan_outcome(ips=[IpChange("v4", "keep", ("137.66.1.2",))], machines=[])
    text = render_markdown(outcome, commit=SHA, run_url=RUN)
    assert "**Billing:**" not in text
    assert "**Restarts:**" not in text


def test_outcome_warnings_are_shown_as_text_not_html() -> None:
    outcome = plan_outcome(warnings=["IPv6 is not routable </details><script>x</script>"])
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
    assert "1 of 2 updated, 1 rolled back" in table_row(text, "Machines restarted")
    assert "↩️ rolled back" in text


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
    assert "**External connection string**" not in text


def test_verify_results_are_listed() -> None:
    outcome = applied_outcome(
        verify=[
            VerifyResult("137.66.1.2:5432", True, "TLSv1.3", server_version="16.4"),
            VerifyResult("[2a09:8280::1]:5432", False, "network unreachable", warning_only=True),
        ]
    )
    text = render_markdown(outcome, commit=SHA, run_url=RUN)
    assert "✅ `137.66.1.2:5432`: TLSv1.3, PostgreSQL 16.4" in text
    assert "⚠️ `[2a09:8280::1]:5432`: network unreachable (not counted as a failure)" in text


# -- connection string ------------------------------------------------------------------------


def test_connection_string_shows_the_password_as_stars() -> None:
    text = render_markdown(plan_outcome(), commit=SHA, run_url=RUN)
    assert f"`{URL}`" in text
    assert "after apply, password hidden" in text


def test_a_clear_text_password_in_the_url_is_still_hidden() -> None:
    outcome = plan_outcome(redacted_url="postgres://app:hunter2@my-pg.fly.dev:5432/db")
    text = render_markdown(outcome, commit=SHA, run_url=RUN)
    assert "hunter2" not in text
    assert "postgres://app:***@my-pg.fly.dev:5432/db" in text


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
    outcome = plan_outcome(warnings=["w" * 1500] * 100)
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
    outcome = plan_outcome(warnings=["ü" * 1500] * 100)
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
        warnings=[f"flyctl said {leaky}"],
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


# -- the README's example -----------------------------------------------------------------------


def readme_example() -> str:
    """The plan comment shown in README.md's "Pull request comment" section."""
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
        mode="plan",
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


def test_readme_example_is_what_the_renderer_writes() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("<!-- section:pr-comment -->")[1]
    section = section.split("<!-- /section:pr-comment -->")[0]
    quoted = [line for line in section.splitlines() if line.startswith(">")]
    shown = "\n".join(line[2:] if line.startswith("> ") else "" for line in quoted).strip()
    expected = readme_example().strip()
    fresh = "\n".join(f"> {line}" if line else ">" for line in expected.splitlines())
    assert shown == expected, f"README example is stale; replace the quoted block with:\n{fresh}"
