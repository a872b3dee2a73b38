"""The test suite's private redis-server (see rsmq_core.embedded)."""

from rsmq_core.embedded import EmbeddedRedis as RedisServer

__all__ = ["RedisServer"]
