"""`digits serve` while hundreds of clients trickle their uploads at one byte per second.

Starts a real one-worker `digits serve` on a free loopback port, measures its rate on normal
picture requests (``--clients`` at once, back to back, for ``--seconds``), then opens ``--slow``
connections that each declare a 20 kB picture and send it one byte a second (reconnecting when
the server gives up on them with 408), and measures again: the rate of normal requests, and how
long ``/health`` takes to answer (goals: within 100 ms; at least 80% of the unloaded rate).

    python bench/serve_slow_clients.py [--slow 500] [--seconds 10] [--model MODEL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from read_speed import test_picture
from serve_bench import start_server, stop_server
from synthetic import DEFAULT_DIGITS

HEALTH_GOAL_MS = 100
RATE_GOAL = 0.8
SLOW_HEAD = (
    b"POST /predictions HTTP/1.1\r\nHost: bench\r\nContent-Type: image/png\r\n"
    b"Content-Length: 20000\r\n\r\n"
)


async def normal_rate(base: str, picture: bytes, clients: int, seconds: float) -> float:
    done = 0
    stop = time.perf_counter() + seconds
    headers = {"content-type": "image/png"}

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal done
        while time.perf_counter() < stop:
            answer = await http.post(f"{base}/predictions", content=picture, headers=headers)
            if answer.status_code == 200:
                done += 1
            else:
                await asyncio.sleep(float(answer.headers.get("retry-after", "0.1")))

    async with httpx.AsyncClient(timeout=60) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return done / (time.perf_counter() - start)


async def trickle(port: int, stop: float, opened: list[int]) -> None:
    """One slow client: declare 20 kB, send a byte a second; start again when cut off."""
    while time.perf_counter() < stop:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(SLOW_HEAD)
            opened[0] += 1
            while time.perf_counter() < stop and not reader.at_eof():
                writer.write(b"\0")
                await writer.drain()
                try:
                    await asyncio.wait_for(reader.read(1024), 1.0)  # an answer (408) ends it
                    break
                except TimeoutError:
                    pass
            writer.close()
        except OSError:
            await asyncio.sleep(0.5)


async def health_latencies(base: str, stop: float) -> list[float]:
    latencies = []
    async with httpx.AsyncClient(timeout=10) as http:
        while time.perf_counter() < stop:
            start = time.perf_counter()
            answer = await http.get(f"{base}/health")
            if answer.status_code == 200:
                latencies.append(time.perf_counter() - start)
            await asyncio.sleep(0.2)
    return latencies


async def loaded(base: str, port: int, picture: bytes, args: argparse.Namespace) -> tuple:
    stop = time.perf_counter() + args.seconds + 5
    opened = [0]
    slow = [asyncio.create_task(trickle(port, stop, opened)) for _ in range(args.slow)]
    await asyncio.sleep(5)  # all connected and trickling
    health = asyncio.create_task(health_latencies(base, stop))
    rate = await normal_rate(base, picture, args.clients, args.seconds)
    latencies = await health
    await asyncio.gather(*slow)
    return rate, latencies, opened[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/champion/model.onnx")
    parser.add_argument("--slow", type=int, default=500)
    parser.add_argument("--clients", type=int, default=2, help="normal clients at once")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--digits", type=Path, default=DEFAULT_DIGITS, help="MNIST test split")
    args = parser.parse_args()

    picture = test_picture(args.digits)
    env = {**os.environ, "DIGITS_SERVE__MAX_CONCURRENCY": "2"}
    with tempfile.TemporaryDirectory() as folder:
        server, base = start_server(args.model, 1, env, Path(folder) / "server.log")
        try:
            asyncio.run(normal_rate(base, picture, args.clients, 3.0))  # warm-up, not counted
            unloaded = asyncio.run(normal_rate(base, picture, args.clients, args.seconds))
            port = int(base.rsplit(":", 1)[1])
            rate, latencies, opened = asyncio.run(loaded(base, port, picture, args))
        finally:
            stop_server(server)
    ms = np.array(latencies) * 1000
    ratio = rate / unloaded
    print(f"one digits serve worker, {args.clients} normal clients, {args.seconds:g} s each:")
    print(f"  unloaded: {unloaded:.1f} pictures/s")
    print(f"  with {args.slow} clients sending 1 byte/s ({opened} connections opened): "
          f"{rate:.1f} pictures/s = {ratio:.2f}x ({'meets' if ratio >= RATE_GOAL else 'misses'} "
          f"the {RATE_GOAL}x goal)")  # fmt: skip
    print(f"  /health: median {np.median(ms):.1f} ms, max {ms.max():.1f} ms over {len(ms)} probes "
          f"({'meets' if ms.max() <= HEALTH_GOAL_MS else 'misses'} the {HEALTH_GOAL_MS} ms "
          "goal)")  # fmt: skip


if __name__ == "__main__":
    main()
