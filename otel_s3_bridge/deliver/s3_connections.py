"""Kept-alive HTTP/1.1 connections to S3 endpoints for the direct PUT path (`s3_put`): send one
request (a head and a body) and read its answer, parsed by httptools (llhttp, as uvicorn parses).

aiohttp's client spent ~125 µs of CPU on a 23 KB PUT (its request and response objects, timers,
tracing hooks, a stream per body), this ~40: the bytes go straight to the event loop's transport
and the answer is three fields. Everything about the peer is bounded: an answer's head by
`HEAD_MAX` bytes, the body kept by `body_limit` (the rest is read and dropped), each request by a
deadline and by a read timeout that every byte received renews, and the open connections by
`max_connections`. A connection is used again only after a whole answer that allows it (never
while an answer is half read); one taken from the idle pool that fails before a byte of its
answer came (the peer had closed it while it idled) is tried once more on a new connection, which
is safe because a PUT is idempotent; one idle for `IDLE_SECONDS` is closed, not used. HTTPS
endpoints' certificates are checked (against the CA file botocore is given, else the system's).
Failures are `ConnectionError` or `TimeoutError` (both `OSError`), for the sink's one classifier.
Must not follow redirects, retry anything else (the spool does) or log a header (they carry the
signature and the session token).
"""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
from typing import NamedTuple

import aiohappyeyeballs
import httptools

HEAD_MAX = 64 * 1024  # an S3 answer's status line and headers are well under 2 KB
WRITE_CHUNK = 1024 * 1024  # a large body goes out in slices, under the transport's flow control
HAPPY_EYEBALLS_DELAY = 0.25
# Longer idle, a connection is closed rather than used: a NAT or load balancer on the way may have
# dropped it without a word (a PUT on it would wait out its read timeout), and S3 closes its own
# idle connections after about 20 s. aiohttp's client, which this replaced, kept them 15 s.
IDLE_SECONDS = 15.0


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]  # the names asked for (lower case) that the answer carried
    body: bytes  # at most the connection's body_limit


class MalformedAnswer(ConnectionError):
    """The peer's bytes are not an HTTP/1.1 answer, or its head is too large."""


class _Stale(ConnectionError):
    """A connection failed before any byte of its answer came."""


class _Connection(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, keep: frozenset[bytes], body_limit: int) -> None:
        self._loop = loop
        self._keep = keep
        self._body_limit = body_limit
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.open = False
        self.reusable = False
        self._answer: asyncio.Future[Answer] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._read_timeout = 0.0
        self._sent = False
        self._last_byte = 0.0
        self._received = False
        self._head_bytes = 0
        self._headers_done = False
        self._status = 0
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_bytes = 0

    # -- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.open = True

    def data_received(self, data: bytes) -> None:
        if self._answer is None or self._answer.done():  # bytes nobody asked for: the connection is spoilt
            self.reusable = False
            self.transport.close()
            return
        self._received = True
        self._last_byte = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(MalformedAnswer("the peer switched protocols"))
            return
        except httptools.HttpParserError as error:
            self._fail(MalformedAnswer(f"not an HTTP/1.1 answer ({error})"))
            return
        if not self._headers_done:  # what the parser holds of a head is bounded (by this and one read)
            self._head_bytes += len(data)
            if self._head_bytes > HEAD_MAX:
                self._fail(MalformedAnswer(f"the answer's head exceeds {HEAD_MAX} bytes"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self.reusable = False
        if self._answer is not None and not self._answer.done():
            if self._headers_done and self._status >= 200:  # an answer whose end is the connection's
                self._answered()
            elif self._received:
                self._answer.set_exception(ConnectionError("the peer closed the connection mid-answer"))
            else:
                self._answer.set_exception(_Stale("the peer closed the connection before answering"))
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)  # the answer carries the failure

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- httptools callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._answer is None or self._answer.done():  # more after the answer: nothing to reuse
            self.reusable = False

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in self._keep:
            self._headers[name.decode("latin-1")] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        if self._status >= 200:
            self._headers_done = True

    def on_body(self, body: bytes) -> None:
        room = self._body_limit - self._body_bytes
        if room > 0:
            self._body.append(body[:room])
        self._body_bytes += len(body)

    def on_message_complete(self) -> None:
        if self._status < 200:  # `100 Continue` and other interim answers: the real one follows
            self._head_bytes = 0
            self._headers = {}
            return
        # Used again only after a success whose request went out whole: a peer that answered an error
        # early may not have read the rest of the body, which it would take for the next request.
        self.reusable = (self._status < 300 and self._parser.should_keep_alive()
                         and self.transport.get_write_buffer_size() == 0)
        if self._answer is not None and not self._answer.done():
            self._answered()

    def _answered(self) -> None:
        self._answer.set_result(Answer(self._status, self._headers, b"".join(self._body)))

    # -- one exchange ------------------------------------------------------------------------------

    async def exchange(self, head: bytes, body: bytes, deadline: float, read_timeout: float) -> Answer:
        """Send `head` and `body`, return the answer; by the loop's clock `deadline` at the latest,
        and no longer than `read_timeout` without a byte once the body is out."""
        loop = self._loop
        self._answer = answer = loop.create_future()
        self.reusable = False
        self._sent = self._received = self._headers_done = False
        self._head_bytes = self._status = self._body_bytes = 0
        self._headers, self._body = {}, []
        self._deadline, self._read_timeout = deadline, read_timeout
        # One timer, at the earliest the exchange could be late (a small body is out at once); `_watch`
        # sets it again from what happened meanwhile.
        self._timer = loop.call_at(min(deadline, loop.time() + read_timeout), self._watch)
        try:
            transport = self.transport
            if len(body) <= WRITE_CHUNK:
                transport.writelines((head, body))
            else:
                transport.write(head)
                view = memoryview(body)
                for start in range(0, len(body), WRITE_CHUNK):
                    if self._paused:
                        self._drained = loop.create_future()
                        await asyncio.wait((self._drained, answer), return_when=asyncio.FIRST_COMPLETED)
                        if answer.done():  # answered, failed or closed before the body was all out
                            break
                    transport.write(view[start:start + WRITE_CHUNK])
            self._sent = True
            self._last_byte = loop.time()
            return await answer
        finally:
            self._timer.cancel()
            self._answer = self._drained = None
            if not self.reusable and self.open:
                self.transport.close()

    def _watch(self) -> None:
        if self._answer is None or self._answer.done():
            return
        now = self._loop.time()
        if now >= self._deadline:
            self._fail(TimeoutError("the PUT's deadline passed"))
        elif self._sent and now - self._last_byte >= self._read_timeout:
            self._fail(TimeoutError(f"no byte of the answer for {self._read_timeout:g} s"))
        else:
            wake = self._deadline if not self._sent else min(self._deadline, self._last_byte + self._read_timeout)
            self._timer = self._loop.call_at(wake, self._watch)

    def _fail(self, error: Exception) -> None:
        self.reusable = False
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)
        self.transport.close()


class Endpoint(NamedTuple):
    host: str  # a name or an IP literal (without brackets)
    port: int
    https: bool


class Connections:
    """The kept-alive connections of every endpoint the bridge puts to, `max_connections` at once."""

    def __init__(self, *, connect_timeout: float, max_connections: int, keep_headers: tuple[str, ...] = (),
                 body_limit: int = 64 * 1024, ca_bundle: str | None = None,
                 idle_seconds: float = IDLE_SECONDS) -> None:
        """`ca_bundle`: a file of the certificates HTTPS endpoints are checked against, as botocore
        takes it (`AWS_CA_BUNDLE`, a profile's `ca_bundle`); None: the system's."""
        self._ca_bundle = ca_bundle
        self._idle_seconds = idle_seconds
        self._connect_timeout = connect_timeout
        self._keep = frozenset(name.lower().encode() for name in keep_headers)
        self._body_limit = body_limit
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[Endpoint, collections.deque[tuple[float, _Connection]]] = {}  # (idle since, it)
        self._tls: ssl.SSLContext | None = None

    async def request(self, endpoint: Endpoint, head: bytes, body: bytes, *, deadline: float,
                      read_timeout: float) -> Answer:
        """One exchange on a kept-alive connection to `endpoint` (or a new one); `deadline` is by
        the loop's clock and bounds the wait for a slot and the connecting too."""
        loop = asyncio.get_running_loop()
        if self._slots.locked():
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        else:
            await self._slots.acquire()
        try:
            for _ in range(2):
                connection, reused = self._take(endpoint, loop.time())
                if connection is None:
                    connection = await self._connect(endpoint, loop, deadline)
                try:
                    answer = await connection.exchange(head, body, deadline, read_timeout)
                except _Stale:
                    if reused:
                        continue
                    raise ConnectionError("the peer closed the connection before answering") from None
                if connection.reusable:
                    self._idle.setdefault(endpoint, collections.deque()).append((loop.time(), connection))
                return answer
            raise ConnectionError("the peer closed the connection before answering")
        finally:
            self._slots.release()

    def _take(self, endpoint: Endpoint, now: float) -> tuple[_Connection | None, bool]:
        idle = self._idle.get(endpoint)
        while idle and now - idle[0][0] >= self._idle_seconds:  # the oldest first
            _, expired = idle.popleft()
            if expired.open:
                expired.transport.close()
        while idle:
            _, connection = idle.pop()  # the most recently used: the least likely to have been closed
            if connection.open:
                return connection, True
        return None, False

    async def _connect(self, endpoint: Endpoint, loop: asyncio.AbstractEventLoop, deadline: float) -> _Connection:
        tls = None
        if endpoint.https:
            if self._tls is None:
                self._tls = ssl.create_default_context(cafile=self._ca_bundle)
            tls = self._tls
        async with asyncio.timeout_at(min(deadline, loop.time() + self._connect_timeout)):
            # An address at a time, the next one 0.25 s later (RFC 8305): a name whose IPv6 address
            # does not answer still connects over IPv4 within the timeout.
            addresses = await loop.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
            sock = await aiohappyeyeballs.start_connection(addresses, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a body's last segment not held back
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop, self._keep, self._body_limit), sock=sock, ssl=tls,
                    server_hostname=endpoint.host if tls else None)
            except BaseException:
                sock.close()
                raise
        return connection

    def close(self) -> None:
        for idle in self._idle.values():
            for _, connection in idle:
                if connection.open:
                    connection.transport.close()
        self._idle.clear()
