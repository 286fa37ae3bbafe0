"""Fly's GraphQL API: the app's role and IP addresses, allocating and releasing IPs.

Wire format as fly-go sends it (superfly/graphql): POST {base}/graphql with `query` and
`variables`; errors come back as HTTP 200 with `errors[]`, and the first message is the one
that counts ("Could not find App" for an unknown app).
"""

from __future__ import annotations

from typing import Any

from ..domain import AppInfo, IpAddress, IpFamily
from ..errors import FlyAuthError, FlyError, FlyNotFound
from ..flytoken import FlyAuth
from .http import FlyHttp

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


def _ip(node: dict[str, Any]) -> IpAddress:
    return IpAddress(
        id=str(node.get("id") or ""),
        address=str(node.get("address") or ""),
        type=str(node.get("type") or ""),
        region=str(node.get("region") or ""),
        created_at=str(node.get("createdAt") or ""),
    )


class GraphQL:
    def __init__(self, http: FlyHttp, base_url: str, auth: FlyAuth) -> None:
        self._http = http
        self._url = f"{base_url}/graphql"
        self._headers = {
            "Authorization": auth.graphql_header,
            "Accept": "application/json; charset=utf-8",
        }

    def _call(self, query: str, variables: dict[str, Any], *, mutation: bool) -> dict[str, Any]:
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
        body = response.json()
        errors = body.get("errors") if isinstance(body, dict) else None
        if errors:
            message = str(errors[0].get("message", "GraphQL error"))
            if "Could not find App" in message:
                raise FlyNotFound(message, status=response.status_code)
            if "authenticat" in message.lower() or "unauthorized" in message.lower():
                raise FlyAuthError(message, status=response.status_code)
            raise FlyError(message, status=response.status_code)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise FlyError("GraphQL response without data", status=response.status_code)
        return data

    def get_app(self, app: str) -> AppInfo:
        data = self._call(APP_QUERY, {"appName": app}, mutation=False)
        node = data.get("app")
        if not isinstance(node, dict):
            raise FlyNotFound("Could not find App")
        role = node.get("role")
        nodes = (node.get("ipAddresses") or {}).get("nodes") or []
        return AppInfo(
            id=str(node.get("id") or ""),
            name=str(node.get("name") or app),
            role=str(role["name"]) if isinstance(role, dict) and role.get("name") else None,
            ips=tuple(_ip(n) for n in nodes if isinstance(n, dict)),
            shared_ipv4=node.get("sharedIpAddress") or None,
        )

    def allocate_ip(self, app: str, ip_type: IpFamily) -> tuple[IpAddress, tuple[IpAddress, ...]]:
        """Allocate; return the new address and the app's addresses right after it.

        The payload's `app` gives the list in the same round trip, which is how a run notices a
        concurrent allocation without an extra request.
        """
        # `region` is always sent, as fly-go does; "" means global anycast.
        variables = {"input": {"appId": app, "type": ip_type, "region": ""}}
        data = self._call(ALLOCATE_MUTATION, variables, mutation=True)
        payload = data.get("allocateIpAddress") or {}
        node = payload.get("ipAddress")
        if not isinstance(node, dict):
            raise FlyError(f"allocateIpAddress returned no address for type {ip_type}")
        nodes = ((payload.get("app") or {}).get("ipAddresses") or {}).get("nodes") or []
        return _ip(node), tuple(_ip(n) for n in nodes if isinstance(n, dict))

    def release_ip(self, app: str, address: str) -> None:
        variables = {"input": {"appId": app, "ipAddressId": None, "ip": address}}
        self._call(RELEASE_MUTATION, variables, mutation=True)
