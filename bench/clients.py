"""Raw clients of the web app, for the benchmarks: HTTP/1.1 keep-alive connections that POST
JSON, and a minimal websocket client (RFC 6455, offering permessage-deflate as browsers do).

Both cost a few microseconds a request or frame, far less than a client library's, so that the
server, not the client, is what gets measured. They run on the caller's asyncio loop and talk to
127.0.0.1 only."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import time
import zlib
from collections.abc import Callable
from typing import Any

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Http:
    """One HTTP/1.1 keep-alive connection that POSTs JSON and reads the answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Http:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    def write_post(self, path: str, body: bytes) -> None:
        self.writer.write(
            b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body)
        )

    async def read_response(self) -> tuple[int, bytes]:
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


class Pool:
    """A few keep-alive connections; each POST takes one that is free."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.free: asyncio.Queue[Http] = asyncio.Queue()
        self.conns: list[Http] = []

    async def open(self, n: int) -> Pool:
        for _ in range(n):
            conn = await Http.open(self.port)
            self.conns.append(conn)
            self.free.put_nowait(conn)
        return self

    async def post(self, path: str, body: bytes) -> tuple[float, float, int, bytes]:
        """(time written, time answered, status, body), times by perf_counter."""
        conn = await self.free.get()
        try:
            sent = time.perf_counter()
            conn.write_post(path, body)
            status, data = await conn.read_response()
            return sent, time.perf_counter(), status, data
        finally:
            self.free.put_nowait(conn)

    async def close(self) -> None:
        for conn in self.conns:
            await conn.close()


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


# What a websocket calls with each frame the server sent (parsed), and when it came.
OnFrame = Callable[["Ws", dict[str, Any], float], None]


class Ws(asyncio.Protocol):
    """A minimal websocket client: the handshake, text frames in (permessage-deflate when the
    server takes the offer), masked text frames out, pings answered, close answered. It asks
    for ``/ws?batch=1``, as the pages do: a message is an array of the server's frames.
    ``subscribed`` is settled by the server's first "subscribed" frame."""

    def __init__(self, port: int, on_frame: OnFrame) -> None:
        loop = asyncio.get_running_loop()
        self.port = port
        self.on_frame = on_frame
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[int | None] = loop.create_future()
        self.subscribed: asyncio.Future[None] = loop.create_future()
        for future in (self.opened, self.subscribed):  # nobody may be waiting any more
            future.add_done_callback(_retrieve)
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.handshaken = False
        self.key = base64.b64encode(os.urandom(16))
        self.extensions = ""
        self.inflate: Any = None
        self.fragments: list[bytes] = []
        self.compressed = False
        self.close_code: int | None = None

    @classmethod
    async def connect(cls, port: int, on_frame: OnFrame) -> Ws:
        loop = asyncio.get_running_loop()
        _, ws = await loop.create_connection(lambda: cls(port, on_frame), "127.0.0.1", port)
        try:
            await asyncio.shield(ws.opened)
        except BaseException:
            ws.close()
            raise
        return ws

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(
            b"GET /ws?batch=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
            % (self.port, self.key)
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"websocket handshake failed: {exc}"))
        if not self.subscribed.done():
            self.subscribed.set_exception(ConnectionError("closed before it was subscribed"))
        if not self.closed.done():
            self.closed.set_result(self.close_code)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.buffer += data
        if not self.handshaken:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            del self.buffer[: end + 4]
            headers = {
                k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)
            }
            accept = base64.b64encode(hashlib.sha1(self.key + WS_GUID).digest()).decode()
            if " 101 " not in lines[0] or headers.get("sec-websocket-accept") != accept:
                if not self.opened.done():
                    self.opened.set_exception(ConnectionError(f"handshake refused: {lines[0]}"))
                assert self.transport is not None
                self.transport.close()
                return
            self.extensions = headers.get("sec-websocket-extensions", "")
            if "permessage-deflate" in self.extensions:
                self.inflate = zlib.decompressobj(wbits=-15)
            self.handshaken = True
            if not self.opened.done():
                self.opened.set_result(None)
        buf, pos, size = self.buffer, 0, len(self.buffer)
        while size - pos >= 2:
            b0, length, head = buf[pos], buf[pos + 1] & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if size - pos < head + length:
                break
            payload = bytes(buf[pos + head : pos + head + length])
            pos += head + length
            self._frame(b0, payload, now)
        del buf[:pos]

    def _frame(self, b0: int, payload: bytes, now: float) -> None:
        opcode = b0 & 0x0F
        if opcode in (0, 1, 2):  # continuation, text, binary
            if opcode:
                self.compressed, self.fragments = bool(b0 & 0x40), []
            self.fragments.append(payload)
            if not b0 & 0x80:
                return
            data = b"".join(self.fragments)
            self.fragments = []
            if self.compressed:
                data = self.inflate.decompress(data + b"\x00\x00\xff\xff")
            for frame in json.loads(data):
                self.on_frame(self, frame, now)
                if frame["type"] == "subscribed" and not self.subscribed.done():
                    self.subscribed.set_result(None)
        elif opcode == 8:  # close: answer it, then hang up
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.close()
        elif opcode == 9:  # ping
            self._send(0xA, payload)

    def _send(self, opcode: int, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        n = len(payload)
        if n < 126:
            head = bytes((0x80 | opcode, 0x80 | n))
        elif n < 65536:
            head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
        else:
            head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
        mask = os.urandom(4)
        key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
        masked = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")
        self.transport.write(head + mask + masked)

    def send_json(self, frame: dict[str, Any]) -> None:
        self._send(0x1, json.dumps(frame).encode())

    def close(self) -> None:
        self._send(0x8, (1000).to_bytes(2, "big"))
        if self.transport is not None:
            self.transport.close()
