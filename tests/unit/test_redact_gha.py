from __future__ import annotations

import base64
import io
from pathlib import Path
from urllib.parse import quote

from fly_pg_external.flytoken import parse_token, strip_scheme
from fly_pg_external.gha import Actions
from fly_pg_external.redact import Redactor


def test_redactor_hides_raw_percent_encoded_and_base64_forms() -> None:
    secret = "p@ss:w/rd+1"
    r = Redactor([secret])
    for form in (
        secret,
        quote(secret, safe=""),
        quote(secret, safe="").lower(),
        base64.b64encode(secret.encode()).decode(),
        base64.urlsafe_b64encode(secret.encode()).decode().rstrip("="),
    ):
        assert r.redact(f"before {form} after") == "before *** after"


def test_empty_secret_is_ignored() -> None:
    r = Redactor(["", "abcd"])
    assert r.redact("x abcd y") == "x *** y"


def actions(tmp_path: Path) -> tuple[Actions, io.StringIO]:
    out = io.StringIO()
    (tmp_path / "out").touch()
    env = {"GITHUB_OUTPUT": str(tmp_path / "out"), "GITHUB_STEP_SUMMARY": str(tmp_path / "sum")}
    return Actions(env, out=out), out


def test_outputs_are_heredocs_with_random_delimiters(tmp_path: Path) -> None:
    gha, _ = actions(tmp_path)
    gha.set_output("config-diff", "line1\nline2")
    text = (tmp_path / "out").read_text()
    head, body = text.split("\n", 1)
    assert head.startswith("config-diff<<ghadelimiter_")
    assert body == "line1\nline2\n" + head.split("<<")[1] + "\n"


def test_mask_is_registered_before_use_and_redacted_from_logs(tmp_path: Path) -> None:
    gha, out = actions(tmp_path)
    gha.add_mask("hunter2-secret")
    gha.info("connecting with hunter2-secret")
    gha.warning("bad hunter2-secret\n::add-mask::x")
    lines = out.getvalue().splitlines()
    assert lines[0] == "::add-mask::hunter2-secret"
    assert "hunter2-secret" not in "\n".join(lines[1:])
    assert lines[2] == "::warning::bad ***%0A::add-mask::x"  # newline escaped: no injection


def test_untrusted_text_cannot_issue_commands(tmp_path: Path) -> None:
    gha, out = actions(tmp_path)
    gha.info("error from API:\n::set-output name=x::y")
    lines = out.getvalue().splitlines()
    token = lines[0].removeprefix("::stop-commands::")
    assert lines[0].startswith("::stop-commands::") and len(token) >= 16
    assert lines[-1] == f"::{token}::"


def test_inputs_read_with_hyphens_and_underscores() -> None:
    gha = Actions({"INPUT_IP-VERSIONS": "v4", "INPUT_WAIT_TIMEOUT": "5"}, out=io.StringIO())
    assert gha.input("ip-versions") == "v4"
    assert gha.input("wait-timeout") == "5"
    assert gha.input("host") is None


def test_summary_is_appended_as_given(tmp_path: Path) -> None:
    # The report reaches the summary already redacted (at the Outcome) and sized (report.fit):
    # appending neither scrubs nor cuts it a second time.
    gha, out = actions(tmp_path)
    big = "# report\n" + "x" * (1024 * 1024)
    gha.append_summary(big)
    gha.append_summary("second")
    assert (tmp_path / "sum").read_text() == big + "\nsecond\n"
    assert out.getvalue() == ""
    Actions({}, out=out).append_summary("nowhere to go")  # outside Actions: nothing happens


def test_token_scheme_rule_follows_fly_go() -> None:
    auth = parse_token("FlyV1 fm2_aaa,fm2_bbb")
    assert auth.flaps_header == "FlyV1 fm2_aaa,fm2_bbb"
    oauth = parse_token("Bearer fo1_xyz")
    assert oauth.graphql_header == "Bearer fo1_xyz" and oauth.flaps_header == "Bearer fo1_xyz"
    mixed = parse_token("fm1r_m,fo1_o")
    assert mixed.graphql_header == "FlyV1 fm1r_m,fo1_o"
    assert mixed.flaps_header == "FlyV1 fm1r_m"
    assert strip_scheme("bearer FlyV1  fo1_x") == "fo1_x"
    assert set(mixed.secrets) >= {"fm1r_m", "fo1_o", "fm1r_m,fo1_o"}


def test_a_group_inside_a_group_is_a_title_line_not_a_second_group() -> None:
    # The runner does not nest groups: an inner ::group:: would end the outer one early.
    out = io.StringIO()
    gha = Actions(env={}, out=out)
    with gha.group("Close"), gha.group("Verify"):
        gha.info("inside")
    assert out.getvalue().splitlines() == ["::group::Close", "── Verify", "inside", "::endgroup::"]
