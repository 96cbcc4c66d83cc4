"""Sandbox throughput: captures/s over loopback, server in a subprocess, client in this process.

The sandbox (``python -m etl.sandbox --auto-authorize``, uvloop) runs in its own process so that
client and server each get a core; this process drives it with aiohttp over many keep-alive
connections, every capture on a new order with a unique idempotency key.

    .venv/bin/python -m bench.bench_sandbox [--captures 20000] [--connections 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

import aiohttp

from etl.sandbox import SandboxConfig, run_sandbox_subprocess
from etl.sandbox.app import basic_header

TARGET = 2_000  # captures/s the sandbox must sustain so it never bottlenecks a benchmark


async def drive(url: str, auth: tuple[str, str], captures: int, connections: int) -> float:
    """Send ``captures`` captures over ``connections`` keep-alive connections; captures/s."""
    body = json.dumps({"captured_amount": 1000, "reference": "bench",
                       "order_lines": [{"name": "Item", "quantity": 1, "unit_price": 1000,
                                        "total_amount": 1000}]}).encode()
    run = uuid.uuid4().hex[:8]
    counter = iter(range(captures))
    authorization = basic_header(*auth)
    failures: list[int] = []

    async def worker(session: aiohttp.ClientSession) -> None:
        for i in counter:
            async with session.post(
                f"{url}/ordermanagement/v1/orders/{run}-{i}/captures", data=body,
                headers={"Klarna-Idempotency-Key": f"{run}-{i}", "Authorization": authorization,
                         "Content-Type": "application/json"},
            ) as resp:
                await resp.read()
                if resp.status != 201:
                    failures.append(resp.status)

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        # Warm up: open the connections before the clock starts.
        await asyncio.gather(*[session.get(f"{url}/_sandbox/stats") for _ in range(connections)])
        start = time.perf_counter()
        await asyncio.gather(*[worker(session) for _ in range(connections)])
        elapsed = time.perf_counter() - start
    if failures:
        raise SystemExit(f"{len(failures)} captures failed, e.g. HTTP {failures[0]}")
    return captures / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captures", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    config = SandboxConfig(auto_authorize=True)
    with run_sandbox_subprocess(config) as sb:
        try:
            import uvloop
        except ImportError:
            rate = asyncio.run(drive(sb.url, sb.auth, args.captures, args.connections))
        else:
            rate = uvloop.run(drive(sb.url, sb.auth, args.captures, args.connections))
    verdict = "OK" if rate >= TARGET else f"BELOW the {TARGET}/s target"
    print(f"sandbox: {args.captures} captures over {args.connections} connections: "
          f"{rate:,.0f} captures/s ({verdict})")


if __name__ == "__main__":
    main()
