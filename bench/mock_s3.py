"""A tiny S3-compatible endpoint for benchmarks (the Collector testbed's mock-backend idea): it
answers every request at once and keeps nothing, so the bridge is what is measured.

`--hold-puts-after N` answers the first N object PUTs (the bridge's start-up check) and then
holds every further PUT open without answering: uploads are parked, costing the bridge nothing,
so that ingest alone can be measured. `GET /__requests__` answers how many requests it has had
(itself not counted), for the S3-requests-per-record figure of the batch layout.
"""

from __future__ import annotations

import argparse
import asyncio

OK = b'HTTP/1.1 200 OK\r\nETag: "d41d8cd98f00b204e9800998ecf8427e"\r\nContent-Length: 0\r\n\r\n'
NO_CONTENT = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CREATED = (b"<?xml version='1.0' encoding='UTF-8'?><InitiateMultipartUploadResult><Bucket>bench</Bucket>"
            b"<Key>k</Key><UploadId>bench-upload</UploadId></InitiateMultipartUploadResult>")
UPLOAD_CREATED = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(_CREATED), _CREATED)


class MockS3(asyncio.Protocol):
    puts = 0
    requests = 0
    hold_after: int | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.buffer = bytearray()
        self.remaining: int | None = None
        self.method = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.remaining is None:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buffer[:end]).split(b"\r\n")
                del self.buffer[:end + 4]
                self.method, _, rest = head[0].partition(b" ")
                self.path = rest.split(b" ", 1)[0]
                self.remaining = 0
                for line in head[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        self.remaining = int(value)
                    elif name == b"expect" and b"100-continue" in value.lower():
                        self.transport.write(CONTINUE)
            if len(self.buffer) < self.remaining:
                return
            del self.buffer[:self.remaining]
            self.remaining = None
            if self.path == b"/__requests__":
                count = str(MockS3.requests).encode()
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(count), count))
                continue
            MockS3.requests += 1
            if self.path.endswith(b"?uploads"):  # CreateMultipartUpload
                self.transport.write(UPLOAD_CREATED)
                continue
            if self.method == b"PUT":
                MockS3.puts += 1
                if MockS3.hold_after is not None and MockS3.puts > MockS3.hold_after:
                    continue  # parked: never answered
            self.transport.write(NO_CONTENT if self.method == b"DELETE" else OK)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hold-puts-after", type=int, default=None)
    args = parser.parse_args()
    MockS3.hold_after = args.hold_puts_after
    server = await asyncio.get_running_loop().create_server(MockS3, "127.0.0.1", args.port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
