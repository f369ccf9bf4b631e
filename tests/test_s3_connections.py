"""The direct PUT path's connections (`deliver/s3_connections.py`) against peers that misbehave on
a real loopback socket: a head that never ends, a body larger than anyone needs, a kept-alive
connection the peer closed, an early error answer to a body not yet read, silence, an answer that
ends with the connection, a slow reader of a large body. Each peer is an asyncio server of the
test's own; the end-to-end behaviour (S3 errors, redirects, a trickle of `100 Continue`, resets) is
in test_s3_put.py and test_durability.py against moto."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from otel_s3_bridge.deliver.s3_connections import Connections, Endpoint, MalformedAnswer
from otel_s3_bridge.deliver.s3_put import request_head

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


class Peer:
    """A TCP server on 127.0.0.1 that runs `script(reader, writer, peer)` for each connection."""

    def __init__(self, script) -> None:
        self.script = script
        self.connections = 0
        self.requests = 0
        self.seen: dict = {}

    def exchange(self, bodies: list[bytes], *, read_timeout: float = 10, body_limit: int = 64 * 1024,
                 **options) -> list:
        """PUT each body in turn on one `Connections`: the answers, or the errors raised."""
        async def main():
            async def handle(reader, writer):
                self.connections += 1
                try:
                    await self.script(reader, writer, self)
                except (ConnectionError, asyncio.IncompleteReadError):
                    pass
                finally:
                    writer.close()

            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            endpoint = Endpoint("127.0.0.1", server.sockets[0].getsockname()[1], False)
            connections = Connections(connect_timeout=5, max_connections=4, body_limit=body_limit, **options)
            outcomes = []
            loop = asyncio.get_running_loop()
            try:
                for body in bodies:
                    head = request_head("127.0.0.1", "/bucket/key", len(body), {"content-type": "application/json"})
                    try:
                        outcomes.append(await connections.request(endpoint, head, body, deadline=loop.time() + 30,
                                                                  read_timeout=read_timeout))
                    except Exception as error:  # what the sink's classifier would get
                        outcomes.append(error)
            finally:
                connections.close()
                server.close()
            return outcomes

        return asyncio.run(main())


def content_length(head: bytes) -> int:
    return next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))


async def read_request(reader: asyncio.StreamReader, peer: Peer) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    peer.requests += 1
    return await reader.readexactly(content_length(head))


def test_a_head_that_never_ends_is_cut_at_its_bound():
    async def endless_head(reader, writer, peer):
        await read_request(reader, peer)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        while not writer.is_closing():
            writer.write(b"x-filler: " + b"y" * 1000 + b"\r\n")
            await writer.drain()

    [outcome] = Peer(endless_head).exchange([b"{}"])
    assert isinstance(outcome, MalformedAnswer) and "head exceeds" in str(outcome)


def test_a_large_error_body_is_kept_to_its_limit_and_read_whole():
    async def large_error(reader, writer, peer):
        await read_request(reader, peer)
        writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: %d\r\n\r\n" % (128 * 65536))
        for _ in range(128):
            writer.write(b"e" * 65536)
            await writer.drain()

    [answer] = Peer(large_error).exchange([b"{}"], body_limit=65536)
    assert answer.status == 500 and answer.body == b"e" * 65536


def test_connections_are_kept_alive_between_puts():
    async def keep_answering(reader, writer, peer):
        while True:
            await read_request(reader, peer)
            writer.write(OK)
            await writer.drain()

    peer = Peer(keep_answering)
    assert [answer.status for answer in peer.exchange([b"x%d" % n for n in range(20)])] == [200] * 20
    assert peer.requests == 20 and peer.connections == 1


def test_a_connection_idle_for_its_limit_is_closed_not_used():
    """A connection that idled `idle_seconds` is closed rather than used (a NAT or load balancer on
    the way may have dropped it without a word, and a PUT on it would wait out its read timeout).
    With a limit of 0 every connection has idled for it by the next PUT: each goes on a new one,
    and the peer sees each old one closed."""
    closed = []

    async def answer_until_closed(reader, writer, peer):
        try:
            while True:
                await read_request(reader, peer)
                writer.write(OK)
                await writer.drain()
        except asyncio.IncompleteReadError as end:
            closed.append(end.partial)  # the client closed it between requests: nothing half sent

    peer = Peer(answer_until_closed)
    assert [answer.status for answer in peer.exchange([b"x0", b"x1", b"x2"], idle_seconds=0)] == [200] * 3
    assert peer.requests == 3 and peer.connections == 3
    assert closed[:2] == [b"", b""]  # the first two, each before the next PUT (the last at close())


def test_a_kept_alive_connection_the_peer_closed_is_replaced_without_an_error():
    """The peer answers one request per connection and closes the next one unanswered, as a server
    does that closed an idle connection just as a request came: the PUT goes again on a new one."""
    async def one_answer_per_connection(reader, writer, peer):
        await read_request(reader, peer)
        writer.write(OK)  # kept alive, by HTTP/1.1's default
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")  # the next request: closed unanswered

    peer = Peer(one_answer_per_connection)
    assert [answer.status for answer in peer.exchange([b"x0", b"x1", b"x2"])] == [200, 200, 200]
    assert peer.requests == 3 and peer.connections == 3


def test_a_new_connection_closed_unanswered_is_an_error_not_a_loop():
    async def never_answers(reader, writer, peer):
        await reader.readuntil(b"\r\n\r\n")
        peer.requests += 1

    peer = Peer(never_answers)
    [outcome] = peer.exchange([b"{}"])
    assert isinstance(outcome, ConnectionError) and "before answering" in str(outcome)
    assert peer.requests == 1


def test_an_error_answered_before_the_body_was_read_spoils_the_connection():
    """A peer that refuses a PUT on its head alone has not read the body: sent again on that
    connection, the next request would follow a body the peer would take for a request."""
    async def refuse_on_the_head(reader, writer, peer):
        if peer.connections == 1:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            peer.seen["after the refusal"] = await reader.read()  # all that still comes on this connection
            return
        await read_request(reader, peer)
        writer.write(OK)
        await writer.drain()

    peer = Peer(refuse_on_the_head)
    smuggled = b"PUT /smuggled HTTP/1.1\r\n\r\n"
    assert [answer.status for answer in peer.exchange([smuggled, b"{}"])] == [403, 200]
    assert peer.connections == 2 and peer.seen["after the refusal"] == smuggled


def test_silence_after_the_request_ends_at_the_read_timeout():
    async def silent(reader, writer, peer):
        await read_request(reader, peer)
        await reader.read()  # until the client gives up

    [outcome] = Peer(silent).exchange([b"{}"], read_timeout=0.2)
    assert isinstance(outcome, TimeoutError) and "no byte of the answer" in str(outcome)


def test_an_answer_that_ends_with_the_connection():
    async def close_delimited(reader, writer, peer):
        await read_request(reader, peer)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n<Error><Code>X</Code></Error>")
        await writer.drain()

    [answer] = Peer(close_delimited).exchange([b"{}"])
    assert answer.status == 400 and answer.body == b"<Error><Code>X</Code></Error>"


def test_a_large_body_reaches_a_slow_reader_whole():
    body = hashlib.sha256(b"seed").digest() * (5 * 1024 * 1024 // 32)  # 5 MiB: several write slices

    async def slow_reader(reader, writer, peer):
        left = content_length(await reader.readuntil(b"\r\n\r\n"))
        digest = hashlib.sha256()
        while left:
            chunk = await reader.read(min(left, 16384))
            digest.update(chunk)
            left -= len(chunk)
            await asyncio.sleep(0)
        peer.seen["digest"] = digest.digest()
        writer.write(OK)
        await writer.drain()

    peer = Peer(slow_reader)
    assert [answer.status for answer in peer.exchange([body])] == [200]
    assert peer.seen["digest"] == hashlib.sha256(body).digest()


def test_a_line_break_in_a_header_value_is_refused():
    with pytest.raises(ValueError, match="line break"):
        request_head("h", "/b/k", 2, {"x-amz-tagging": "a=b\r\nx-injected: 1"})
