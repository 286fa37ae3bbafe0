"""docs/benchmarks.md's container section: the saved figures read back, rendered, and spliced
into a report without touching the rest; no Docker involved."""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `bench` lives at the repository root, next to src/
    sys.path.insert(0, str(ROOT))

from bench import container  # noqa: E402
from bench.cli import main as bench_main  # noqa: E402

FIGURES: dict[str, Any] = {
    "schema": 1,
    "base_image": "fly-pg-external-standin-base:py3-bookworm",
    "standin": True,
    "python": "Python 3.11.2",
    "docker": "20.10.24",
    "cpus": 2,
    "runs": 3,
    "machines": 3,
    "latency": 0.05,
    "between_steps": 3.0,
    "size_method": "every layer gzip-compressed",
    "base_layers": {"count": 1, "tar_bytes": 183_000_000, "gzip_bytes": 65_000_000},
    "action_layers": {"count": 6, "tar_bytes": 35_200_000, "gzip_bytes": 10_400_000},
    "build_seconds": 7.5,
    "seconds": {
        "bare_start": [0.5, 0.52, 0.6],
        "bad_input": [0.7, 0.77, 0.8],
        "dry_run": [0.6, 0.65, 0.7],
        "main": [1.1, 1.19, 1.3],
        "post": [1.0, 1.09, 1.2],
        "noop_main": [0.7, 0.74, 0.9],
        "noop_post": [0.4, 0.43, 0.5],
    },
    "requests": {"main": [11, 11, 11], "post": [11, 11, 12], "noop_main": [2, 2, 2]},
}

REPORT = "\n".join(
    [
        "# Benchmarks",
        "",
        "## Start-up",
        "",
        "| What | Time |",
        "",
        "## How it is measured",
        "",
        "- Requests: ...",
        "",
    ]
)


def test_section_shows_sizes_steps_and_the_standin_caveat() -> None:
    text = "\n".join(container.section(container.parse(FIGURES)))
    assert text.startswith(container.HEADING + "\n")
    assert "| The base | 1 | 183.0 MB | **65.0 MB** |" in text
    assert "| The action's layers on top | 6 | 35.2 MB | **10.4 MB** |" in text
    assert "| Whole image | 7 | 218.2 MB | **75.4 MB** |" in text
    assert "stand-in for python:3.12-slim" in text and "not python:3.12-slim" in text
    assert (
        "first `lifetime: job` expose of a current cluster, verify on | 1.19 s (1.10-1.30) | 11 |"
        in text
    )
    assert (
        "releases the addresses, checks they are closed | 1.09 s (1.00-1.20) | 11 (11-12) |" in text
    )
    assert "| Both steps of a job, first exposure (sum of the medians) | 2.28 s | |" in text
    assert "| Both steps of a job, no-op (sum of the medians) | 1.17 s | |" in text
    assert "**7.5 s**" in text and "3 run(s) each" in text and "50 ms" in text
    assert "start 3 s apart" in text


def test_a_real_base_is_named_without_the_caveat() -> None:
    data = {**FIGURES, "standin": False, "base_image": "python:3.12-slim"}
    text = "\n".join(container.section(container.parse(data)))
    assert "`python:3.12-slim` (Python 3.11.2)" in text
    assert "stand-in" not in text


def test_one_run_shows_no_range() -> None:
    data = copy.deepcopy(FIGURES)
    data["seconds"] = {k: v[:1] for k, v in data["seconds"].items()}
    text = "\n".join(container.section(container.parse(data)))
    assert "verify on | 1.10 s | 11 |" in text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema": 2}, "schema 1"),
        ({"seconds": {"main": [1.0]}}, "no timings of bare_start"),
        ({"base_layers": None}, "base_layers"),
        ({"build_seconds": None}, "TypeError"),
    ],
)
def test_figures_that_do_not_fit_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        container.parse({**FIGURES, **change})
    data = dict(FIGURES)
    del data["runs"]
    with pytest.raises(ValueError, match="KeyError"):
        container.parse(data)


def test_splice_inserts_then_replaces_only_the_section() -> None:
    first = container.splice(REPORT, container.unavailable("no Docker daemon answers."))
    assert first.index("## Start-up") < first.index(container.HEADING)
    assert first.index(container.HEADING) < first.index("## How it is measured")
    assert "Not measured in this run: no Docker daemon answers." in first
    again = container.splice(first, container.section(container.parse(FIGURES)))
    assert "Not measured" not in again and "**75.4 MB**" in again
    # Everything outside the section is as it was.
    head, _, rest = again.partition(container.HEADING)
    assert head == REPORT.partition("## How it is measured")[0]
    assert rest[rest.index("## How it is measured") :] == REPORT[REPORT.index("## How it is m") :]
    assert container.splice("# Benchmarks\n", ["## What a job pays for the container", ""]) == (
        "# Benchmarks\n\n## What a job pays for the container\n"
    )


def test_a_failed_measurement_becomes_the_reason_in_the_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "measure.py"
    script.write_text("import sys\nprint('details', file=sys.stderr)\nsys.exit('no Docker here')\n")
    monkeypatch.setattr(container, "SCRIPT", script)
    lines = container.report_lines(1, tmp_path / "saved.json")
    assert "Not measured in this run: scripts/measure_container.py failed: no Docker here" in lines
    assert "Not measured in this run: not asked for" in container.report_lines(0, tmp_path / "x")[2]


def test_container_only_rewrites_that_section_from_saved_figures(tmp_path: Path) -> None:
    (tmp_path / "benchmarks.md").write_text(REPORT, encoding="utf-8")
    saved = tmp_path / "container.json"
    saved.write_text(json.dumps(FIGURES), encoding="utf-8")
    code = bench_main(["--container-only", "--container-from", str(saved), "--out", str(tmp_path)])
    assert code == 0
    written = (tmp_path / "benchmarks.md").read_text(encoding="utf-8")
    assert written == container.splice(REPORT, container.section(container.parse(FIGURES)))


def test_layer_sizes_are_the_gzip_of_each_tar_and_its_diff_id() -> None:
    import container_size  # scripts/ is on sys.path (tests/conftest.py)

    data = b"layer " * 100_000
    diff_id, raw, packed = container_size._compress(io.BytesIO(data))
    assert diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert raw == len(data)
    assert len(gzip.compress(data, compresslevel=6)) - 32 <= packed <= len(gzip.compress(data)) + 32
    sizes = {"a": (10, 4), "b": (20, 7)}
    # A layer listed twice is one blob in a registry.
    assert container_size._total(["a", "b", "a"], sizes) == container_size.Layers(2, 30, 11)
    with pytest.raises(RuntimeError, match="left out layer c"):
        container_size._total(["c"], sizes)
