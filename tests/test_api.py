"""The public API: what the package exports, and the sync facade mirroring the async core."""

from __future__ import annotations

import inspect

import rsmq_core
from rsmq_core import RSMQ, AsyncRSMQ


def test_exports_are_sorted_and_public():
    assert rsmq_core.__all__ == sorted(rsmq_core.__all__, key=lambda n: (not n.isupper(), n))
    for name in rsmq_core.__all__:
        obj = getattr(rsmq_core, name)
        assert obj.__module__.startswith("rsmq_core."), name
        assert inspect.getdoc(obj), f"{name} has no docstring"


def public_methods(cls):
    return {
        name: member
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and callable(member)
    }


def test_sync_and_async_have_the_same_methods_and_signatures():
    sync, aio = public_methods(RSMQ), public_methods(AsyncRSMQ)
    renamed = {"close": "aclose"}
    assert {renamed.get(n, n) for n in sync} == set(aio)
    for name, method in sync.items():
        other = aio[renamed.get(name, name)]
        assert inspect.signature(method) == inspect.signature(other), name
        if name not in ("from_url", "keys"):
            assert inspect.iscoroutinefunction(other), name
            assert not inspect.iscoroutinefunction(method), name


def test_every_async_method_is_documented():
    for name, method in public_methods(AsyncRSMQ).items():
        assert inspect.getdoc(method), name
