"""Seeding: the machines of an app added with :meth:`Simulator.add_app
<flysim.simulator.Simulator.add_app>`, as `fly pg create` (or a plain deploy) leaves them.

The simulator registers the app with the state core and takes its lock; :func:`seed_machines`
builds the machines one at a time, drawing every identifier from the state's generator in a fixed
order (so a seeded simulator is reproducible).
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Iterator
from typing import Any

from flysim import _ids, configs
from flysim.models import App, Machine


def seed_machines(
    app: App,
    rng: random.Random,
    *,
    count: int,
    legacy: bool,
    pg_version: str | None,
    services: list[dict[str, Any]] | None,
    machine_states: list[str] | None,
    primary_index: int,
) -> Iterator[Machine]:
    """Yield the app's ``count`` machines, each ready to be appended to ``app.machines``.

    A generator so that the caller records each machine before the next one is drawn.
    Postgres apps get the primary role on ``primary_index`` (``app.primary_id`` is set here).
    """
    now = time.time()
    org_hex = f"{rng.randrange(0x10, 0xFFF):x}"
    if app.is_postgres:
        image, labels = configs.postgres_image(rng, pg_version or ("15.3" if legacy else "16.4"))
    else:
        image, labels = f"registry.fly.io/{app.name}:deployment-{_ids.ulid(now)}", {}
    if services is None and app.is_postgres and not legacy:
        services = configs.PG_TLS_SERVICES
    for index in range(count):
        config = _config(app, rng, image, services)
        state = machine_states[index] if machine_states else "started"
        machine = Machine(
            id=_ids.machine_id(rng),
            name=_ids.machine_name(rng),
            region=app.region,
            private_ip=_private_ip(rng, org_hex),
            config=config,
            image_ref=configs.image_ref_for(image, labels),
            state=state,
            instance_id=_ids.ulid(now - 3600),
            created_at=now - 86400,
            updated_at=now - 3600,
        )
        if app.is_postgres:
            machine.role = "primary" if index == primary_index else "replica"
            if index == primary_index:
                app.primary_id = machine.id
        _launched(machine, now)
        yield machine


def _config(
    app: App, rng: random.Random, image: str, services: list[dict[str, Any]] | None
) -> dict[str, Any]:
    """A machine's config: `fly pg create`'s for a Postgres app, else a plain web app's."""
    if app.is_postgres:
        return configs.postgres_config(
            image=image, region=app.region, volume=_ids.volume_id(rng), services=services
        )
    config = configs.web_config(image=image, region=app.region)
    if services is not None:
        config["services"] = copy.deepcopy(services)
    return config


def _launched(machine: Machine, now: float) -> None:
    """The events and checks of a machine launched long ago and now in ``machine.state``."""
    machine.add_event("launch", "created", source="user")
    if machine.state == "started":
        machine.add_event("start", "started")
        machine.pass_checks(now)
    elif machine.state == "created":
        machine.clear_checks()  # never launched: no check has ever run
    else:
        # UNCONFIRMED: what a stopped machine's list shows; critical (its last run
        # failed as it went down) is the reading no client can mistake for healthy.
        machine.fail_checks(now)


def _private_ip(rng: random.Random, org_hex: str) -> str:
    """A machine's 6PN address in its organisation's network."""
    parts = [f"{rng.randrange(0x10, 0xFFFF):x}" for _ in range(3)]
    return f"fdaa:0:{org_hex}:a7b:{':'.join(parts)}:2"
