"""The one error tree of chatcore.

    ChatError                    root; never raised itself
    ├── BadRequest               the caller sent something we refuse (400)
    │   ├── ValidationFailed     well-formed but invalid fields (422)
    │   └── UnsupportedMediaType a body that is not application/json (415)
    ├── Unauthorized             missing, malformed, forged or expired credentials (401)
    ├── NotFound                 no such resource *for this caller*: another user's session is one (404)
    ├── Conflict                 the state changed under the caller; retry later or reload (409)
    │   ├── ConcurrentWriteError a conditional write kept losing its race and gave up
    │   ├── TurnInProgress       another chat turn holds the session's lease
    │   ├── TurnLost             this turn's lease was taken over after it expired
    │   └── DuplicateClientMessage  the client message id is already stored
    ├── PayloadTooLarge          body or field over its limit (413)
    ├── ServiceUnavailable       a backend we cannot do without failed (503)
    │   ├── ConfigError          a setting is missing or unusable: found at init, every request answers 503
    │   └── ServiceRefused       an AWS service answered with an error (``chatcore.aws.call`` translates them all)
    ├── InvalidServiceRequest    DynamoDB refused a request of ours as invalid (500): a bug, not an outage
    ├── LLMError                 the language model failed after the retries (502; in a turn: an SSE error)
    ├── ToolFailure              raised by a tool for an expected failure: its message is the error result the LLM
    │                            reads, never an HTTP error
    ├── TransientToolError       a long-running tool's failure worth retrying: the state machine retries this name
    └── NeedsWholePath           a turn's decision needs messages older than its working set: the engine plans
                                 again over the whole path (``chatcore.intents``); it never reaches a client

Third-party errors are translated at their boundary and chained with ``from exc``: botocore's in
``chatcore.aws.call`` (the only module that imports botocore), ``redis.exceptions.*`` in ``chatcore.cache``,
``jwt.*`` in ``chatcore.auth``; nothing outside those modules sees them.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ChatError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class BadRequest(ChatError):
    status = 400
    code = "bad_request"


class ValidationFailed(BadRequest):
    status = 422
    code = "validation_error"


class UnsupportedMediaType(BadRequest):
    status = 415
    code = "unsupported_media_type"


class Unauthorized(ChatError):
    status = 401
    code = "unauthorized"


class NotFound(ChatError):
    status = 404
    code = "not_found"


class Conflict(ChatError):
    status = 409
    code = "conflict"


class ConcurrentWriteError(Conflict):
    code = "concurrent_write"


class PayloadTooLarge(ChatError):
    status = 413
    code = "payload_too_large"


class ServiceUnavailable(ChatError):
    status = 503
    code = "service_unavailable"


class TurnInProgress(Conflict):
    """Another chat turn holds the session's lease."""

    code = "turn_in_progress"


class TurnLost(Conflict):
    """The turn's lease expired and was taken over; its writes are refused."""

    code = "turn_lost"


class DuplicateClientMessage(Conflict):
    """A message with this ``client_message_id`` is already stored in the session."""

    code = "duplicate_message"

    def __init__(self, message: str, *, client_message_id: str, seq: int | None) -> None:
        super().__init__(message)
        self.client_message_id = client_message_id
        self.seq = seq


class NeedsWholePath(ChatError):
    """Raised by ``chatcore.intents.plan_turn`` and caught by the engine, which plans again over the whole path."""

    code = "needs_whole_path"

    def __init__(self) -> None:
        super().__init__("the decision needs older messages than the working set")


class ConfigError(ServiceUnavailable):
    """Raised while a function starts (settings, secrets, clients), never per request; the message names the
    setting. The HTTP apps then answer every request with it (``chatcore.web.misconfigured``)."""

    code = "misconfigured"


class LLMError(ChatError):
    """The LLM call failed (after retries, or once output had reached the caller); the turn keeps what it has."""

    status = 502
    code = "llm_error"


class ToolFailure(ChatError):
    """Raised by a tool for an expected failure; its message is shown to the LLM (``ToolRegistry.run``)."""

    code = "tool_failed"


class TransientToolError(ChatError):
    """A tool failure worth retrying: the ToolOperationStateMachine's RunTool step retries this error name."""

    code = "transient_tool_error"


# The error codes of a request refused for its rate (botocore's standard retry mode retries them too).
THROTTLING_CODES = frozenset(
    {"ThrottlingException", "ProvisionedThroughputExceededException", "RequestLimitExceeded", "Throttling"}
)


class ServiceRefused(ServiceUnavailable):
    """An AWS service answered a request with an error (botocore ``ClientError``), translated in one place
    (``chatcore.aws.call``). ``aws_code`` is the service's error code, ``reasons`` the per-item codes of a cancelled
    DynamoDB transaction (``"None"`` for an item that passed) and ``item`` the item a failed condition saw, when
    asked for. The adapters turn the refusals they expect into their answer (None, False, ``NotFound``, ...);
    any other stays a 503 like every failed request. A request DynamoDB refuses as invalid is ``InvalidServiceRequest``
    instead."""

    def __init__(
        self, message: str, *, aws_code: str, reasons: tuple[str, ...] = (), item: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.aws_code = aws_code
        self.reasons = reasons
        self.item = item

    @property
    def cancelled(self) -> bool:
        """A DynamoDB transaction was cancelled (``reasons`` says which items failed and why)."""
        return self.aws_code == "TransactionCanceledException"

    @property
    def throttled(self) -> bool:
        """The service refused the request for its rate (nothing was applied), after botocore's own retries."""
        return self.aws_code in THROTTLING_CODES

    @property
    def condition_failed(self) -> bool:
        """A condition was false: of a single write, or of at least one item of a cancelled transaction."""
        return self.aws_code == "ConditionalCheckFailedException" or (
            self.cancelled and "ConditionalCheckFailed" in self.reasons
        )


class InvalidServiceRequest(ChatError):
    """DynamoDB refused a request as invalid (``ValidationException``, or a transaction cancelled for an item's
    ``ValidationError``). Input reaches AWS only once it has passed our validation, so this is our bug (a
    request built wrong, or a limit our validation misses): a 500 with its own code, logged, never a 503, which would
    tell the client to retry what can only fail again. ``aws_code`` and ``reasons`` as in ``ServiceRefused``."""

    status = 500
    code = "invalid_service_request"

    def __init__(self, message: str, *, aws_code: str, reasons: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.aws_code = aws_code
        self.reasons = reasons
