"""Every way a run can fail, as one tree rooted in `ActionError`.

Each error carries what happened (`message`), what the reader should do about it (`hint`) and a
short `title` for the annotation, so `main` reports them all the same way. An error is only ever
raised: what a run did before failing travels in its `Progress`, never attached to an error.

The Fly API errors live here too, not in `fly/`: the core reacts to them (a lease conflict, a
timeout that may have landed) without importing the client that raises them.
"""

from __future__ import annotations


class ActionError(Exception):
    """A failure written for the person reading the workflow log."""

    title = "fly-pg-external failed"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message

    @property
    def explained(self) -> str:
        """The message and, when there is one, what to do next."""
        return f"{self.message} {self.hint}" if self.hint else self.message


class InputError(ActionError):
    """A bad input or environment value; nothing has been sent anywhere."""

    title = "Invalid input"

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f'Input "{name}": {message}')
        self.input_name = name


class ValueProblem(ActionError):
    """A value that does not parse (a connection string, a token); the caller knows which
    input it came from and turns this into an `InputError`."""


class PlanError(ActionError):
    """The cluster cannot be exposed as asked; nothing has been changed."""

    title = "Cannot plan the change"

    def __init__(self, message: str, input_name: str | None = None) -> None:
        prefix = f'Input "{input_name}": ' if input_name else ""
        super().__init__(prefix + message)
        self.input_name = input_name


class ForkRunRefused(ActionError):
    """A privileged run triggered from a fork asked to change something; nothing was sent."""

    title = "Fork run refused"


class RunError(ActionError):
    """The rollout stopped; the run's Progress says what had been done by then."""

    title = "Rollout stopped"


class LandingUnknown(RunError):
    """A write failed and whether it was carried out cannot be told (the target cannot be read)."""


class VerifyError(ActionError):
    """The endpoint was changed but does not answer as it should."""

    title = "Verification failed"


class NotExposed(ActionError):
    """`mode: connect` on a database that is not reachable from outside Fly."""

    title = "Database not exposed"


class CredentialsError(ActionError):
    """A temporary role could not be created, checked or dropped (`credentials: temporary`)."""

    title = "Temporary credentials"

    def __init__(self, message: str, *, hint: str | None = None, title: str | None = None) -> None:
        super().__init__(message, hint=hint)
        if title:
            self.title = title


class FlyError(ActionError):
    """A Fly API call failed. `message` is Fly's own text (`message`, else `error`)."""

    title = "Fly API error"

    def __init__(
        self, message: str, *, status: int | None = None, request_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.request_id = request_id

    def __str__(self) -> str:
        where = f" (HTTP {self.status})" if self.status else ""
        rid = f" [fly-request-id {self.request_id}]" if self.request_id else ""
        return f"{self.message}{where}{rid}"

    @property
    def explained(self) -> str:
        text = f"Fly API error: {self}"
        return f"{text} {self.hint}" if self.hint else text


class FlyAuthError(FlyError):
    """401/403: the token is wrong, expired, or not allowed on this app."""

    title = "Fly refused the token"


class FlyNotFound(FlyError):
    """404, or GraphQL's "Could not find App"."""


class FlyConflict(FlyError):
    """409: a lease is held by someone else, or our nonce is no longer valid."""


class FlyTimeout(FlyError):
    """408: from the wait endpoint, the machine did not reach the state within the timeout; from
    any other endpoint, Fly timed out talking to the host, and a write may still have landed."""


class FlyTransient(FlyError):
    """429, 5xx or a transport error that survived every retry."""


class FlyBadAnswer(FlyError):
    """A 2xx answer the action cannot read: not JSON, or a field of another type than Fly's API
    gives it. Nothing of it is used: acting on a guess could change the wrong thing."""

    title = "Unreadable answer from Fly"

    def __init__(
        self, message: str, *, status: int | None = None, request_id: str | None = None
    ) -> None:
        super().__init__(message, status=status, request_id=request_id)
        self.hint = (
            "Fly, or something between the runner and Fly, answered in a shape the action does "
            "not know. Re-run the job; if it happens again, see https://status.flyio.net."
        )
