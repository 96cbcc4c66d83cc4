"""Benchmark of the send stage alone: ``send_captures`` + ``ApiClient`` against a loopback server.

Issue 4 point 8 asks, at rate 200 against a server answering in 50–100 ms, for ≥ 95 % of the
rate at ≤ 0.3 CPU-s per 1000 captures, and ≥ 2,000 captures/s unthrottled on loopback. This
measures both, for httpx's stock transport and for the aiohttp transport used in production, in
the same run, so the ratio between them is visible.

The server is a bare aiohttp.web app in a subprocess (its CPU is not the client's): every POST to
the captures path answers 201 with a ``Capture-Id`` after a uniform random delay. The recorder is
in memory, so the ledger's cost is not in these figures (``bench_sandbox`` covers the whole run).

    .venv/bin/python -m bench.bench_send                 # both scenarios, ~40 s
    .venv/bin/python -m bench.bench_send --quick         # smaller N
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx

from etl.client import ApiClient
from etl.config import Credentials, Secret
from etl.model import CaptureRequest
from etl.send import MemoryRecorder, SendPolicy, send_captures

# -- the server (runs in a subprocess) --------------------------------------------------------


def serve(delay_lo: float, delay_hi: float) -> None:
    from aiohttp import web

    counter = 0

    async def capture(request: web.Request) -> web.Response:
        nonlocal counter
        await request.read()
        if delay_hi > 0:
            await asyncio.sleep(random.uniform(delay_lo, delay_hi))
        counter += 1
        return web.Response(status=201, headers={"Capture-Id": f"cap-{counter}",
                                                 "Location": f"/captures/cap-{counter}"})

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/ordermanagement/v1/orders/{order_id}/captures", capture)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port = runner.addresses[0][1]
        print(port, flush=True)
        await asyncio.Event().wait()

    try:
        import uvloop  # the server must not be what limits the client
        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


class Server:
    def __init__(self, delay_lo: float, delay_hi: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_send", "--serve", str(delay_lo), str(delay_hi)],
            stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# -- the client ---------------------------------------------------------------------------------


def make_requests(n: int) -> list[CaptureRequest]:
    body = b'{"captured_amount":1000,"reference":"shp","order_lines":[]}'
    return [CaptureRequest(order_id=f"ord-{i}", capture_reference=f"shp-{i}",
                           idempotency_key=f"key-{i:08d}", content_hash="h",
                           captured_amount=1000, currency="EUR", body=body) for i in range(n)]


@dataclass
class Result:
    captures: int
    seconds: float
    cpu: float
    counts: dict[str, int]

    @property
    def per_second(self) -> float:
        return self.captures / self.seconds

    @property
    def cpu_per_1000(self) -> float:
        return self.cpu / self.captures * 1000


async def drive(url: str, transport_name: str, n: int, rate: float | None,
                concurrency: int) -> Result:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    transport = (httpx.AsyncHTTPTransport(limits=limits) if transport_name == "httpx" else None)
    reqs = make_requests(n)
    async with ApiClient(url, Credentials(Secret("bench_api_key")), timeout=30,
                         max_connections=concurrency, transport=transport) as client:
        # Warm the connections so both transports start from an open pool.
        await send_captures(make_requests(concurrency), client, MemoryRecorder(),
                            SendPolicy(rate=None, concurrency=concurrency))
        cpu0, t0 = time.process_time(), time.perf_counter()
        report = await send_captures(reqs, client, MemoryRecorder(),
                                     SendPolicy(rate=rate, concurrency=concurrency))
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return Result(n, seconds, cpu, dict(report.counts))


def scenario(title: str, delay: tuple[float, float], n: int, rate: float | None,
             concurrency: int, use_uvloop: bool = False) -> dict[str, Result]:
    print(f"\n{title}: {n} captures, rate {rate or 'unlimited'}, concurrency {concurrency}, "
          f"server delay {delay[0] * 1000:.0f}–{delay[1] * 1000:.0f} ms")
    server = Server(*delay)
    results: dict[str, Result] = {}
    try:
        for name in ("httpx", "aiohttp"):
            coro = drive(server.url, name, n, rate, concurrency)
            if use_uvloop:
                import uvloop
                res = uvloop.run(coro)
            else:
                res = asyncio.run(coro)
            results[name] = res
            pct = f"  {res.per_second / rate * 100:5.1f} % of rate" if rate else ""
            print(f"  {name:8s} {res.per_second:8.0f} captures/s{pct}  "
                  f"{res.cpu_per_1000:5.2f} CPU-s/1000  {res.counts}")
    finally:
        server.close()
    a, h = results["aiohttp"], results["httpx"]
    print(f"  aiohttp/httpx: {a.per_second / h.per_second:.2f}x throughput, "
          f"{h.cpu_per_1000 / a.cpu_per_1000:.2f}x less CPU per capture")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", nargs=2, type=float, metavar=("LO", "HI"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="smaller N, ~15 s")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--uvloop", action="store_true", help="run the client on uvloop")
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return
    scale = 0.3 if args.quick else 1.0
    fast = scenario("unthrottled, 0 ms server", (0.0, 0.0), int(8000 * scale), None,
                    args.concurrency, args.uvloop)
    paced = scenario("rate 200, 50–100 ms server", (0.05, 0.1), int(2400 * scale), 200.0,
                     args.concurrency, args.uvloop)
    a_fast, a_paced = fast["aiohttp"], paced["aiohttp"]
    print("\nissue 4 point 8 (production transport):")
    print(f"  unthrottled ≥ 2000/s:         {a_fast.per_second:6.0f}/s   "
          f"{'ok' if a_fast.per_second >= 2000 else 'MISSED'}")
    print(f"  rate 200 ≥ 95 %:              {a_paced.per_second / 2:6.1f} %   "
          f"{'ok' if a_paced.per_second >= 190 else 'MISSED'}")
    print(f"  ≤ 0.3 CPU-s / 1000 at 200/s:  {a_paced.cpu_per_1000:6.2f}     "
          f"{'ok' if a_paced.cpu_per_1000 <= 0.3 else 'MISSED'}")


if __name__ == "__main__":
    main()
