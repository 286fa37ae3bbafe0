"""The GraphQL API runs real GraphQL (aliases, variables, fragments) and fails like Fly's."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from flysim import Simulator

GraphQL = Callable[..., httpx.Response]

IPS = """query ($appName: String!) { app(name: $appName) { ipAddresses { nodes { id address type
region createdAt network { name organization { slug } } serviceName } } sharedIpAddress } }"""

ALLOCATE = """mutation($input: AllocateIPAddressInput!) { allocateIpAddress(input: $input) {
ipAddress { id address type region createdAt } } }"""

ALLOCATE_SHARED = """mutation($input: AllocateIPAddressInput!) { allocateIpAddress(input: $input) {
app { sharedIpAddress } } }"""

RELEASE = """mutation($input: ReleaseIPAddressInput!) { releaseIpAddress(input: $input) {
clientMutationId } }"""


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer fo1_wrong"}], ids=["missing", "wrong"]
)
def test_unauthenticated_requests_get_401(gql: GraphQL, headers: dict[str, str]) -> None:
    response = gql(IPS, {"appName": "my-db"}, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"errors": [{"message": "You must be authenticated to view this."}]}
    assert response.headers["fly-request-id"]


def test_aliases_variables_and_fragments_work(gql: GraphQL) -> None:
    query = """
    query GetAppCompact($appName: String!) {
      appcompact: app(name: $appName) { ...Compact postgresAppRole: role { name } }
    }
    fragment Compact on App { id name hostname deployed status organization { id slug } }
    """
    response = gql(query, {"appName": "my-db"})
    assert response.status_code == 200
    app = response.json()["data"]["appcompact"]
    assert app["name"] == app["id"] == "my-db"
    assert app["hostname"] == "my-db.fly.dev" and app["deployed"] is True
    assert app["postgresAppRole"] == {"name": "postgres_cluster"}
    assert app["organization"]["slug"] == "personal"


def test_unknown_app_is_200_with_could_not_find_app(gql: GraphQL) -> None:
    response = gql("query($n: String!) { app(name: $n) { id } }", {"n": "nope"})
    assert response.status_code == 200
    body = response.json()
    assert body["data"] == {"app": None}
    (error,) = body["errors"]
    assert error["message"] == "Could not find App"
    assert error["path"] == ["app"] and error["extensions"]["code"] == "NOT_FOUND"


def test_a_non_postgres_app_has_no_role(flysim: Callable[..., Simulator]) -> None:
    sim = flysim(apps={"web": {"postgres": False, "machines": 1}}, postgres=False, token="t")
    response = httpx.post(
        f"{sim.api_base_url}/graphql",
        json={"query": '{ app(name: "web") { role { name } egressIpAddresses { nodes { ip } } } }'},
        headers={"Authorization": "Bearer t"},
    )
    assert response.json()["data"]["app"] == {"role": None, "egressIpAddresses": {"nodes": []}}


def test_ip_listing_shows_the_flycast_address(gql: GraphQL) -> None:
    app = gql(IPS, {"appName": "my-db"}).json()["data"]["app"]
    (flycast,) = app["ipAddresses"]["nodes"]
    assert flycast["type"] == "private_v6" and flycast["address"].startswith("fdaa:")
    assert flycast["region"] == "iad"
    assert flycast["network"] == {"name": "default", "organization": {"slug": "personal"}}
    assert app["sharedIpAddress"] is None


def test_allocate_and_release_dedicated_addresses(sim: Simulator, gql: GraphQL) -> None:
    v4 = gql(ALLOCATE, {"input": {"appId": "my-db", "type": "v4", "region": ""}}).json()
    ip = v4["data"]["allocateIpAddress"]["ipAddress"]
    assert ip["type"] == "v4" and ip["region"] == "global"
    assert ip["address"].startswith("127.") and not ip["address"].startswith("127.0.0.")
    v6 = gql(ALLOCATE, {"input": {"appId": "my-db", "type": "v6", "region": "ord"}}).json()
    assert v6["data"]["allocateIpAddress"]["ipAddress"]["address"] == "::1"
    assert v6["data"]["allocateIpAddress"]["ipAddress"]["region"] == "ord"
    second_v6 = gql(ALLOCATE, {"input": {"appId": "my-db", "type": "v6", "region": ""}}).json()
    assert second_v6["data"]["allocateIpAddress"]["ipAddress"]["address"].startswith("2001:db8::")

    released = gql(
        RELEASE, {"input": {"appId": "my-db", "ipAddressId": None, "ip": ip["address"]}}
    ).json()
    assert released == {"data": {"releaseIpAddress": {"clientMutationId": None}}}
    assert [i.type for i in sim.app("my-db").ips] == ["private_v6", "v6", "v6"]
    missing = gql(RELEASE, {"input": {"appId": "my-db", "ip": ip["address"]}}).json()
    assert missing["errors"][0]["extensions"]["code"] == "NOT_FOUND"


def test_shared_v4_comes_back_in_shared_ip_address(sim: Simulator, gql: GraphQL) -> None:
    response = gql(
        ALLOCATE_SHARED, {"input": {"appId": "my-db", "type": "shared_v4", "region": ""}}
    )
    shared = response.json()["data"]["allocateIpAddress"]["app"]["sharedIpAddress"]
    assert shared == sim.app("my-db").shared_ip
    app = gql(IPS, {"appName": "my-db"}).json()["data"]["app"]
    assert app["sharedIpAddress"] == shared
    assert all(node["type"] != "shared_v4" for node in app["ipAddresses"]["nodes"])


def test_allocation_validates_the_enum_and_the_app(gql: GraphQL) -> None:
    bad_type = gql(ALLOCATE, {"input": {"appId": "my-db", "type": "v5", "region": ""}}).json()
    assert "data" not in bad_type or bad_type["data"] is None
    assert "IPAddressType" in bad_type["errors"][0]["message"]
    no_app = gql(ALLOCATE, {"input": {"appId": "nope", "type": "v4", "region": ""}}).json()
    assert no_app["errors"][0]["message"] == "Could not find App"
    assert no_app["errors"][0]["path"] == ["allocateIpAddress"]


def test_request_log_names_the_operation_and_its_top_level_fields(
    sim: Simulator, gql: GraphQL
) -> None:
    gql('query Named { ...F } fragment F on Query { app(name: "my-db") { id } }')
    gql(ALLOCATE, {"input": {"appId": "my-db", "type": "v4", "region": ""}})
    gql(
        'query A { a: app(name: "my-db") { id } } query B { app(name: "x") { id } }',
        operation_name="B",
    )
    named, allocate, chosen = sim.requests
    assert (named.operation_name, named.operation_type, named.graphql_fields) == (
        "Named",
        "query",
        ["app"],
    )
    assert allocate.graphql_fields == ["allocateIpAddress"]
    assert allocate.operation_type == "mutation" and allocate.operation_name is None
    assert allocate.graphql_variables == {"input": {"appId": "my-db", "type": "v4", "region": ""}}
    assert chosen.operation_name == "B"
    assert sim.mutating_requests() == [allocate]


def test_a_body_without_a_query_is_a_400(sim: Simulator) -> None:
    response = httpx.post(
        f"{sim.api_base_url}/graphql",
        json={"variables": {}},
        headers={"Authorization": f"Bearer {sim.token}"},
    )
    assert response.status_code == 400 and response.json()["errors"]


def test_the_apis_live_on_separate_base_urls(sim: Simulator) -> None:
    auth = {"Authorization": f"Bearer {sim.token}"}
    assert httpx.get(f"{sim.api_base_url}/v1/apps/my-db", headers=auth).status_code == 404
    assert (
        httpx.post(
            f"{sim.flaps_base_url}/graphql", json={"query": "{ __typename }"}, headers=auth
        ).status_code
        == 404
    )
