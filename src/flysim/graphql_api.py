"""Fly's GraphQL API (the subset flyctl uses for apps and IP addresses), run by graphql-core.

Requests are parsed and executed for real, so aliases, variables and fragments behave as they do
against api.fly.io.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from graphql import (
    DocumentNode,
    GraphQLError,
    GraphQLResolveInfo,
    GraphQLSchema,
    GraphQLSyntaxError,
    build_schema,
    execute_sync,
    parse,
    validate,
)

from flysim.requestlog import operation_info

if TYPE_CHECKING:
    from flysim.simulator import Simulator

SDL = """
scalar ISO8601DateTime
scalar BigInt
scalar JSON

enum IPAddressType {
  private_v6
  shared_v4
  v4
  v6
}

type Query {
  app(id: String, internalId: String, name: String): App
}

type Mutation {
  allocateIpAddress(input: AllocateIPAddressInput!): AllocateIPAddressPayload
  releaseIpAddress(input: ReleaseIPAddressInput!): ReleaseIPAddressPayload
}

type App {
  id: ID!
  name: String!
  internalNumericId: Int!
  hostname: String
  cnameTarget: String
  appUrl: String
  deployed: Boolean!
  status: String!
  platformVersion: String
  network: String
  organization: Organization!
  role: AppRole
  ipAddresses(first: Int, last: Int, after: String, before: String): IPAddressConnection!
  sharedIpAddress: String
  egressIpAddresses(first: Int, last: Int, after: String, before: String):
    EgressIPAddressConnection!
  currentReleaseUnprocessed: Release
}

type AppRole {
  name: String!
}

type Organization {
  id: ID!
  internalNumericId: BigInt!
  slug: String!
  name: String!
  paidPlan: Boolean!
}

type Network {
  name: String!
  organization: Organization
}

type IPAddressConnection {
  nodes: [IPAddress!]!
  totalCount: Int!
}

type IPAddress {
  id: ID!
  address: String!
  type: IPAddressType!
  region: String
  createdAt: ISO8601DateTime!
  network: Network
  serviceName: String
}

type EgressIPAddressConnection {
  nodes: [EgressIPAddress!]!
}

type EgressIPAddress {
  id: ID!
  ip: String!
  version: Int!
  region: String!
  updatedAt: ISO8601DateTime!
}

type Release {
  configDefinition: JSON
}

input AllocateIPAddressInput {
  appId: ID!
  type: IPAddressType!
  region: String
  organizationId: ID
  network: String
  serviceName: String
  clientMutationId: String
}

type AllocateIPAddressPayload {
  app: App!
  ipAddress: IPAddress
  clientMutationId: String
}

input ReleaseIPAddressInput {
  appId: ID
  ipAddressId: ID
  ip: String
  clientMutationId: String
}

type ReleaseIPAddressPayload {
  app: App!
  clientMutationId: String
}
"""

# UNCONFIRMED: Fly's exact status/body for a bad token on GraphQL. We answer an HTTP 401, which
# fly-go reports as "server returned a non-200 status code: 401" - the strict reading.
UNAUTHENTICATED_BODY = {"errors": [{"message": "You must be authenticated to view this."}]}


class NotFoundError(GraphQLError):
    """``Could not find App`` and friends; ``extensions.code`` NOT_FOUND is UNCONFIRMED."""

    def __init__(self, message: str) -> None:
        super().__init__(message, extensions={"code": "NOT_FOUND"})


class InvalidInputError(GraphQLError):
    def __init__(self, message: str) -> None:
        super().__init__(message, extensions={"code": "UNPROCESSABLE"})


@dataclass
class ParsedRequest:
    """A GraphQL request body, parsed once (for the request log) and executed later."""

    query: str | None = None
    variables: dict[str, Any] | None = None
    operation_name: str | None = None
    document: DocumentNode | None = None
    operation_type: str | None = None
    fields: list[str] = field(default_factory=list)
    error: str | None = None  # the body is not a GraphQL request at all
    syntax_error: GraphQLError | None = None


def parse_request(raw: bytes) -> ParsedRequest:
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        return ParsedRequest(error="request body is not valid JSON")
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        return ParsedRequest(error="No query string was present")
    variables = body.get("variables")
    if variables is not None and not isinstance(variables, dict):
        return ParsedRequest(error="variables must be an object")
    operation_name = body.get("operationName")
    if not isinstance(operation_name, str) or not operation_name:
        operation_name = None
    parsed = ParsedRequest(query=body["query"], variables=variables, operation_name=operation_name)
    try:
        parsed.document = parse(body["query"])
    except GraphQLSyntaxError as exc:
        parsed.syntax_error = exc
        return parsed
    operation, parsed.fields = operation_info(parsed.document, operation_name)
    if operation is not None:
        parsed.operation_type = operation.operation.value
        if parsed.operation_name is None and operation.name is not None:
            parsed.operation_name = operation.name.value
    return parsed


def build(sim: Simulator) -> GraphQLSchema:
    """The schema with resolvers bound to ``sim``."""
    schema = build_schema(SDL)
    query_type = schema.query_type
    mutation_type = schema.mutation_type
    assert query_type is not None and mutation_type is not None

    def resolve_app(
        _root: object,
        _info: GraphQLResolveInfo[Any],
        name: str | None = None,
        id: str | None = None,
        internalId: str | None = None,
    ) -> dict[str, Any]:
        # Fly's App.id is the app name, so `id` and `name` address the same thing.
        return sim._graphql_app(name or id or "")

    def resolve_allocate(
        _root: object,
        _info: GraphQLResolveInfo[Any],
        input: dict[str, Any],
    ) -> dict[str, Any]:
        return sim._graphql_allocate(input)

    def resolve_release(
        _root: object,
        _info: GraphQLResolveInfo[Any],
        input: dict[str, Any],
    ) -> dict[str, Any]:
        return sim._graphql_release(input)

    query_type.fields["app"].resolve = resolve_app
    mutation_type.fields["allocateIpAddress"].resolve = resolve_allocate
    mutation_type.fields["releaseIpAddress"].resolve = resolve_release
    return schema


def execute(schema: GraphQLSchema, parsed: ParsedRequest) -> tuple[int, dict[str, Any]]:
    """Run a parsed request: ``(http status, response body)``; errors are 200 + ``errors[]``."""
    if parsed.error is not None:
        return 400, {"errors": [{"message": parsed.error}]}
    if parsed.syntax_error is not None:
        return 200, {"errors": [parsed.syntax_error.formatted]}
    assert parsed.document is not None
    validation_errors = validate(schema, parsed.document)
    if validation_errors:
        return 200, {"errors": [error.formatted for error in validation_errors]}
    result = execute_sync(
        schema,
        parsed.document,
        variable_values=parsed.variables,
        operation_name=parsed.operation_name,
    )
    return 200, dict(result.formatted)
