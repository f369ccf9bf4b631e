"""The machine's ceiling for uploads: a bare aiobotocore `put_object` loop against an S3 endpoint.
Prints JSON: puts, wall seconds, CPU seconds of this process, CPU microseconds per PUT."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint-url", required=True)
    parser.add_argument("--puts", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--body-bytes", type=int, default=23000)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    body = b"x" * args.body_bytes
    config = AioConfig(s3={"addressing_style": "path"}, max_pool_connections=64)
    async with get_session().create_client("s3", region_name="us-east-1", endpoint_url=args.endpoint_url,
                                           config=config) as client:
        await client.put_object(Bucket="bench", Key="warm-up", Body=body, ContentType="application/json")
        queue = iter(range(args.puts))

        async def worker() -> None:
            for n in queue:
                await client.put_object(Bucket="bench", Key=f"bench/{n}.json", Body=body,
                                        ContentType="application/json")

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(json.dumps({"puts": args.puts, "wall_seconds": wall, "cpu_seconds": cpu,
                      "cpu_us_per_put": cpu / args.puts * 1e6, "puts_per_second": args.puts / wall}))


if __name__ == "__main__":
    asyncio.run(main())
