"""The WebSocket-to-Redis bridge a user would write by hand in Python, as the ingest bench's baseline
(SPEC section 7: the `websockets` and `redis` packages, one XADD per frame).

The loop is the obvious one: `async for msg in ws: await r.xadd(stream, {"data": msg})`. Nothing is
tuned (no pipelining, no batching), because the point is what wsm replaces, not the fastest Python.

The ingest bench (crates/wsm/benches/ingest/) runs it against the same feed server and a fresh
redis-server, and checks the stream afterwards. It times the same window as the Rust bridges: from
sending the SUBSCRIBE that starts the feed's stream until the last XADD is acknowledged. It prints
one JSON line: {"frames": N, "seconds": S, "last_u": U}, where U is the feed's frame counter of the
last frame it stored (the feed numbers its frames 1, 2, 3, ...).

    python_bridge.py URL REDIS_URL STREAM FRAMES

Packages (pinned in python_bridge.requirements.txt; scripts/bench.sh installs them into a venv).
"""

import asyncio
import json
import sys
import time

import redis.asyncio as redis
from websockets.asyncio.client import connect

SUBSCRIBE = '{"method":"SUBSCRIBE","params":["btcusdt@depth@100ms"],"id":1}'


async def bridge(url: str, redis_url: str, stream: str, expected: int) -> None:
    r = redis.from_url(redis_url)
    frames = 0
    last = ""
    async with connect(url) as ws:
        started = time.perf_counter()
        await ws.send(SUBSCRIBE)
        async for msg in ws:
            await r.xadd(stream, {"data": msg})
            frames += 1
            last = msg
            if frames == expected:
                break
        seconds = time.perf_counter() - started
    await r.aclose()
    try:
        last_u = json.loads(last).get("u")
    except (ValueError, AttributeError):
        last_u = None
    print(json.dumps({"frames": frames, "seconds": seconds, "last_u": last_u}), flush=True)


def main() -> int:
    if len(sys.argv) != 5:
        print("usage: python_bridge.py URL REDIS_URL STREAM FRAMES", file=sys.stderr)
        return 2
    url, redis_url, stream, frames = sys.argv[1:]
    asyncio.run(bridge(url, redis_url, stream, int(frames)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
