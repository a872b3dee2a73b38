"""Message bodies of every kind: any Unicode, NUL bytes, 1 MiB on an unlimited queue.

Through the library (sync and async), the REST API and a real worker, a body comes back
exactly as sent and is stored as its UTF-8 bytes, or is refused with a clear error (lone
surrogates have no UTF-8 form; too long for the queue's maxsize or the API's MAX_BODY).
"""

from __future__ import annotations

import json

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rsmq_core import RSMQ, MessageNotString, MessageTooLong
from support.workers import WorkerProcess, wait_for
from tests.handlers import done

MIB = 1 << 20
SAMPLES = {
    "nul": "a\x00b\x00\x00",
    "astral": "𝄞 🎉 🧑‍🚀 👩🏽‍💻 \U0001f1eb\U0001f1f7 \U0010ffff",
    "combining": "e\u0301 a\u0308\u0308\u0308 Z\u0351\u036b\u0343\u036a\u0302\u036b",
    "rtl": "\u202eabc\u202c עברית العربية \u200f\u061c",
    "invisible": "\ufeff\u200b\u200c\u200d\u2060\u00ad",
    "noncharacters": "\ufffe\uffff\U0001fffe\ufffd",
    "controls": "".join(chr(i) for i in range(32)) + "\x7f\x80\x9f",
    "line_separators": "\u2028\u2029\r\n\r\x85",
    "json_escapes": '{"a": "\\u0000", "b": "\\ud800"}',
    "empty": "",
}
BIG = {
    "ascii": "x" * MIB,
    "four_byte": "🎉" * (MIB // 4),  # 1 MiB of UTF-8, a quarter of the characters
    "nul_and_mixed": "\x00é日🎉" * (MIB // 10),  # 10 bytes each: just under 1 MiB
}
# The last is a surrogate pair spelled as two code points: UTF-8 cannot encode that either.
JSON = {"content-type": "application/json"}  # what the API takes (415 otherwise)
LONE = ["\ud800", "a\udfffb", "\ud83c\udf89"]


def stored_bytes(redis_url: str, ns: str, qname: str, mid: str) -> bytes | None:
    with redis.Redis.from_url(redis_url) as raw:  # bytes, not decoded
        value: bytes | None = raw.hget(f"{ns}:{qname}:Q", mid)
        return value


@pytest.mark.parametrize("text", SAMPLES.values(), ids=SAMPLES.keys())
def test_any_text_round_trips_byte_for_byte(rsmq, redis_url, text):
    rsmq.create_queue("q")
    one = rsmq.send_message("q", text)
    (batched,) = rsmq.send_messages("q", [text])
    for mid in (one, batched):
        assert stored_bytes(redis_url, rsmq.ns, "q", mid) == text.encode("utf-8")
    got = rsmq.receive_message("q")
    assert got is not None and (got.id, got.message) == (one, text)
    popped = rsmq.pop_message("q")
    assert popped is not None and (popped.id, popped.message) == (batched, text)


utf8_text = st.text(st.characters(codec="utf-8"), max_size=60)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(utf8_text, min_size=1, max_size=8))
def test_generated_text_round_trips(rsmq, texts):
    if "q" not in rsmq.list_queues():
        rsmq.create_queue("q", maxsize=-1)
    ids = rsmq.send_messages("q", texts)
    got = {m.id: m.message for m in rsmq.pop_messages("q", len(texts))}
    assert got == dict(zip(ids, texts, strict=True))


@pytest.mark.parametrize("text", LONE)
def test_lone_surrogates_are_refused_clearly_and_nothing_is_sent(rsmq, text):
    rsmq.create_queue("q", maxsize=-1)
    at = next(i for i, c in enumerate(text) if 0xD800 <= ord(c) <= 0xDFFF)
    with pytest.raises(MessageNotString, match=r"^Message must be a string$") as refused:
        rsmq.send_message("q", text)
    assert refused.value.detail == f"it is not valid Unicode: a lone surrogate at index {at}"
    with pytest.raises(MessageNotString, match=r"^Message must be a string$") as refused:
        rsmq.send_messages("q", ["fine", text])
    assert "lone surrogate" in str(refused.value.detail)
    assert rsmq.get_queue_attributes("q").msgs == 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("text", BIG.values(), ids=BIG.keys())
def test_one_mib_bodies_round_trip_on_an_unlimited_queue(rsmq, redis_url, text):
    assert len(text.encode()) <= MIB
    rsmq.create_queue("big", maxsize=-1)
    mid = rsmq.send_message("big", text)
    assert stored_bytes(redis_url, rsmq.ns, "big", mid) == text.encode()
    got = rsmq.receive_message("big")
    assert got is not None and got.id == mid and got.message == text
    # ... and refused, with nothing written, by a queue of the default maxsize.
    rsmq.create_queue("small")
    with pytest.raises(MessageTooLong):
        rsmq.send_message("small", text)
    with pytest.raises(MessageTooLong, match=r"^Message too long$") as refused:
        rsmq.send_messages("small", ["ok", text])
    assert refused.value.detail == "at index 1 of the batch"
    assert rsmq.get_queue_attributes("small").msgs == 0


# The REST API ---------------------------------------------------------------------------------


def test_api_round_trips_every_kind_of_text_and_a_mib(make_client, redis_url, ns):
    api = make_client(max_body=4 * MIB)
    assert api.post("/api/queues", json={"qname": "big", "maxsize": -1}).status_code == 201
    # Every text but "": the API refuses an empty message (the library takes it, see above).
    texts = [text for text in (*SAMPLES.values(), *BIG.values()) if text]
    for text in texts:
        sent = api.post("/api/queues/big/messages", json={"message": text})
        assert sent.status_code == 202, sent.text
        mid = sent.json()["id"]
        assert stored_bytes(redis_url, ns, "big", mid) == text.encode()
        got = api.post("/api/queues/big/pop").json()["message"]
        assert (got["id"], got["message"]) == (mid, text)
    # Raw UTF-8 in the JSON (not \\u escapes) is read the same.
    raw = json.dumps({"message": SAMPLES["astral"]}, ensure_ascii=False).encode()
    sent = api.post("/api/queues/big/messages", content=raw, headers=JSON)
    assert sent.status_code == 202
    assert api.post("/api/queues/big/pop").json()["message"]["message"] == SAMPLES["astral"]


def test_api_refuses_bad_text_clearly(make_client):
    api = make_client()  # MAX_BODY 256 KiB
    assert api.post("/api/queues", json={"qname": "big", "maxsize": -1}).status_code == 201
    for text in LONE[:2]:  # json.dumps spells them as \\udXXX escapes, which JSON allows
        body = json.dumps({"message": text}).encode()
        refused = api.post("/api/queues/big/messages", content=body, headers=JSON)
        assert refused.status_code == 400
        assert refused.json()["error"] == "messageNotString"
        assert refused.json()["message"] == "Message must be a string"
        assert "lone surrogate" in refused.json()["detail"]
    # In JSON, escapes of a high and a low surrogate are one character, as the spec says.
    pair = api.post(
        "/api/queues/big/messages", content=b'{"message": "\\ud83c\\udf89"}', headers=JSON
    )
    assert pair.status_code == 202
    assert api.post("/api/queues/big/pop").json()["message"]["message"] == "🎉"
    too_big = api.post("/api/queues/big/messages", json={"message": BIG["ascii"]})
    assert too_big.status_code == 413 and too_big.json()["error"] == "bodyTooLarge"
    not_utf8 = api.post(
        "/api/queues/big/messages", content=b'{"message": "\xff\xfe"}', headers=JSON
    )
    assert not_utf8.status_code == 400 and not_utf8.json()["error"] == "invalidJson"
    assert api.get("/api/queues/big").json()["msgs"] == 0


# A real worker ---------------------------------------------------------------------------------


def test_a_worker_gets_every_body_exactly(redis_url, ns, r):
    with RSMQ.from_url(redis_url, ns=ns, realtime=True) as q:
        q.create_queue("jobs", maxsize=-1)
        worker = WorkerProcess(redis_url, ns, realtime="true")
        try:
            worker.start()
            texts = [*SAMPLES.values(), BIG["four_byte"]]
            ids = [q.send_message("jobs", text) for text in texts]
            wait_for(lambda: len(done(r, ns)) == len(texts), what="every body handled")
            handled = {d["id"]: d["body"] for d in done(r, ns)}
            assert handled == dict(zip(ids, texts, strict=True))
        finally:
            worker.cleanup()
