"""Fly's GraphQL API: the app's role and IP addresses, allocating and releasing IPs.

Wire format as fly-go sends it (superfly/graphql): POST {base}/graphql with `query` and
`variables`; errors come back as HTTP 200 with `errors[]`, and the first message is the one
that counts ("Could not find App" for an unknown app).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..domain import AppInfo, IpAddress, IpFamily
from ..errors import FlyAuthError, FlyError, FlyNotFound
from ..flytoken import FlyAuth
from .http import FlyHttp
from .shape import (
    Where,
    as_object,
    json_body,
    objects,
    want_list,
    want_object,
    want_opt_str,
    want_str,
)

APP_QUERY = (
    "query($appName: String!) { app(name: $appName) { id name role { name } "
    "ipAddresses { nodes { id address type region createdAt } } sharedIpAddress } }"
)
ALLOCATE_MUTATION = (
    "mutation($input: AllocateIPAddressInput!) { allocateIpAddress(input: $input) { "
    "ipAddress { id address type region createdAt } "
    "app { ipAddresses { nodes { id address type region createdAt } } } } }"
)
RELEASE_MUTATION = (
    "mutation($input: ReleaseIPAddressInput!) { releaseIpAddress(input: $input) { "
    "clientMutationId } }"
)


def _ip(node: dict[str, Any], where: Where) -> IpAddress:
    return IpAddress(
        id=want_str(node, "id", where),
        address=want_str(node, "address", where),
        type=want_str(node, "type", where),
        region=want_str(node, "region", where),
        created_at=want_str(node, "createdAt", where),
    )


def _ips(app: dict[str, Any], where: Where) -> tuple[IpAddress, ...]:
    """The app's addresses. A null list is not read as "none": the run would allocate again."""
    connection = want_object(app, "ipAddresses", where)
    at = where.at("ipAddresses")
    nodes = want_list(connection, "nodes", at)
    # The schema lets a list item be null: an address the token may not see.
    return tuple(_ip(n, w) for w, n in objects(nodes, at.at("nodes"), skip_null=True))


class GraphQL:
    def __init__(self, http: FlyHttp, base_url: str, auth: FlyAuth) -> None:
        self._http = http
        self._url = f"{base_url}/graphql"
        self._headers = {
            "Authorization": auth.graphql_header,
            "Accept": "application/json; charset=utf-8",
        }

    def _call(
        self, query: str, variables: dict[str, Any], *, operation: str, mutation: bool
    ) -> tuple[dict[str, Any], Where]:
        """The answer's `data`, and its place for the readers' errors; `operation` is the
        top-level field asked for, which names the request in them."""
        kind = "mutation" if mutation else "query"
        request = f"GraphQL {kind} {operation} (POST {urlsplit(self._url).path})"
        try:
            response = self._http.request(
                "POST",
                self._url,
                idempotent=not mutation,
                headers=self._headers,
                json={"query": query, "variables": variables},
            )
        except FlyAuthError as exc:
            raise FlyAuthError(
                "Fly refused the API token (GraphQL): " + exc.message, status=exc.status
            ) from None
        where = Where.of(response, request, "")
        body = as_object(json_body(response, request), where)
        errors = want_list(body, "errors", where, optional=True)
        if errors:
            first = as_object(errors[0], where.at("errors").at(0))
            message = want_str(first, "message", where.at("errors").at(0)) or "GraphQL error"
            if "Could not find App" in message:
                raise FlyNotFound(message, status=response.status_code)
            if "authenticat" in message.lower() or "unauthorized" in message.lower():
                raise FlyAuthError(message, status=response.status_code)
            raise FlyError(message, status=response.status_code)
        return want_object(body, "data", where), where.at("data")

    def get_app(self, app: str) -> AppInfo:
        data, where = self._call(APP_QUERY, {"appName": app}, operation="app", mutation=False)
        if data.get("app") is None:
            raise FlyNotFound("Could not find App")
        node = want_object(data, "app", where)
        at = where.at("app")
        role = want_object(node, "role", at, optional=True)
        return AppInfo(
            id=want_str(node, "id", at),
            name=want_str(node, "name", at) or app,
            role=want_str(role, "name", at.at("role")) or None,
            ips=_ips(node, at),
            shared_ipv4=want_opt_str(node, "sharedIpAddress", at) or None,
        )

    def allocate_ip(self, app: str, ip_type: IpFamily) -> tuple[IpAddress, tuple[IpAddress, ...]]:
        """Allocate; return the new address and the app's addresses right after it.

        The payload's `app` gives the list in the same round trip, which is how a run notices a
        concurrent allocation without an extra request.
        """
        # `region` is always sent, as fly-go does; "" means global anycast.
        variables = {"input": {"appId": app, "type": ip_type, "region": ""}}
        data, where = self._call(
            ALLOCATE_MUTATION, variables, operation="allocateIpAddress", mutation=True
        )
        payload = want_object(data, "allocateIpAddress", where)
        at = where.at("allocateIpAddress")
        node = want_object(payload, "ipAddress", at)
        after = want_object(payload, "app", at, optional=True)
        return _ip(node, at.at("ipAddress")), _ips(after, at.at("app")) if after else ()

    def release_ip(self, app: str, address: str) -> None:
        variables = {"input": {"appId": app, "ipAddressId": None, "ip": address}}
        self._call(RELEASE_MUTATION, variables, operation="releaseIpAddress", mutation=True)
