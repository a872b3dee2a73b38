"""The I/O-free layer: every script call declares its keys, and they share one cluster slot
when the namespace is hash-tagged."""

from __future__ import annotations

import re
import string
from collections import Counter

from redis.crc import key_slot

from rsmq_core import RSMQError
from rsmq_core import _protocol as p
from rsmq_core._scripts import NAMES, source

SOME_ID = "a" * 32


def every_call(ns: str) -> list[p.Call]:
    keys = p.Keys.of(ns, "q")
    return [
        p.create_queue(ns, "q", 30, 0, 65536),
        p.delete_queue(ns, "q"),
        p.get_attributes(ns, "q"),
        p.set_attributes(ns, "q", 1, None, None),
        p.send(keys, [b"x"], "", all_or_none=True, realtime=True),
        p.receive(keys, 1, "", pop=False),
        p.delete(keys, [(SOME_ID, 1)]),
        p.change_visibility(ns, "q", SOME_ID, 1, None),
        p.next_visible(ns, "q"),
        p.move(keys, p.Keys.of(ns, "dead"), [(SOME_ID, "")], realtime=True),
        p.purge(ns, "q"),
    ]


def test_every_script_has_a_call_and_a_header():
    assert sorted(c.script for c in every_call("rsmq")) == sorted(NAMES)
    for name in NAMES:
        assert re.search(r"^-- KEYS\[1\]", source(name), re.M), f"{name} lacks its header"


def test_hash_tagged_namespace_keeps_each_call_in_one_slot():
    for call in every_call("{rsmq}"):
        assert len({key_slot(k.encode()) for k in call.keys}) == 1, call.script


def test_scripts_touch_only_declared_keys():
    # Keys reach Redis only through KEYS[n]: no script builds a key name from ARGV or text.
    for name in NAMES:
        text = source(name)
        for command in re.findall(r'redis\.call\("(\w+)", ([^,)]+)', text):
            verb, first = command
            if verb in ("TIME", "PUBLISH"):
                continue
            assert first.startswith(("KEYS[", "hash", "zset")), f"{name}: {verb} {first}"


def test_rsmq_key_layout():
    k = p.Keys.of("rsmq", "jobs")
    assert (k.zset, k.hash, k.queues, k.channel) == (
        "rsmq:jobs",
        "rsmq:jobs:Q",
        "rsmq:QUEUES",
        "rsmq:rt:jobs",
    )


def test_id_suffix_alphabet_and_sent_time():
    suffix = p.new_id_suffixes(1)
    assert re.fullmatch(r"[A-Za-z0-9]{22}", suffix)
    assert p.new_id_suffixes(1) != suffix
    stamp_us = 1_700_000_000_123_456
    prefix = ""
    n = stamp_us
    while n:
        n, d = divmod(n, 36)
        prefix = "0123456789abcdefghijklmnopqrstuvwxyz"[d] + prefix
    assert len(prefix) == 10
    assert p.sent_ms(prefix + suffix) == 1_700_000_000_123.456


def test_id_suffixes_use_every_character_evenly():
    chars = p.new_id_suffixes(5000)
    assert len(chars) == 110_000
    counts = Counter(chars)
    assert set(counts) == set(string.ascii_letters + string.digits)
    expected = len(chars) / 62
    assert all(abs(n - expected) < 0.15 * expected for n in counts.values())


def test_keys_are_cached_but_still_checked():
    assert p.Keys.of("rsmq", "q") is p.Keys.of("rsmq", "q")
    for bad in ("a b", "", None, 5):
        try:
            p.Keys.of("rsmq", bad)
        except RSMQError:
            continue
        raise AssertionError(f"{bad!r} accepted")
