from __future__ import annotations

import tomllib

from fly_pg_external.fly import flytoml

from machines_data import machine


def test_render_matches_fly_config_save_shape() -> None:
    text = flytoml.render("my-db", machine("m1")["config"])
    doc = tomllib.loads(text)
    assert doc["app"] == "my-db" and doc["primary_region"] == "iad"
    assert doc["mounts"] == [{"source": "pg_data", "destination": "/data"}]
    assert [s["internal_port"] for s in doc["services"]] == [5432, 5433]
    assert doc["services"][0]["ports"] == [{"port": 5432, "handlers": ["pg_tls"]}]
    assert doc["services"][0]["auto_start_machines"] is False
    assert set(doc["checks"]) == {"pg", "role", "vm"}
    assert doc["metrics"] == [{"port": 9187, "path": "/metrics"}]
    assert "image" not in doc and "metadata" not in text


def test_most_common_config_wins() -> None:
    a, b = machine("m1")["config"], machine("m2", legacy=True)["config"]
    assert "services" in flytoml.render_most_common("x", [a, b, a])
    assert "services" not in flytoml.render_most_common("x", [b, a, b])


def test_diff_is_empty_when_equal_and_unified_otherwise() -> None:
    assert flytoml.unified_diff("a\n", "a\n") == ""
    diff = flytoml.unified_diff("a\n", "a\nb\n")
    assert diff.splitlines()[:2] == ["--- fly.toml (current)", "+++ fly.toml (after)"]
    assert "+b" in diff
