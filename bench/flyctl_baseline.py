"""The baseline: the API calls flyctl makes for Fly's documented manual steps, replayed over HTTP.

A shell step that installs flyctl and follows Fly's "External Connections" guide runs

    fly ips list                # 2 GraphQL queries
    fly ips allocate-v4 --yes   # allocateIpAddress {type: v4}
    fly ips allocate-v6         # allocateIpAddress {type: v6}
    fly config save             # FlyctlConfigCurrentRelease, GET /machines
    fly image show              # GetAppCompact, GET /machines, latestImageDetails ×n
    fly deploy --image flyio/postgres-flex:<major>   # the rolling update, below
    fly services list           # GET /machines

This module sends the same requests, in the same order and with the same concurrency, as flyctl
does for each command (docs: fly-api.md §2, §4, §5.4 and §6, which cite flyctl and fly-go):

`fly deploy` reads the app (`GET /v1/apps/{app}`), resolves the image remotely (GraphQL
`ResolveImageForApp`), creates a release and marks it running (GraphQL), lists the machines,
leases every machine in parallel (TTL 13 s) and refreshes each lease in the background every
(13 - 1) / 3 = 4 s with the same nonce. It then updates the machines sorted by ID: the first one
alone, the rest in a pool of ceil(0.33 · n) at a time (`--max-unavailable` 0.33). Each machine:
`POST /machines/{id}` with the lease nonce, `GET …/wait?state=started`, the smoke check (GET the
machine with a 0.5-2 s backoff for 10 s, looking for a crash loop) and the health check wait (GET
until every check passes, with a backoff from half the shortest check interval). Finally it
releases every lease in parallel and marks the release complete. Every machine is updated, and so
restarted, because the new release metadata alone changes every machine's config.

What is left out makes the baseline cheaper than the real thing: flyctl's own start-up for each
of the seven commands, the DNS propagation check of `fly deploy` (A/AAAA lookups at 8.8.8.8, up
to 60 s), secrets and feature-flag lookups, and the installation of flyctl itself.

The GraphQL operations the simulator does not model (`latestImageDetails`, the `image(ref:)`
lookup, the release mutations) are sent anyway: the simulator answers them with a validation
error, which costs the same round trip. Their answers are not needed to continue.

The replay is a script that can be re-run: it allocates an IP family only when `fly ips list`
does not show one already (the guard any re-runnable script needs, and one more point in the
baseline's favour).
"""

from __future__ import annotations

import copy
import json
import math
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx

FLYCTL_USER_AGENT = "flyctl/v0.3.45"
NONCE_HEADER = "fly-machine-lease-nonce"
# fly deploy (internal/command/deploy/machines.go): lease TTL 13 s, refreshed every (ttl - 1s)/3.
DEPLOY_LEASE_TTL = 13
DEPLOY_LEASE_REFRESH = (DEPLOY_LEASE_TTL - 1) / 3
DEFAULT_MAX_UNAVAILABLE = 0.33
# WaitForSmokeChecksToPass (internal/machine/leasable_machine.go): 10 s of GETs, 0.5-2 s backoff.
SMOKE_CHECK_SECONDS = 10.0
WAIT_TIMEOUT = 300.0

# -- GraphQL documents, as fly-go / genqlient send them (fly-api.md §2, §4, §6) ------------------

IPS_LIST = (
    "query ($appName: String!) { app(name: $appName) { ipAddresses { nodes { id address type "
    "region createdAt network { name organization { slug } } serviceName } } sharedIpAddress } }"
)
EGRESS_IPS_LIST = (
    "query ($appName: String!) { app(name: $appName) { egressIpAddresses { nodes { id ip version "
    "region updatedAt } } } }"
)
ALLOCATE = (
    "mutation($input: AllocateIPAddressInput!) { allocateIpAddress(input: $input) { "
    "ipAddress { id address type region createdAt } } }"
)
CONFIG_CURRENT_RELEASE = (
    "query FlyctlConfigCurrentRelease($appName: String!) { app(name: $appName) { "
    "currentReleaseUnprocessed { configDefinition } } }"
)
GET_APP_COMPACT = (
    "query ($appName: String!) { appcompact:app(name: $appName) { id internalNumericId name "
    "hostname cnameTarget deployed network status appUrl platformVersion organization { id "
    "internalNumericId slug paidPlan } postgresAppRole: role { name } } }"
)
LATEST_IMAGE_DETAILS = (
    "query($image: String!, $flyVersion: String) { latestImageDetails(image: $image, "
    "flyVersion: $flyVersion) { registry repository tag version digest } }"
)
RESOLVE_IMAGE_FOR_APP = (
    "query ($appName: String!, $imageRef: String!) { app(name: $appName) { id name image(ref: "
    "$imageRef) { id digest ref compressedSize: compressedSizeFull manifest } } }"
)
CREATE_RELEASE = (
    "mutation CreateRelease($input: CreateReleaseInput!) { createRelease(input: $input) { "
    "release { id version } } }"
)
UPDATE_RELEASE = (
    "mutation UpdateRelease($input: UpdateReleaseInput!) { updateRelease(input: $input) { "
    "release { id } } }"
)

# The [[services]] block Fly's "External Connections" guide has users add to fly.toml when the
# saved config has none (a legacy cluster), as flyctl turns it into a machine service.
DOC_SERVICE: dict[str, Any] = {
    "protocol": "tcp",
    "internal_port": 5432,
    "ports": [{"port": 5432, "handlers": ["pg_tls"]}],
    "force_instance_key": None,
}

_TAG_MAJOR = re.compile(r"^(\d+)")


@dataclass
class BaselineResult:
    """What the replay did (the costs are measured from the simulator's log, not from here)."""

    image_before: str = ""
    image_after: str = ""
    allocated: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    graphql_errors: dict[str, str] = field(default_factory=dict)
    steps: list[tuple[str, float]] = field(default_factory=list)  # (command, seconds)


class FlyctlBaseline:
    """Replays the manual steps against `api_base_url` / `flaps_base_url` (the simulator)."""

    def __init__(
        self,
        *,
        api_base_url: str,
        flaps_base_url: str,
        token: str,
        app: str,
        families: tuple[str, ...] = ("v4", "v6"),
        smoke_seconds: float = SMOKE_CHECK_SECONDS,
        max_unavailable: float = DEFAULT_MAX_UNAVAILABLE,
        lease_refresh: float = DEPLOY_LEASE_REFRESH,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.graphql_url = f"{api_base_url.rstrip('/')}/graphql"
        self.flaps = f"{flaps_base_url.rstrip('/')}/v1/apps/{app}"
        self.app = app
        self.families = families
        self.smoke_seconds = smoke_seconds
        self.max_unavailable = max_unavailable
        self.lease_refresh = lease_refresh
        self.sleep = sleep
        # A fly-go client for an OAuth token (fo1_…) sends `Bearer` to both APIs.
        self.auth = {"Authorization": f"Bearer {token}"}
        self.result = BaselineResult()
        self.sent = 0  # requests sent, to know when the simulator has logged them all
        self._sent_lock = threading.Lock()

    def _count(self) -> None:
        with self._sent_lock:
            self.sent += 1

    # -- plumbing ------------------------------------------------------------------------------

    @staticmethod
    def _client() -> httpx.Client:
        """One client per command: each `fly …` is its own process with its own connections."""
        return httpx.Client(headers={"User-Agent": FLYCTL_USER_AGENT}, timeout=120.0)

    def _graphql(
        self,
        client: httpx.Client,
        query: str,
        variables: dict[str, Any],
        *,
        name: str,
        operation_name: str | None = None,
    ) -> dict[str, Any] | None:
        body: dict[str, Any] = {"query": query, "variables": variables}
        if operation_name is not None:  # genqlient-generated calls name the operation
            body["operationName"] = operation_name
        self._count()
        response = client.post(
            self.graphql_url,
            headers={
                **self.auth,
                "Content-Type": "application/json; charset=utf-8",
                "Accept": "application/json; charset=utf-8",
            },
            content=json.dumps(body),
        )
        response.raise_for_status()
        payload = response.json()
        errors = payload.get("errors") if isinstance(payload, dict) else None
        if errors:
            self.result.graphql_errors[name] = str(errors[0].get("message", ""))[:200]
        data = payload.get("data") if isinstance(payload, dict) else None
        return data if isinstance(data, dict) else None

    def _rest(
        self,
        client: httpx.Client,
        method: str,
        path: str,
        *,
        nonce: str | None = None,
        params: dict[str, Any] | None = None,
        body: Any = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        headers = dict(self.auth)
        if nonce:
            headers[NONCE_HEADER] = nonce
        if body is not None:
            headers["Content-Type"] = "application/json"
        self._count()
        return client.request(
            method,
            f"{self.flaps}{path}",
            headers=headers,
            params=params,
            content=None if body is None else json.dumps(body),
            timeout=timeout if timeout is not None else 120.0,
        )

    def _list_active(self, client: httpx.Client) -> list[dict[str, Any]]:
        response = self._rest(client, "GET", "/machines")
        response.raise_for_status()
        machines = [m for m in response.json() if isinstance(m, dict)]
        return [
            m
            for m in machines
            if m.get("config")
            and m.get("state") not in ("destroyed", "destroying")
            and ((m["config"].get("metadata") or {}).get("fly_process_group") or "")
            not in ("fly_app_release_command", "fly_app_console")
        ]

    def _step(self, name: str, fn: Callable[[], Any]) -> Any:
        start = time.monotonic()
        try:
            return fn()
        finally:
            self.result.steps.append((name, time.monotonic() - start))

    # -- the commands --------------------------------------------------------------------------

    def run(self) -> BaselineResult:
        present = self._step("fly ips list", self.ips_list)
        for family in self.families:
            if family not in present:
                self._step(f"fly ips allocate-{family}", partial(self.allocate, family))
        services = self._step("fly config save", self.config_save)
        image = self._step("fly image show", self.image_show)
        self._step("fly deploy --image", lambda: self.deploy(image, services))
        self._step("fly services list", self.services_list)
        return self.result

    def ips_list(self) -> set[str]:
        with self._client() as client:
            data = self._graphql(client, IPS_LIST, {"appName": self.app}, name="ips list")
            self._graphql(client, EGRESS_IPS_LIST, {"appName": self.app}, name="egress ips")
        nodes = (((data or {}).get("app") or {}).get("ipAddresses") or {}).get("nodes") or []
        return {str(n.get("type")) for n in nodes if isinstance(n, dict)}

    def allocate(self, family: str) -> None:
        with self._client() as client:
            variables = {"input": {"appId": self.app, "type": family, "region": ""}}
            self._graphql(client, ALLOCATE, variables, name=f"allocate {family}")
        self.result.allocated.append(family)

    def config_save(self) -> list[dict[str, Any]]:
        """fly.toml from the machines; returns its [[services]] as machine services."""
        with self._client() as client:
            data = self._graphql(
                client,
                CONFIG_CURRENT_RELEASE,
                {"appName": self.app},
                name="FlyctlConfigCurrentRelease",
                operation_name="FlyctlConfigCurrentRelease",
            )
            release = ((data or {}).get("app") or {}).get("currentReleaseUnprocessed")
            # A `fly pg create` app has no releases: the config comes from the machines (§4).
            machines = self._list_active(client)
        del release
        counts = Counter(
            json.dumps(m["config"].get("services") or [], sort_keys=True) for m in machines
        )
        services: list[dict[str, Any]] = json.loads(counts.most_common(1)[0][0]) if counts else []
        if not any(
            s.get("internal_port") == 5432
            and any(p.get("handlers") == ["pg_tls"] for p in s.get("ports") or [])
            for s in services
        ):
            # The guide's step: add the pg_tls service to the saved fly.toml.
            services = [*services, copy.deepcopy(DOC_SERVICE)]
        return services

    def image_show(self) -> str:
        """The image the guide tells users to deploy: `<repository>:<major>` of the current one."""
        with self._client() as client:
            self._graphql(client, GET_APP_COMPACT, {"appName": self.app}, name="GetAppCompact")
            machines = self._list_active(client)
            for m in machines:  # one update hint per machine, in order
                ref = m.get("image_ref") or {}
                self._graphql(
                    client,
                    LATEST_IMAGE_DETAILS,
                    {
                        "image": f"{ref.get('repository', '')}:{ref.get('tag', '')}",
                        "flyVersion": (ref.get("labels") or {}).get("fly.version"),
                    },
                    name="latestImageDetails",
                )
        image = str((machines[0].get("config") or {}).get("image", "")) if machines else ""
        self.result.image_before = image
        name = image.split("@", 1)[0]
        repo, _, tag = name.rpartition(":")
        major = _TAG_MAJOR.match(tag)
        repo = repo.removeprefix("registry-1.docker.io/").removeprefix("library/")
        return f"{repo}:{major.group(1)}" if major else name

    def services_list(self) -> None:
        with self._client() as client:
            self._list_active(client)

    # -- fly deploy ----------------------------------------------------------------------------

    def deploy(self, image: str, services: list[dict[str, Any]]) -> None:
        self.result.image_after = image
        release_id = f"rel_{uuid.uuid4().hex[:12]}"
        with self._client() as client:
            self._rest(client, "GET", "").raise_for_status()  # GET /v1/apps/{app}: the role
            self._graphql(
                client,
                RESOLVE_IMAGE_FOR_APP,
                {"appName": self.app, "imageRef": image},
                name="ResolveImageForApp",
            )
            self._graphql(
                client,
                CREATE_RELEASE,
                {"input": {"appId": self.app, "image": image, "platformVersion": "machines"}},
                name="CreateRelease",
                operation_name="CreateRelease",
            )
            machines = sorted(self._list_active(client), key=lambda m: str(m["id"]))
            nonces = self._acquire_leases(client, machines)
            stop = threading.Event()
            refreshers = [
                threading.Thread(
                    target=self._refresh_lease,
                    args=(client, str(m["id"]), nonces[str(m["id"])], stop),
                    daemon=True,
                )
                for m in machines
            ]
            for t in refreshers:
                t.start()
            try:
                self._update_release(client, release_id, "running")
                self._rolling_update(
                    client, machines, nonces, image=image, services=services, release=release_id
                )
            finally:
                stop.set()
                for t in refreshers:
                    t.join()
                self._release_leases(client, machines, nonces)
            self._update_release(client, release_id, "complete")

    def _update_release(self, client: httpx.Client, release_id: str, status: str) -> None:
        self._graphql(
            client,
            UPDATE_RELEASE,
            {"input": {"releaseId": release_id, "status": status}},
            name="UpdateRelease",
            operation_name="UpdateRelease",
        )

    def _acquire_leases(
        self, client: httpx.Client, machines: list[dict[str, Any]]
    ) -> dict[str, str]:
        def acquire(mid: str) -> str:
            r = self._rest(
                client, "POST", f"/machines/{mid}/lease", params={"ttl": DEPLOY_LEASE_TTL}
            )
            r.raise_for_status()
            return str(r.json()["data"]["nonce"])

        with ThreadPoolExecutor(max_workers=max(1, len(machines))) as pool:
            ids = [str(m["id"]) for m in machines]
            return dict(zip(ids, pool.map(acquire, ids), strict=True))

    def _refresh_lease(
        self, client: httpx.Client, mid: str, nonce: str, stop: threading.Event
    ) -> None:
        # refreshLeaseUntilCanceled: refresh, then sleep delayBetween (±20 ms jitter).
        while not stop.is_set():
            self._rest(
                client,
                "POST",
                f"/machines/{mid}/lease",
                nonce=nonce,
                params={"ttl": DEPLOY_LEASE_TTL},
            )
            stop.wait(self.lease_refresh)

    def _release_leases(
        self, client: httpx.Client, machines: list[dict[str, Any]], nonces: dict[str, str]
    ) -> None:
        def release(mid: str) -> None:
            self._rest(client, "DELETE", f"/machines/{mid}/lease", nonce=nonces[mid])

        with ThreadPoolExecutor(max_workers=max(1, len(machines))) as pool:
            list(pool.map(release, [str(m["id"]) for m in machines]))

    def _launch_input(
        self, machine: dict[str, Any], image: str, services: list[dict[str, Any]], release: str
    ) -> dict[str, Any]:
        """ToMachineConfig: fly.toml's services/checks/metrics replace the machine's, the image is
        set, and the release metadata is added (fly-api.md §4)."""
        config = copy.deepcopy(machine["config"])
        config["services"] = copy.deepcopy(services)
        config["image"] = image
        metadata = dict(config.get("metadata") or {})
        metadata.update(
            {
                "fly_release_id": release,
                "fly_release_version": "1",
                "fly_flyctl_version": FLYCTL_USER_AGENT.split("/v", 1)[1],
                "fly_platform_version": "v2",
                "fly_process_group": "app",
                "fly-managed-postgres": "true",
            }
        )
        config["metadata"] = metadata
        state = str(machine.get("state", ""))
        return {
            "config": config,
            "region": machine.get("region", ""),
            "skip_launch": state not in ("started", "starting", "failed"),
            "skip_secrets": False,
        }

    def _rolling_update(
        self,
        client: httpx.Client,
        machines: list[dict[str, Any]],
        nonces: dict[str, str],
        *,
        image: str,
        services: list[dict[str, Any]],
        release: str,
    ) -> None:
        def one(machine: dict[str, Any]) -> None:
            mid = str(machine["id"])
            body = self._launch_input(machine, image, services, release)
            r = self._rest(client, "POST", f"/machines/{mid}", nonce=nonces[mid], body=body)
            r.raise_for_status()
            updated = r.json()
            self.result.updated.append(mid)
            if body["skip_launch"]:
                return
            self._wait_started(client, mid, str(updated.get("instance_id", "")))
            self._smoke_checks(client, mid)
            self._wait_checks(client, mid, machine)

        if not machines:
            return
        one(machines[0])  # the first machine alone
        rest = machines[1:]
        pool_size = max(1, math.ceil(len(machines) * self.max_unavailable))
        with ThreadPoolExecutor(max_workers=pool_size) as pool:
            list(pool.map(one, rest))

    def _wait_started(self, client: httpx.Client, mid: str, version: str) -> None:
        deadline = time.monotonic() + WAIT_TIMEOUT
        backoff = 0.5
        while True:
            params: dict[str, Any] = {"state": "started", "timeout": 60}
            if version:
                params["version"] = version
            r = self._rest(client, "GET", f"/machines/{mid}/wait", params=params, timeout=75)
            if r.is_success:
                return
            if time.monotonic() > deadline or r.status_code in (400, 404):
                r.raise_for_status()
            self.sleep(backoff)
            backoff = min(2.0, backoff * 2)

    def _smoke_checks(self, client: httpx.Client, mid: str) -> None:
        """Watch the machine for `smoke_seconds`, as flyctl does to catch a crash loop."""
        end = time.monotonic() + self.smoke_seconds
        backoff = 0.5
        while time.monotonic() < end:
            self._rest(client, "GET", f"/machines/{mid}").raise_for_status()
            pause = min(backoff, max(0.0, end - time.monotonic()))
            self.sleep(pause)
            backoff = min(2.0, backoff * 2)

    def _wait_checks(self, client: httpx.Client, mid: str, machine: dict[str, Any]) -> None:
        checks = (machine.get("config") or {}).get("checks") or {}
        if not checks:
            return
        shortest = min(
            [_seconds(c.get("interval")) for c in checks.values() if isinstance(c, dict)] + [120.0]
        )
        backoff = shortest / 2
        deadline = time.monotonic() + WAIT_TIMEOUT
        while True:
            r = self._rest(client, "GET", f"/machines/{mid}")
            r.raise_for_status()
            data = r.json()
            statuses = data.get("checks") or []
            # As flyctl does since #4952: no results yet is not "all passing".
            if len(statuses) >= len(checks) and all(c.get("status") == "passing" for c in statuses):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"machine {mid}: checks did not pass")
            self.sleep(backoff)
            backoff = min(2 * shortest, backoff * 2)


def _seconds(value: Any) -> float:
    """A Go duration string ("15s", "1m30s", "500ms") or nanoseconds, in seconds."""
    if isinstance(value, int | float):
        return float(value) / 1e9
    if not isinstance(value, str):
        return 120.0
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)(ms|s|m|h)", value):
        total += float(number) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]
    return total or 120.0
