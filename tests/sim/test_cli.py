"""`python -m flysim` prints what a client needs, serves it, and cleans up on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx


def start_cli(*args: str) -> tuple[subprocess.Popen[str], dict[str, str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "flysim", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    values: dict[str, str] = {}
    lines: list[str] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if "=" in line and not line.startswith("#"):
            key, _, value = line.strip().partition("=")
            values[key] = value
        if line.startswith("# Ctrl-C"):
            return proc, values, lines
    proc.kill()
    raise AssertionError(
        f"the CLI did not come up: {lines} {proc.stderr.read() if proc.stderr else ''}"
    )


def stop_cli(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=15)


def test_cli_serves_both_apis_with_faults_and_exits_on_sigterm() -> None:
    proc, values, _ = start_cli(
        "--no-postgres", "--app", "my-db", "--machines", "2", "--token", "fo1_cli",
        "--fail-next", "1", "--fail-path", "/machines", "--public-port-map", "5432:0",
    )  # fmt: skip
    try:
        auth = {"Authorization": "Bearer fo1_cli"}
        machines = f"{values['FLY_FLAPS_BASE_URL']}/v1/apps/my-db/machines"
        assert values["FLY_API_TOKEN"] == "fo1_cli"
        assert httpx.get(machines, headers=auth).status_code == 503
        assert len(httpx.get(machines, headers=auth).json()) == 2
        graphql = httpx.post(
            f"{values['FLY_API_BASE_URL']}/graphql",
            json={"query": '{ app(name: "my-db") { role { name } } }'},
            headers=auth,
        )
        assert graphql.json()["data"]["app"]["role"]["name"] == "postgres_cluster"
    finally:
        assert stop_cli(proc) == 0


def test_cli_switches_rate_limits_off_and_arms_timeouts_and_unreachable_hosts() -> None:
    proc, values, _ = start_cli(
        "--no-postgres", "--machines", "2", "--no-rate-limits", "--unreachable", "1",
        "--timeout-next", "1", "--timeout-path", "/ip_assignments", "--timeout-method", "POST",
        "--timeout-after-commit", "--public-port-map", "5432:0",
    )  # fmt: skip
    try:
        auth = {"Authorization": "Bearer fo1_testtoken"}
        app = f"{values['FLY_FLAPS_BASE_URL']}/v1/apps/my-db"
        lists = [httpx.get(f"{app}/machines", headers=auth) for _ in range(6)]
        assert {r.status_code for r in lists} == {200}  # more than a burst of 3
        hosts = sorted(m["host_status"] for m in lists[0].json())
        assert hosts == ["ok", "unreachable"]
        timed_out = httpx.post(f"{app}/ip_assignments", json={"type": "v4"}, headers=auth)
        assert timed_out.status_code == 408
        listed = httpx.get(f"{app}/ip_assignments", headers=auth).json()["ips"]
        assert any("." in ip["ip"] and not ip["shared"] for ip in listed)  # it landed
    finally:
        assert stop_cli(proc) == 0


def test_cli_arms_a_malformed_answer() -> None:
    proc, values, _ = start_cli(
        "--no-postgres", "--machines", "2", "--public-port-map", "5432:0",
        "--malformed-next", "1", "--malformed-path", "/machines", "--malformed-method", "GET",
        "--malformed-at", "0.id", "--malformed-value", "42",
    )  # fmt: skip
    try:
        auth = {"Authorization": "Bearer fo1_testtoken"}
        machines = f"{values['FLY_FLAPS_BASE_URL']}/v1/apps/my-db/machines"
        assert httpx.get(machines, headers=auth).json()[0]["id"] == 42
        assert isinstance(httpx.get(machines, headers=auth).json()[0]["id"], str)
    finally:
        assert stop_cli(proc) == 0


def test_cli_with_postgres_prints_an_internal_url_and_leaves_no_server_behind() -> None:
    proc, values, lines = start_cli(
        "--app", "my-db", "--machines", "1", "--public-port-map", "5432:0"
    )
    try:
        assert values["DATABASE_URL"].startswith("postgres://my_db:")
        assert values["DATABASE_URL"].endswith("@my-db.flycast:5432/my_db?sslmode=disable")
        header = next(line for line in lines if line.startswith("# PostgreSQL"))
        port = int(header.split(":")[1].split()[0])
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        assert stop_cli(proc) == 0
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        pass
    else:
        raise AssertionError("PostgreSQL still listens after the CLI exited")
    leftovers = [
        pid
        for pid in os.listdir("/proc")
        if pid.isdigit() and f"-p\0{port}\0".encode() in _cmdline(pid)
    ]
    assert leftovers == []


def _cmdline(pid: str) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""
