"""One process writing objects to an S3 endpoint, 16 at a time, by one of three paths, for their
CPU cost per PUT side by side: `aiobotocore` (a bare `put_object` loop: the machine's ceiling for
the client the bridge used to write with), `bridge` (the bridge's own sink, `S3Sink.put`: what a
record's upload costs now) and `obstore` (Rust's object_store, for reference, if installed).
Prints JSON: path, puts, wall seconds, CPU seconds of this process, CPU microseconds per PUT."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time


async def aiobotocore_writer(endpoint_url: str, concurrency: int):
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    config = AioConfig(s3={"addressing_style": "path"}, max_pool_connections=64)
    context = get_session().create_client("s3", region_name="us-east-1", endpoint_url=endpoint_url, config=config)
    client = await context.__aenter__()

    async def put(key: str, body: bytes) -> None:
        await client.put_object(Bucket="bench", Key=key, Body=body, ContentType="application/json")

    return put, lambda: context.__aexit__(None, None, None)


async def bridge_writer(endpoint_url: str, concurrency: int):
    from otel_s3_bridge.config import load_config
    from otel_s3_bridge.deliver.sink_s3 import S3Sink

    sink = S3Sink(load_config({"bucket": "bench", "endpoint_url": endpoint_url, "region": "us-east-1"}, {}))
    await sink.open()

    async def put(key: str, body: bytes) -> None:
        await sink.put(key, body, "application/json")

    return put, sink.aclose


async def obstore_writer(endpoint_url: str, concurrency: int):
    import obstore
    from obstore.store import S3Store

    store = S3Store("bench", endpoint=endpoint_url, region="us-east-1", client_options={"allow_http": True},
                    access_key_id="bench", secret_access_key="bench", virtual_hosted_style_request=False)

    async def put(key: str, body: bytes) -> None:
        await obstore.put_async(store, key, body)

    async def close() -> None:
        return None

    return put, close


WRITERS = {"aiobotocore": aiobotocore_writer, "bridge": bridge_writer, "obstore": obstore_writer}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint-url", required=True)
    parser.add_argument("--path", choices=sorted(WRITERS), default="aiobotocore")
    parser.add_argument("--puts", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--body-bytes", type=int, default=23000)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    body = b"x" * args.body_bytes
    put, close = await WRITERS[args.path](args.endpoint_url, args.concurrency)
    try:
        await put("warm-up", body)
        queue = iter(range(args.puts))

        async def worker() -> None:
            for n in queue:
                await put(f"bench/{n}.json", body)

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await close()
    print(json.dumps({"path": args.path, "body_bytes": args.body_bytes, "puts": args.puts, "wall_seconds": wall,
                      "cpu_seconds": cpu, "cpu_us_per_put": cpu / args.puts * 1e6,
                      "puts_per_second": args.puts / wall}))


if __name__ == "__main__":
    asyncio.run(main())
