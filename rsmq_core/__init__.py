"""rsmq_core: Redis Simple Message Queue for Python, wire-compatible with Node RSMQ 0.12."""

from ._protocol import Keys
from .client import AsyncRSMQ
from .connection import ConnectionOptions
from .errors import (
    IndexConflict,
    InvalidFormat,
    InvalidValue,
    MessageNotString,
    MessageTooLong,
    MissingParameter,
    NoAttributeSupplied,
    NotReplicated,
    QueueExists,
    QueueNotFound,
    RSMQError,
)
from .models import Message, Peek, PeekedMessage, QueueAttributes, Received
from .sync import RSMQ

__all__ = [
    "RSMQ",
    "AsyncRSMQ",
    "ConnectionOptions",
    "IndexConflict",
    "InvalidFormat",
    "InvalidValue",
    "Keys",
    "Message",
    "MessageNotString",
    "MessageTooLong",
    "MissingParameter",
    "NoAttributeSupplied",
    "NotReplicated",
    "Peek",
    "PeekedMessage",
    "QueueAttributes",
    "QueueExists",
    "QueueNotFound",
    "RSMQError",
    "Received",
]
