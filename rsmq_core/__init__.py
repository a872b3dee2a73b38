"""rsmq_core: Redis Simple Message Queue for Python, wire-compatible with Node RSMQ 0.12."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from ._protocol import Keys, SendEvents
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
from .models import (
    Expired,
    Fired,
    Firing,
    Message,
    Peek,
    PeekedMessage,
    QueueAttributes,
    Received,
    Schedule,
)
from .sync import RSMQ

try:
    # The one place the version is written is pyproject.toml; every package, --version and
    # the OpenAPI document read it from the installed distribution.
    __version__ = _version("rsmq-realtime")
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"

__all__ = [
    "RSMQ",
    "AsyncRSMQ",
    "ConnectionOptions",
    "Expired",
    "Fired",
    "Firing",
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
    "Schedule",
    "SendEvents",
]
