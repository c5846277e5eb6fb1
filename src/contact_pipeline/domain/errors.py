"""Error types shared by validation, handlers and adapters.

Every error states whether it is retriable. Only the agent decides what to do
with an error: retry the batch, reject the command or dead-letter the message.
"""

from __future__ import annotations

from typing import Any


class PipelineError(Exception):
    """Base class of the project's errors."""

    retriable: bool = False


class FieldError(PipelineError):
    """A value failed validation; the command is rejected, never retried.

    `code` is machine-readable (``invalid_email``, ``invalid_phone`` and so on),
    `field` is the JSON path of the value in the payload (``email``,
    ``preferences.timezone``) and `reason` states what is wrong and what to do.
    """

    retriable = False

    def __init__(self, field: str, value: Any, reason: str, code: str = "invalid_value") -> None:
        self.field = field
        self.value = value
        self.reason = reason
        self.code = code
        super().__init__(f"{field}: invalid value {value!r}: {reason}")

    def to_dict(self) -> dict[str, Any]:
        """Return the error as a JSON-ready detail for a command result."""
        return {"field": self.field, "value": _json_safe(self.value), "reason": self.reason}


class CommandRejected(PipelineError):
    """The command is valid but cannot apply to the current state.

    Examples: a stale ``expectedVersion``, an update of a missing contact, an
    e-mail address that another contact already has.
    """

    retriable = False

    def __init__(self, code: str, message: str, **details: Any) -> None:
        self.code = code
        self.message = message
        self.details = details
        super().__init__(f"{code}: {message}")


class StoreUnavailable(PipelineError):
    """The document store failed or timed out; the whole batch is retried."""

    retriable = True


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    return repr(value)
