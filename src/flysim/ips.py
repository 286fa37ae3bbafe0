"""IP addresses: allocating (the address each type gets) and releasing an app's addresses.

:class:`AddressPool` owns the counters and the IPv4 prefix new addresses come from. Its callers
hold the state lock and tell the state core afterwards, so that listeners follow the change
(:meth:`State.allocate_ip <flysim.state.State.allocate_ip>` and
:meth:`~flysim.state.State.release_ip` do both).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable

from flysim import _ids
from flysim.errors import ApiError
from flysim.models import App, IPAddress

IPHook = Callable[[IPAddress], None]
"""Called with each new address before it joins its app (see ``Simulator.on_ip_allocated``)."""


class AddressPool:
    """Where new addresses come from: a v4 /24 of loopback, ::1 then 2001:db8::/32, Flycast.

    ``rng`` is the simulator's own generator (shared, so that a seeded simulator draws every
    identifier in the same order as before).
    """

    def __init__(self, rng: random.Random, v4_prefix: str) -> None:
        self.v4_prefix = v4_prefix
        self._rng = rng
        self._counters = {"v4": 0, "v6": 1, "private_v6": 0, "shared_v4": 0}

    def allocate(
        self,
        app: App,
        type_: str,
        region: str,
        network: str | None,
        service_name: str | None,
        *,
        apps: Iterable[App],
        on_allocated: IPHook | None = None,
    ) -> IPAddress | None:
        """Give ``app`` an address of ``type_``; None for ``shared_v4``, which lives in
        ``app.shared_ip``. ``apps`` are every app, to know whether ::1 is taken."""
        now = time.time()
        if type_ == "shared_v4":
            if app.shared_ip is None:
                self._counters["shared_v4"] += 1
                # TEST-NET-1: clearly not routable, and nothing listens there (a shared v4 does
                # not carry pg_tls anyway).
                app.shared_ip = f"192.0.2.{self._counters['shared_v4']}"
                app.shared_ip_created_at = now
            return None
        if type_ == "v4":
            self._counters["v4"] += 1
            if self._counters["v4"] > 254:
                raise ApiError(422, "the simulator ran out of IPv4 addresses")
            address = f"{self.v4_prefix}.{self._counters['v4']}"
        elif type_ == "v6":
            # Only ::1 is a local IPv6 address we can listen on, so the first v6 (while nobody
            # holds it) is ::1; later ones come from the documentation prefix 2001:db8::/32 and
            # are never listened on.
            if any(ip.address == "::1" for a in apps for ip in a.ips):
                self._counters["v6"] += 1
                address = f"2001:db8::{self._counters['v6']:x}"
            else:
                address = "::1"
        elif type_ == "private_v6":
            self._counters["private_v6"] += 1
            address = (
                f"fdaa:0:{app.internal_numeric_id % 0xFFFF:x}:0:1::{self._counters['private_v6']:x}"
            )
        else:
            raise ApiError(422, f"invalid IP address type {type_!r}")
        ip = IPAddress(
            id=_ids.ip_id(self._rng),
            address=address,
            type=type_,
            # Anycast addresses allocated without a region are "global" (fly-api.md §2.1).
            region=region or "global",
            created_at=now,
            org_slug=app.org_slug,
            network=(network or "default") if type_ == "private_v6" else None,
            service_name=service_name or None,
        )
        if on_allocated is not None:
            on_allocated(ip)
        app.ips.append(ip)
        return ip


def release(app: App, *, ip_id: str | None, address: str | None) -> bool:
    """Remove the address with this id or this address from ``app``; False if it has none."""
    if address is not None and address == app.shared_ip:
        app.shared_ip = None
        return True
    for ip in app.ips:
        if (ip_id is not None and ip.id == ip_id) or (
            address is not None and ip.address == address
        ):
            app.ips.remove(ip)
            return True
    return False
