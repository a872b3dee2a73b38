"""Errors raised by rsmq_core.

Every error is an :class:`RSMQError`; each subclass carries RSMQ's own error name in
``.name`` (the same string Node RSMQ puts in ``err.name``) and RSMQ's message text::

    RSMQError
    ├── QueueNotFound        queueNotFound        "Queue not found"
    ├── QueueExists          queueExists          "Queue exists"
    ├── InvalidFormat        invalidFormat        "Invalid qname format", "Invalid id format"
    ├── InvalidValue         invalidValue         "vt must be between 0 and 9999999", ...
    ├── MissingParameter     missingParameter     "No qname supplied", "No id supplied"
    ├── MessageTooLong       messageTooLong       "Message too long"
    ├── MessageNotString     messageNotString     "Message must be a string"
    ├── NoAttributeSupplied  noAttributeSupplied  "No attribute was supplied"
    ├── IndexConflict        indexConflict        (ours) "{ns}:QUEUES is a <type>, not ..."
    └── NotReplicated        notReplicated        (ours) "Message <id> is stored on the master..."

``str(err)`` is RSMQ's message byte for byte, as Node RSMQ gives it for the same bad input, so
code written against RSMQ's texts keeps working. What we know beyond it (the value refused,
the index in a batch, why a queue name is reserved) is in ``err.detail`` (None when there is
nothing to add); the CLI and the web API show it.

An empty receive is not an error: it returns ``None``. Connection problems surface as
redis-py's own ``redis.exceptions.ConnectionError``.
"""

from __future__ import annotations

from typing import ClassVar


class RSMQError(Exception):
    """Base of every error rsmq_core raises for a request it refuses."""

    name: ClassVar[str] = "rsmqError"
    default_message: ClassVar[str] = "RSMQ error"

    def __init__(self, message: str | None = None, *, detail: str | None = None) -> None:
        self.message = message or self.default_message
        self.detail = detail
        super().__init__(self.message)

    def __repr__(self) -> str:
        extra = "" if self.detail is None else f", detail={self.detail!r}"
        return f"{type(self).__name__}({self.message!r}{extra})"

    def explain(self) -> str:
        """The message with the detail, for people: ``"Message too long (at index 2 of the
        batch)"``."""
        return self.message if self.detail is None else f"{self.message} ({self.detail})"


class QueueNotFound(RSMQError):
    """The named queue does not exist."""

    name = "queueNotFound"
    default_message = "Queue not found"


class QueueExists(RSMQError):
    """create_queue was asked for a queue that already exists."""

    name = "queueExists"
    default_message = "Queue exists"


class InvalidFormat(RSMQError):
    """A queue name or message id does not match RSMQ's format."""

    name = "invalidFormat"
    default_message = "Invalid format"


class InvalidValue(RSMQError):
    """A numeric option (vt, delay, maxsize, count) is out of range or not an integer."""

    name = "invalidValue"
    default_message = "Invalid value"


class MissingParameter(RSMQError):
    """A required parameter (queue name, message id) is empty or missing."""

    name = "missingParameter"
    default_message = "Missing parameter"


class MessageTooLong(RSMQError):
    """The message is longer (in UTF-8 bytes) than the queue's maxsize."""

    name = "messageTooLong"
    default_message = "Message too long"


class MessageNotString(RSMQError):
    """The message is not a ``str``."""

    name = "messageNotString"
    default_message = "Message must be a string"


class NoAttributeSupplied(RSMQError):
    """set_queue_attributes was called without vt, delay or maxsize."""

    name = "noAttributeSupplied"
    default_message = "No attribute was supplied"


class IndexConflict(RSMQError):
    """The queue index ``{ns}:QUEUES`` holds something else than a set: another program wrote
    that key. Not one of RSMQ's errors (RSMQ fails with Redis's WRONGTYPE there). rsmq_core
    never deletes or changes the key: queues cannot be listed, created or deleted in that
    namespace until someone who knows what it is renames or removes it."""

    name = "indexConflict"
    default_message = "The queue index is not a set"


class NotReplicated(RSMQError):
    """A send with ``min_replicas`` whose messages are stored on the master, but fewer
    replicas than asked confirmed them (Redis's ``WAIT``) within the timeout. Not one of
    RSMQ's errors. The messages are in the queue (``ids``) and will be delivered; what is
    not promised is that they survive the master failing before a replica has them.
    Sending them again would store them twice."""

    name = "notReplicated"
    default_message = "Message stored on the master but not confirmed by the replicas"

    def __init__(
        self,
        message: str | None = None,
        *,
        detail: str | None = None,
        ids: tuple[str, ...] = (),
        replicas: int = 0,
        wanted: int = 0,
    ) -> None:
        super().__init__(message, detail=detail)
        self.ids, self.replicas, self.wanted = ids, replicas, wanted


ERRORS_BY_NAME: dict[str, type[RSMQError]] = {
    cls.name: cls
    for cls in (
        QueueNotFound,
        QueueExists,
        InvalidFormat,
        InvalidValue,
        MissingParameter,
        MessageTooLong,
        MessageNotString,
        NoAttributeSupplied,
        IndexConflict,
    )
}
