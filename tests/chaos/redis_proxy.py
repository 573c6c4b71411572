"""A TCP proxy in front of Redis that loses a script call's reply, or holds some calls back:
the ambiguous failures (the call took effect, the client saw an error) and the slow Redis
that the chaos tests put under a processor."""

from __future__ import annotations

import asyncio
import contextlib


class RedisReplyDropper:
    """A TCP proxy in front of Redis that, when told, loses the reply of one script call
    (and, with `slow`, holds back requests that contain a marker: a slow Redis).

    After `drop_next_reply()`, the next request containing `marker` (the decide script's
    SHA, so EVALSHA of that script) is forwarded to Redis whole; when Redis starts answering
    (so the script ran, atomically, and its writes are in), the proxy cuts both connections
    instead of passing the reply on. The client sees a connection error after a call that
    did take effect: the ambiguous failure that a retry must resolve without applying twice.
    """

    def __init__(self, upstream_port: int, marker: bytes, slow: dict[bytes, float] | None = None) -> None:
        self.upstream_port = upstream_port
        self.marker = marker
        self.slow = dict(slow or {})  # request marker -> seconds to hold such a request back
        self.delayed = 0
        self.port = 0
        self.dropped = 0
        self.connections = 0
        self._to_drop = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
        self._aborts: set = set()

    def drop_next_reply(self) -> None:
        self._to_drop += 1

    async def __aenter__(self) -> RedisReplyDropper:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for abort in list(self._aborts):
            abort()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError, ConnectionError):
                await task

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_w.transport.abort()
            self._tasks.discard(task)
            return
        armed = asyncio.Event()

        def cut() -> None:
            client_w.transport.abort()
            up_w.transport.abort()

        self._aborts.add(cut)

        async def requests() -> None:
            tail = b""
            while data := await client_r.read(65536):
                if self._to_drop > 0 and not armed.is_set() and self.marker in tail + data:
                    self._to_drop -= 1
                    armed.set()
                tail = data[-len(self.marker) :]
                for marker, seconds in self.slow.items():
                    if marker in data:
                        self.delayed += 1
                        await asyncio.sleep(seconds)  # a slow Redis, for this kind of call
                up_w.write(data)
                await up_w.drain()
            up_w.close()

        async def replies() -> None:
            while data := await up_r.read(65536):
                if armed.is_set():
                    self.dropped += 1
                    cut()
                    return
                client_w.write(data)
                await client_w.drain()
            client_w.close()

        try:
            await asyncio.gather(requests(), replies())
        except (OSError, ConnectionError):
            cut()
        finally:
            for writer in (client_w, up_w):
                writer.close()
                with contextlib.suppress(OSError, ConnectionError):
                    await writer.wait_closed()
            self._aborts.discard(cut)
            self._tasks.discard(task)
