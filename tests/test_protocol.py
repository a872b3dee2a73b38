"""The I/O-free layer: every script call declares its keys, and they share one cluster slot
when the namespace is hash-tagged."""

from __future__ import annotations

import re
import string
from collections import Counter

from redis.crc import key_slot

from rsmq_core import RSMQError, schedules
from rsmq_core import _protocol as p
from rsmq_core._scripts import NAMES, source

SOME_ID = "a" * 32


def replies(call: p.Call) -> list[bytes]:
    """A plausible reply to each call, enough to drive an operation through all its steps."""
    if call.script == "move_out":
        return [b"ok", SOME_ID.encode(), b"body", b"1"]
    if call.script == "delete_queue":
        return [b"ok", b"1", b"0"]  # it has an events stream (the sweep follows), no dedup keys
    if call.script == "sweep":
        return [b"ok", b"0", b"3"]
    return [b"ok", b"x" * 32]


def encoded(name: str | bytes) -> bytes:
    return name.encode() if isinstance(name, str) else name


def calls_of(steps: p.Steps) -> list[p.Call]:
    calls, reply = [], None
    try:
        while True:
            calls.append(steps.send(reply))
            reply = replies(calls[-1])
    except StopIteration:
        return calls


def every_call(ns: str, *, cluster: bool = False) -> list[p.Call]:
    keys, dead = p.Keys.of(ns, "q", cluster), p.Keys.of(ns, "dead", cluster)
    return [
        *calls_of(p.create_queue_steps(keys, 30, 0, 65536)),
        *calls_of(p.delete_queue_steps(keys)),
        p.get_attributes(keys),
        p.set_attributes(keys, 1, None, None),
        p.send(keys, [b"x"], "", all_or_none=True, realtime=True),
        p.send(keys, [b"x", b"y"], "", all_or_none=True, realtime=True, dedup_ids=["d:1", ""]),
        p.receive(keys, 1, "", pop=False),
        p.receive(keys, 1, "", pop=False, deletes=[(SOME_ID, 1)]),
        p.delete(keys, [(SOME_ID, 1)]),
        p.change_visibility(keys, SOME_ID, 1, None),
        p.next_visible(keys),
        *calls_of(p.move_steps(keys, dead, [(SOME_ID, "")], realtime=True)),
        p.purge(keys),
        p.notify(keys),
        p.peek(keys, 0, 50),
        p.pause(keys, True),
        p.make_visible(keys, SOME_ID),
        p.expire(keys, 0, 1000),
        *calls_of(p.move_selected_steps(keys, dead, [SOME_ID], realtime=True)),
        *([] if cluster else [schedules.list_call(ns, cluster)]),  # refused on a cluster
    ]


def test_every_script_has_a_call_and_a_header():
    used = {c.script for c in every_call("rsmq") + every_call("rsmq", cluster=True)}
    assert sorted(used) == sorted(NAMES)
    for name in NAMES:
        assert re.search(r"^-- KEYS\[1\]", source(name), re.M), f"{name} lacks its header"


def test_a_script_carries_only_the_helpers_it_calls():
    """Redis makes every helper in front of a script anew at each call: the loader puts in
    only those the script calls, and those they call (the suite runs every script)."""
    for name in NAMES:
        text = source(name)
        defined = re.findall(r"^local function (\w+)", text, re.M)
        code = re.sub(r"--[^\n]*|^local function \w+", "", text, flags=re.M)
        for helper in defined:
            assert re.search(rf"\b{helper}\b", code), f"{name} carries {helper}, never called"
    assert "local function expire(" not in source("send")  # the receive path's, not a send's


def test_hash_tagged_namespace_keeps_each_call_in_one_slot():
    for call in every_call("{rsmq}"):
        assert len({key_slot(encoded(k)) for k in call.keys}) == 1, call.script


def test_cluster_layout_keeps_each_call_in_its_queues_slot():
    q, dead = p.Keys.of("rsmq", "q", True), p.Keys.of("rsmq", "dead", True)
    assert (q.zset, q.hash, q.queues, q.channel) == (
        "rsmq:{q}",
        "rsmq:{q}:Q",
        "rsmq:QUEUES",
        "rsmq:rt:{q}",
    )
    slots = {key_slot(k.encode()) for k in (q.zset, q.hash, q.channel, q.channel + ":events")}
    assert slots == {key_slot(b"q")}
    assert key_slot(dead.zset.encode()) != key_slot(q.zset.encode())
    for call in every_call("rsmq", cluster=True):
        assert len({key_slot(encoded(k)) for k in call.keys}) == 1, call.script
        if call.script != "index":
            assert encoded(q.queues) not in map(encoded, call.keys), call.script


def test_cluster_move_copies_then_deletes_fenced_by_the_count_it_copied():
    q, dead = p.Keys.of("rsmq", "q", True), p.Keys.of("rsmq", "dead", True)
    calls = calls_of(p.move_steps(q, dead, [(SOME_ID, "")], realtime=False))
    assert [c.script for c in calls] == ["move_out", "move_in", "delete"]
    assert calls[1].keys == [dead.zset, dead.hash]
    assert calls[2].args == [SOME_ID, "1", ""]


def test_scripts_touch_only_declared_keys():
    # Keys reach Redis only through KEYS[n]: no script builds a key name from ARGV or text.
    # One exception: sweep.lua deletes the status keys its SCAN finds (their names are not
    # known beforehand); they match the queue's own prefix, so on a cluster they are in the
    # slot of its KEYS[1].
    for name in NAMES:
        text = source(name)
        for command in re.findall(r'redis\.call\("(\w+)", ([^,)]+)', text):
            verb, first = command
            if verb in ("TIME", "PUBLISH", "SPUBLISH", "SCAN"):
                continue
            if (name, verb, first) == ("sweep", "DEL", "unpack(scanned[2]"):
                continue
            # And a send that records events keeps each message's last status under the
            # prefix it is given and the id it made: in the queue's slot, as the stream.
            if (name, verb, first) == ("send", "SET", "ARGV[12] .. id"):
                continue
            declared = ("KEYS[", "hash", "zset", "index", "expired_key")
            assert first.startswith(declared), f"{name}: {verb} {first}"


def test_delete_queue_sweeps_statuses_then_the_stream_and_checks_the_index_first():
    q = p.Keys.of("rsmq", "q", True)
    calls = calls_of(p.delete_queue_steps(q))
    assert [(c.script, c.args[:1]) for c in calls] == [
        ("index", ["check"]),
        ("delete_queue", ["q"]),
        ("index", ["remove"]),
        ("sweep", ["0"]),
    ]
    assert calls[3].keys == [q.events] and calls[3].args[1] == "rsmq:{q}:status:" + "?" * 32


def test_a_send_names_its_marker_hash_and_each_dedup_key():
    k = p.Keys.of("rsmq", "q", True)
    call = p.send(
        k, [b"a", b"b", b"c"], "", all_or_none=True, realtime=False, dedup_ids=["x", "", "y/1"]
    )
    assert list(map(encoded, call.keys)) == [
        b"rsmq:{q}",
        b"rsmq:{q}:Q",
        k.sent(p.retry_span()).encode(),
        b"rsmq:{q}:dedup:x",
        b"rsmq:{q}:dedup:y/1",
    ]
    assert call.args[6:] == ["d-d"]
    plain = p.send(k, [b"a"], "", all_or_none=False, realtime=False)
    assert len(plain.args) == 6 and len(plain.keys) == 3  # no argument for what is not there


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
    assert re.fullmatch(rb"[A-Za-z0-9]{22}", suffix)
    assert p.new_id_suffixes(1) != suffix
    stamp_us = 1_700_000_000_123_456
    prefix = ""
    n = stamp_us
    while n:
        n, d = divmod(n, 36)
        prefix = "0123456789abcdefghijklmnopqrstuvwxyz"[d] + prefix
    assert len(prefix) == 10
    assert p.sent_ms(prefix + suffix.decode()) == 1_700_000_000_123.456


def test_id_suffixes_use_every_character_evenly():
    chars = p.new_id_suffixes(5000)
    assert len(chars) == 110_000
    counts = Counter(chars.decode())
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
