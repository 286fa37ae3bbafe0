"""`python scripts/render_comment.py`: the pull request comment as GitHub shows it.

Runs the action (`python entrypoint.py`, as the runner does) against the local Fly simulator and a
fake GitHub API, twice on one legacy cluster (3 postgres-flex machines without the pg_tls service
and without public addresses):

1. the plan: a `pull_request` run with `dry-run: true`, which creates the PR comment;
2. the applied follow-up: a `push` of the merge commit without `dry-run`, which edits it.

Each comment body, as the fake GitHub stored it, is rendered with cmark-gfm (`cmarkgfm`, GitHub's
own Markdown library, with the options GitHub uses for comments) into a page styled with
github-markdown-css at the width of a comment in a 1280 px window, and screenshotted with headless
Chromium. Writes docs/comment/{plan,applied}-legacy.{md,html,png} and prints the height of each
rendered comment, measured in the browser (the comment box's `getBoundingClientRect().height`,
read back with `--dump-dom`).

As root, the runs happen in private network and mount namespaces (`unshare`), where
`<app>.fly.dev` resolves to the simulator and its public IPv4 addresses come from a routable
/24, so the comments show what they would show on a real cluster (the IPv6 is the simulator's
`::1`). Otherwise, or with `--no-netns`, the host is `localhost` and the addresses loopback
ones. Needs PostgreSQL binaries (as the tests do) and `chromium` (`apt-get install -y chromium`).
Exits 1 when a comment is taller than `SCREEN_BUDGET`.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fakegithub import FakeGitHub  # noqa: E402
from flysim import PostgresServer, Simulator  # noqa: E402

OUT = ROOT / "docs" / "comment"
STYLE = OUT / "github-markdown-light.css"

APP = "acme-db"
REPO = "acme/infra"
PR = 42
FLY_TOKEN = "fo1_render_comment_token_not_real"
GH_TOKEN = "ghs_RenderCommentFakeToken0000000000"
USER, PASSWORD, DATABASE = "acme", "render-Pa55word", "acme"
HEAD_SHA = "9fceb02d0ae598e95dc970b74767f19372d61af8"
MERGE_SHA = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
# A /24 routed to loopback inside the private network, so the simulator's public IPv4
# addresses look like Fly's (only inside the namespace; see `_enter_private_network`).
PUBLIC_V4_PREFIX = "137.66.20"
NETNS_FLAG = "FLY_PG_EXTERNAL_RENDER_NETNS"

# GitHub's comment column in a 1280 px window: the comment box is about 880 px wide.
WINDOW_WIDTH = 1280
COMMENT_WIDTH = 880
# What "fits one screen" means here: the whole comment box, header included.
SCREEN_BUDGET = 900


# -- the network the runs see -----------------------------------------------------------------


def _enter_private_network(*, allowed: bool) -> bool:
    """Re-run this script in new network and mount namespaces when root (True: this process is
    the one inside; it has `lo` up, the public /24 routed to it and `<app>.fly.dev` in
    /etc/hosts). False when that is not possible or not `allowed`: the runs then use
    `localhost` and the simulator's loopback addresses."""
    if os.environ.get(NETNS_FLAG) == "inside":
        return True
    if not allowed or os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    env = {**os.environ, NETNS_FLAG: "inside"}
    cmd = ["unshare", "--net", "--mount", "--", sys.executable, __file__, *sys.argv[1:]]
    raise SystemExit(subprocess.run(cmd, env=env, check=False).returncode)


def _setup_private_network(tmp: Path) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    route = ["ip", "route", "add", "local", f"{PUBLIC_V4_PREFIX}.0/24", "dev", "lo"]
    subprocess.run([*route, "table", "local"], check=True)
    hosts = tmp / "hosts"
    hosts.write_text(f"127.0.0.1 localhost {APP}.fly.dev\n::1 localhost ip6-localhost\n")
    subprocess.run(["mount", "--bind", str(hosts), "/etc/hosts"], check=True)


# -- the two runs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    name: str
    event: str
    payload: dict[str, object]
    sha: str
    run_id: str
    inputs: dict[str, str]


def _action_env(
    run: Run, sim: Simulator, fake: FakeGitHub, tmp: Path, *, host: str
) -> dict[str, str]:
    where = tmp / run.name
    where.mkdir()
    (where / "output").touch()
    (where / "summary").touch()
    event = where / "event.json"
    event.write_text(json.dumps(run.payload))
    internal = f"postgres://{USER}:{PASSWORD}@{APP}.flycast:5432/{DATABASE}?sslmode=disable"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("INPUT_", "GITHUB_", "FLY_", "STATE_", "RUNNER_"))
    }
    env.update(
        {
            "GITHUB_ACTIONS": "true",
            "GITHUB_OUTPUT": str(where / "output"),
            "GITHUB_STEP_SUMMARY": str(where / "summary"),
            "GITHUB_EVENT_NAME": run.event,
            "GITHUB_EVENT_PATH": str(event),
            "GITHUB_REPOSITORY": REPO,
            "GITHUB_API_URL": fake.base_url,
            # Only the footer's run link is built from it: point it where a reader's would.
            "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_RUN_ID": run.run_id,
            "GITHUB_SHA": run.sha,
            # The runner's temp directory, as on a GitHub-hosted runner.
            "RUNNER_TEMP": str(where / "_temp"),
            "FLY_API_BASE_URL": sim.api_base_url,
            "FLY_FLAPS_BASE_URL": sim.flaps_base_url,
            "INPUT_APP": APP,
            "INPUT_FLY-API-TOKEN": FLY_TOKEN,
            "INPUT_GITHUB-TOKEN": GH_TOKEN,
            "INPUT_DATABASE-URL": internal,
            "INPUT_IP-VERSIONS": "v4,v6",
            "INPUT_VERIFY": "true",
            "INPUT_PR-COMMENT": "true",
        }
    )
    if host != f"{APP}.fly.dev":
        env["INPUT_HOST"] = host
    env.update({f"INPUT_{k.upper()}": v for k, v in run.inputs.items()})
    return env


def _run_action(run: Run, env: dict[str, str], cwd: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "entrypoint.py")],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"the {run.name} run failed (exit {proc.returncode})")


def produce_bodies(tmp: Path, *, private_network: bool) -> dict[str, str]:
    """The plan comment and the applied one, as the fake GitHub stored them."""
    host = f"{APP}.fly.dev" if private_network else "localhost"
    pr_payload = {
        "action": "synchronize",
        "number": PR,
        "pull_request": {
            "number": PR,
            "head": {"sha": HEAD_SHA, "repo": {"full_name": REPO}},
            "base": {"sha": "b" * 40, "repo": {"full_name": REPO}},
        },
    }
    runs = [
        Run("plan-legacy", "pull_request", pr_payload, HEAD_SHA, "8801", {"dry-run": "true"}),
        Run("applied-legacy", "push", {"after": MERGE_SHA}, MERGE_SHA, "8802", {}),
    ]
    bodies: dict[str, str] = {}
    with PostgresServer.start() as pg:
        pg.create_database(USER, PASSWORD, DATABASE)
        sim = Simulator(
            token=FLY_TOKEN,
            postgres=pg,
            restart_seconds=0.3,
            check_grace_seconds=0.2,
            seed=16,
            v4_prefix=PUBLIC_V4_PREFIX if private_network else None,
        )
        sim.add_app(APP, machines=3, legacy=True, region="ams")
        with sim, FakeGitHub(user_endpoint_forbidden=True, token=GH_TOKEN) as fake:
            fake.add_pr(REPO, PR, head_sha=HEAD_SHA)
            for run in runs:
                if run.event == "push":  # the pull request was merged in between
                    fake.add_pr(
                        REPO, PR, head_sha=HEAD_SHA, merge_commit_sha=MERGE_SHA, merged=True
                    )
                env = _action_env(run, sim, fake, tmp, host=host)
                _run_action(run, env, tmp / run.name)
                [comment] = fake.comments(REPO, PR)
                bodies[run.name] = comment.body
    return bodies


# -- rendering --------------------------------------------------------------------------------


def to_html(markdown: str) -> str:
    """The comment's HTML as GitHub makes it: cmark-gfm with the GFM extensions, a newline inside
    a paragraph a line break (as in every issue and pull request comment), raw HTML kept (GitHub
    sanitises it afterwards; the report only writes <details>, <summary>, <code> and <sub>)."""
    import cmarkgfm
    from cmarkgfm.cmark import Options

    html = cmarkgfm.github_flavored_markdown_to_html(
        markdown, options=Options.CMARK_OPT_UNSAFE | Options.CMARK_OPT_HARDBREAKS
    )
    return str(html)  # cmarkgfm has no type hints


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<link rel="stylesheet" href="{style}">
<style>
{frame}
</style></head>
<body><div class="timeline"><div class="avatar">🤖</div>
<div class="comment" id="comment">
<div class="comment-header"><strong>github-actions</strong> <span class="bot">bot</span>
commented</div>
<div class="markdown-body">
{body}
</div></div></div>
{script}</body></html>
"""

_FRAME = f"""
body {{ margin: 0; background: #fff; font-family: -apple-system, BlinkMacSystemFont, "Segoe UI",
  "Noto Sans", Helvetica, Arial, sans-serif, "Apple Color Emoji", "Segoe UI Emoji"; }}
.timeline {{ display: flex; gap: 16px; padding: 16px 24px; width: {COMMENT_WIDTH + 56}px; }}
.avatar {{ width: 40px; height: 40px; border-radius: 50%; background: #f6f8fa; flex: none;
  display: flex; align-items: center; justify-content: center; font-size: 22px; }}
.comment {{ width: {COMMENT_WIDTH}px; border: 1px solid #d1d9e0; border-radius: 6px;
  box-sizing: border-box; }}
.comment-header {{ background: #f6f8fa; border-bottom: 1px solid #d1d9e0; padding: 8px 16px;
  font-size: 14px; color: #59636e; border-radius: 6px 6px 0 0; }}
.comment-header strong {{ color: #1f2328; }}
.bot {{ border: 1px solid #d1d9e0; border-radius: 2em; padding: 0 6px; font-size: 12px; }}
.markdown-body {{ padding: 16px; font-size: 14px; }}
"""

# Run by Chromium when measuring: the comment box's height lands in the dumped DOM.
_MEASURE = """<script>
document.body.dataset.height =
  String(Math.ceil(document.getElementById("comment").getBoundingClientRect().height));
</script>"""


def page(markdown: str, title: str, *, measure: bool = False) -> str:
    """The comment in a page; the stylesheet is linked (next to the saved pages, by its name;
    from the measuring copy in a temporary directory, by its full path)."""
    return _PAGE.format(
        title=html.escape(title),
        style=html.escape(STYLE.as_uri() if measure else STYLE.name),
        frame=_FRAME,
        body=to_html(markdown),
        script=_MEASURE if measure else "",
    )


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    raise SystemExit("chromium not found: apt-get install -y chromium")


def _chromium_run(args: list[str]) -> str:
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    if proc.returncode != 0:
        raise SystemExit(f"chromium failed: {proc.stderr[-2000:]}")
    return proc.stdout


def measure(markdown: str, tmp: Path) -> int:
    """The rendered comment box's height in CSS px, as Chromium lays it out."""
    probe = tmp / "measure.html"
    probe.write_text(page(markdown, "measure", measure=True), encoding="utf-8")
    dom = _chromium_run([f"--window-size={WINDOW_WIDTH},1000", "--dump-dom", probe.as_uri()])
    m = re.search(r'data-height="(\d+)"', dom)
    if not m:
        raise SystemExit("could not read the rendered height back from Chromium")
    return int(m.group(1))


def screenshot(html_path: Path, png: Path, height: int) -> None:
    # 16 px of page padding above and below the comment box.
    size = f"--window-size={WINDOW_WIDTH},{height + 32}"
    _chromium_run([size, f"--screenshot={png}", html_path.as_uri()])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="where to write (docs/comment)")
    parser.add_argument(
        "--no-netns",
        action="store_true",
        help="stay in this network (host localhost) instead of private namespaces",
    )
    args = parser.parse_args()
    private_network = _enter_private_network(allowed=not args.no_netns)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="render-comment-") as name:
        tmp = Path(name)
        if private_network:
            _setup_private_network(tmp)
        bodies = produce_bodies(tmp, private_network=private_network)
        heights: dict[str, int] = {}
        for run_name, body in bodies.items():
            (out / f"{run_name}.md").write_text(body, encoding="utf-8")
            html_path = out / f"{run_name}.html"
            html_path.write_text(page(body, f"{run_name}: PR comment"), encoding="utf-8")
            heights[run_name] = measure(body, tmp)
            screenshot(html_path, out / f"{run_name}.png", heights[run_name])
    for run_name, height in heights.items():
        fits = "fits" if height <= SCREEN_BUDGET else "does NOT fit"
        print(f"{run_name}: {height} px tall ({fits} {SCREEN_BUDGET} px)  {out / run_name}.png")
    return 0 if all(h <= SCREEN_BUDGET for h in heights.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
