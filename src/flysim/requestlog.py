"""What the simulator remembers about each HTTP request, for tests to assert on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)

Api = Literal["graphql", "rest"]


@dataclass
class RequestRecord:
    """One request as the simulator saw it.

    ``query`` maps each query parameter to its value; a repeated parameter (``state=a&state=b``) is
    joined with commas, which is what the Machines API treats as equivalent.
    Only the *scheme* of the Authorization header is kept, never the token.
    """

    request_id: str
    api: Api
    method: str
    path: str
    query: dict[str, str]
    auth_scheme: str | None
    has_lease_nonce: bool
    content_type: str | None
    user_agent: str | None
    started: float  # time.monotonic()
    json: Any = None  # parsed JSON body of a REST request (None if there was none)
    response: Any = None  # the JSON body the simulator answered with (None: no body)
    operation_name: str | None = None
    operation_type: str | None = None  # "query" / "mutation" for GraphQL
    graphql_fields: list[str] = field(default_factory=list)  # top-level field names, not aliases
    graphql_variables: dict[str, Any] | None = None
    status: int | None = None  # None: the connection was reset without a response
    ended: float | None = None
    fault: str | None = None  # the injected fault that shaped this response, if any
    # Answered 429 by the simulator's own rate limiter (not by an injected fault): the client
    # went faster than Fly allows. See Simulator.throttled().
    throttled: bool = False

    @property
    def is_mutating(self) -> bool:
        if self.api == "graphql":
            return self.operation_type == "mutation"
        return self.method in {"POST", "PUT", "PATCH", "DELETE"}

    @property
    def duration(self) -> float | None:
        return None if self.ended is None else self.ended - self.started


def operation_info(
    document: DocumentNode, operation_name: str | None
) -> tuple[OperationDefinitionNode | None, list[str]]:
    """The operation that will run and its top-level field names (through fragments)."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    chosen: OperationDefinitionNode | None = None
    if operation_name is not None:
        chosen = next((o for o in operations if o.name and o.name.value == operation_name), None)
    elif len(operations) == 1:
        chosen = operations[0]
    if chosen is None:
        return None, []
    names: list[str] = []
    _collect_fields(chosen.selection_set, fragments, names, set())
    return chosen, names


def _collect_fields(
    selection_set: SelectionSetNode,
    fragments: dict[str, FragmentDefinitionNode],
    names: list[str],
    seen: set[str],
) -> None:
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            if selection.name.value not in names:
                names.append(selection.name.value)
        elif isinstance(selection, InlineFragmentNode):
            _collect_fields(selection.selection_set, fragments, names, seen)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            if name in fragments and name not in seen:
                seen.add(name)
                _collect_fields(fragments[name].selection_set, fragments, names, seen)
