"""Bad input: every boundary RSMQ draws, refused with RSMQ's error and nothing written."""

from __future__ import annotations

import enum

import pytest

from rsmq_core import (
    InvalidFormat,
    InvalidValue,
    MessageNotString,
    MessageTooLong,
    MissingParameter,
    NoAttributeSupplied,
    RSMQError,
)

NOT_INTEGERS = [-1.5, 1.5, "3", True, [1]]


def snapshot(r, ns):
    # The suite's server holds every earlier test's keys: SCAN's default COUNT of 10 would take
    # a round trip per ten of them, for each snapshot.
    return {k: (r.type(k), r.dump(k)) for k in r.scan_iter(f"{ns}:*", count=10_000)}


@pytest.mark.parametrize("qname", ["a" * 160, "A-z_0-9", "x"])
def test_qname_accepted(rsmq, qname):
    rsmq.create_queue(qname)
    assert qname in rsmq.list_queues()


@pytest.mark.parametrize("qname", ["a" * 161, "has space", "colon:name", "dot.name", "é", "a/b"])
def test_qname_refused(rsmq, r, qname):
    with pytest.raises(InvalidFormat, match=r"^Invalid qname format$") as exc:
        rsmq.create_queue(qname)
    assert exc.value.name == "invalidFormat"
    for call in (
        lambda: rsmq.send_message(qname, "x"),
        lambda: rsmq.receive_message(qname),
        lambda: rsmq.get_queue_attributes(qname),
        lambda: rsmq.delete_queue(qname),
    ):
        with pytest.raises(InvalidFormat):
            call()
    assert snapshot(r, rsmq.ns) == {}


@pytest.mark.parametrize("qname", ["", None])
def test_qname_missing(rsmq, qname):
    with pytest.raises(MissingParameter, match=r"^No qname supplied$") as exc:
        rsmq.create_queue(qname)
    assert exc.value.name == "missingParameter"


def test_qname_of_wrong_type(rsmq):
    with pytest.raises(InvalidFormat):
        rsmq.create_queue(123)


@pytest.mark.parametrize("option", ["vt", "delay"])
@pytest.mark.parametrize("value", [0, 1, 9_999_999])
def test_seconds_accepted(rsmq, option, value):
    rsmq.create_queue("q", **{option: value})
    assert getattr(rsmq.get_queue_attributes("q"), option) == value
    assert getattr(rsmq.set_queue_attributes("q", **{option: value}), option) == value


@pytest.mark.parametrize("option", ["vt", "delay"])
@pytest.mark.parametrize("value", [-1, 10_000_000, *NOT_INTEGERS])
def test_seconds_refused(rsmq, r, option, value):
    with pytest.raises(InvalidValue, match=f"^{option} must be between 0 and 9999999") as exc:
        rsmq.create_queue("q", **{option: value})
    assert exc.value.name == "invalidValue"
    assert snapshot(r, rsmq.ns) == {}
    rsmq.create_queue("q")
    before = snapshot(r, rsmq.ns)
    with pytest.raises(InvalidValue, match=f"^{option} must be between"):
        rsmq.set_queue_attributes("q", **{option: value})
    if option == "vt":
        with pytest.raises(InvalidValue):
            rsmq.receive_message("q", vt=value)
        with pytest.raises(InvalidValue):
            rsmq.change_message_visibility("q", "a" * 32, value)
    else:
        with pytest.raises(InvalidValue):
            rsmq.send_message("q", "x", delay=value)
        with pytest.raises(InvalidValue):
            rsmq.send_messages("q", ["x"], delay=value)
    assert snapshot(r, rsmq.ns) == before


def test_non_integer_names_what_it_got(rsmq):
    with pytest.raises(InvalidValue, match=r"^vt must be between 0 and 9999999$") as refused:
        rsmq.create_queue("q", vt="3")
    assert refused.value.detail == "got '3', not an integer"


@pytest.mark.parametrize("value", [1024, 65536, -1])
def test_maxsize_accepted(rsmq, value):
    rsmq.create_queue("q", maxsize=value)
    assert rsmq.get_queue_attributes("q").maxsize == value


@pytest.mark.parametrize("value", [1023, 65537, 0, -2, 2048.0, "2048", True])
def test_maxsize_refused(rsmq, r, value):
    with pytest.raises(InvalidValue, match=r"^maxsize must be between 1024 and 65536"):
        rsmq.create_queue("q", maxsize=value)
    rsmq.create_queue("q")
    with pytest.raises(InvalidValue, match=r"^maxsize must be between 1024 and 65536"):
        rsmq.set_queue_attributes("q", maxsize=value)
    assert rsmq.get_queue_attributes("q").maxsize == 65536


def test_set_without_attributes(rsmq):
    rsmq.create_queue("q")
    with pytest.raises(NoAttributeSupplied, match=r"^No attribute was supplied$") as exc:
        rsmq.set_queue_attributes("q")
    assert exc.value.name == "noAttributeSupplied"


@pytest.mark.parametrize("unit", ["a", "é", "€", "🎉"])  # 1, 2, 3 and 4 UTF-8 bytes
def test_message_of_exactly_maxsize_bytes(rsmq, unit):
    rsmq.create_queue("q", maxsize=1024)
    width = len(unit.encode())
    fits = unit * (1024 // width) + "a" * (1024 % width)
    assert len(fits.encode()) == 1024
    rsmq.send_message("q", fits)
    over = fits[:-1] + ("é" if fits[-1] == "a" else fits[-1] + "a")
    assert len(over.encode()) > 1024
    with pytest.raises(MessageTooLong, match=r"^Message too long$") as exc:
        rsmq.send_message("q", over)
    assert exc.value.name == "messageTooLong"
    assert rsmq.pop_message("q").message == fits
    a = rsmq.get_queue_attributes("q")
    assert (a.msgs, a.totalsent) == (0, 1)


def test_multibyte_message_within_length_but_over_bytes(rsmq):
    rsmq.create_queue("q", maxsize=1024)
    body = "é" * 600  # 600 characters, 1200 bytes
    with pytest.raises(MessageTooLong):
        rsmq.send_message("q", body)


def test_batch_with_one_message_too_long_sends_none(rsmq):
    rsmq.create_queue("q", maxsize=1024)
    with pytest.raises(MessageTooLong, match=r"^Message too long$") as refused:
        rsmq.send_messages("q", ["a", "b", "x" * 1025, "c"])
    assert refused.value.detail == "at index 2 of the batch"
    assert rsmq.get_queue_attributes("q").msgs == 0


@pytest.mark.parametrize("message", [None, 1, b"bytes", {"a": 1}, ["x"]])
def test_message_not_string(rsmq, message):
    rsmq.create_queue("q")
    with pytest.raises(MessageNotString, match=r"^Message must be a string") as exc:
        rsmq.send_message("q", message)
    assert exc.value.name == "messageNotString"
    with pytest.raises(MessageNotString):
        rsmq.send_messages("q", ["ok", message])
    assert rsmq.get_queue_attributes("q").msgs == 0


def test_message_with_lone_surrogate(rsmq):
    rsmq.create_queue("q")
    with pytest.raises(MessageNotString, match=r"^Message must be a string$") as refused:
        rsmq.send_message("q", "a\ud800b")
    assert refused.value.detail == "it is not valid Unicode: a lone surrogate at index 1"


def test_messages_must_be_a_list(rsmq):
    rsmq.create_queue("q")
    with pytest.raises(MessageNotString, match="messages must be a list"):
        rsmq.send_messages("q", "abc")
    with pytest.raises(InvalidValue, match="at most 1000 messages"):
        rsmq.send_messages("q", ["x"] * 1001)
    assert rsmq.get_queue_attributes("q").msgs == 0


@pytest.mark.parametrize("mid", ["a" * 31, "a" * 33, "a" * 31 + "!", "é" * 32, 5])
def test_id_refused(rsmq, mid):
    rsmq.create_queue("q")
    for call in (
        lambda: rsmq.delete_message("q", mid),
        lambda: rsmq.delete_messages("q", [mid]),
        lambda: rsmq.delete_messages("q", ["a" * 32, mid, "b" * 32]),
        lambda: rsmq.change_message_visibility("q", mid, 1),
    ):
        with pytest.raises(InvalidFormat, match=r"^Invalid id format$"):
            call()


@pytest.mark.parametrize("mid", ["", None])
def test_id_missing(rsmq, mid):
    rsmq.create_queue("q")
    with pytest.raises(MissingParameter, match=r"^No id supplied$"):
        rsmq.delete_message("q", mid)


def test_ids_must_be_a_list(rsmq):
    rsmq.create_queue("q")
    with pytest.raises(InvalidValue, match="ids must be a list"):
        rsmq.delete_messages("q", "a" * 32)
    with pytest.raises(InvalidValue, match=r"^at most 1000 ids go in one batch$") as refused:
        rsmq.delete_messages("q", ["a" * 32] * 3000)
    assert refused.value.detail == "got 3000"
    assert rsmq.delete_messages("q", ["a" * 32] * 1000) == 0


def test_delete_messages_takes_at_most_a_batch(rsmq):
    rsmq.create_queue("q")
    ids = rsmq.send_messages("q", ["x"] * 1000)
    with pytest.raises(InvalidValue, match=r"^at most 1000 ids go in one batch$") as refused:
        rsmq.delete_messages("q", ids * 3)
    assert refused.value.detail == "got 3000"
    assert rsmq.get_queue_attributes("q").msgs == 1000
    assert rsmq.delete_messages("q", ids) == 1000


@pytest.mark.parametrize("count", [0, 1001, -1, 1.5, "2"])
def test_receive_count_refused(rsmq, count):
    rsmq.create_queue("q")
    with pytest.raises(InvalidValue, match=r"^count must be between 1 and 1000"):
        rsmq.receive_messages("q", count)


def test_namespace_refused():
    from rsmq_core import RSMQ

    with pytest.raises(InvalidFormat, match="Invalid ns format"):
        RSMQ.from_url("redis://127.0.0.1:1/0", ns="")
    with pytest.raises(InvalidFormat, match="Invalid ns format"):
        RSMQ.from_url("redis://127.0.0.1:1/0", ns="a\ud800")


def test_announce_channel_refused(rsmq, r):
    rsmq.create_queue("q")
    rsmq.send_message("q", "x")
    before = snapshot(r, rsmq.ns)
    for announce in ("", "ch\udfff", 5):
        with pytest.raises(InvalidValue, match=r"^announce must be a channel name"):
            rsmq.receive_batch("q", 1, announce=announce)
    assert snapshot(r, rsmq.ns) == before


def test_every_error_is_an_rsmq_error_with_rsmq_name():
    import rsmq_core

    names = {
        getattr(rsmq_core, n).name
        for n in rsmq_core.__all__
        if isinstance(getattr(rsmq_core, n), type)
        and issubclass(getattr(rsmq_core, n), RSMQError)
        and getattr(rsmq_core, n) is not RSMQError
    }
    # RSMQ's eight, and two of ours: {ns}:QUEUES is someone else's key (RSMQ fails there with
    # Redis's WRONGTYPE), and a send with min_replicas that the replicas did not confirm.
    assert names == {
        "queueNotFound",
        "queueExists",
        "invalidFormat",
        "invalidValue",
        "missingParameter",
        "messageTooLong",
        "messageNotString",
        "noAttributeSupplied",
        "indexConflict",
        "notReplicated",
    }


@pytest.mark.parametrize("rc", [0, -1, 1.5, "1", True])
def test_fence_refused(rsmq, rc):
    rsmq.create_queue("q")
    mid = rsmq.send_message("q", "x")
    for call in (
        lambda: rsmq.delete_message("q", mid, rc=rc),
        lambda: rsmq.change_message_visibility("q", mid, 1, rc=rc),
        lambda: rsmq.move_message("q", mid, "q", rc=rc),
    ):
        with pytest.raises(InvalidValue, match=r"^rc must be a receive count of 1 or more"):
            call()
    assert rsmq.get_queue_attributes("q").msgs == 1


@pytest.mark.parametrize("count", [0, 1001, 1.5])
def test_redrive_count_refused(rsmq, count):
    rsmq.create_queue("q")
    with pytest.raises(InvalidValue, match=r"^count must be between 1 and 1000"):
        rsmq.redrive_messages("q", "q", count=count)


class Seconds(enum.IntEnum):
    """An int subclass whose repr is not its digits (redis-py sends an int's repr)."""

    FIVE = 5
    ONE = 1


def test_int_subclasses_are_stored_as_their_digits(rsmq, r):
    rsmq.create_queue("q", vt=Seconds.FIVE, delay=Seconds.ONE, maxsize=-1)
    assert r.hmget(f"{rsmq.ns}:q:Q", ["vt", "delay", "maxsize"]) == ["5", "1", "-1"]
    rsmq.set_queue_attributes("q", delay=Seconds.ONE - 1)
    mid = rsmq.send_message("q", "x", delay=Seconds.ONE - 1)
    got = rsmq.receive_messages("q", Seconds.ONE, vt=Seconds.FIVE)
    assert [m.id for m in got] == [mid]
    assert rsmq.change_message_visibility("q", mid, Seconds.FIVE, rc=Seconds.ONE)
    rsmq.create_queue("dead")
    assert rsmq.move_message("q", mid, "dead", rc=Seconds.ONE) is not None
    assert rsmq.redrive_messages("dead", "q", count=Seconds.FIVE) == 1


class Name(str):
    """A str subclass as a queue name (StrEnum members are such)."""


def test_str_subclass_queue_names_work_and_are_checked(rsmq, r):
    rsmq.create_queue(Name("q"))
    assert rsmq.send_message(Name("q"), "x")
    assert rsmq.list_queues() == ["q"]
    with pytest.raises(InvalidFormat, match=r"^Invalid qname format$"):
        rsmq.create_queue(Name("no spaces"))
    with pytest.raises(MissingParameter):
        rsmq.create_queue(Name(""))


def test_delete_messages_refuses_one_id_past_the_batch(rsmq):
    rsmq.create_queue("q")
    ids = rsmq.send_messages("q", ["x"] * 1000)
    with pytest.raises(InvalidValue, match=r"^at most 1000 ids go in one batch$") as refused:
        rsmq.delete_messages("q", [*ids, ids[0]])
    assert refused.value.detail == "got 1001"
    assert rsmq.get_queue_attributes("q").msgs == 1000
