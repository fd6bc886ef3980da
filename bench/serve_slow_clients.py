"""`digits serve` while hundreds of clients trickle their uploads at one byte per second.

Starts a real one-worker `digits serve` on a free loopback port, measures its rate on normal
picture requests (``--clients`` at once, back to back, for ``--seconds``), then opens ``--slow``
connections that each declare a 20 kB picture and send it one byte a second (reconnecting when
the server gives up on them with 408), and measures again: the rate of normal requests, and how
long ``/health`` takes to answer (goals: within 100 ms; at least 80% of the unloaded rate). The
slow clients run in a child process and ``/health`` is probed from its own thread, so neither
the probe nor the normal clients wait on the slow clients' event loop.

    python bench/serve_slow_clients.py [--slow 500] [--seconds 10] [--model MODEL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
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


def health_latencies(base: str, stop: float, latencies: list[float]) -> None:
    """Probe /health every 0.2 s until ``stop``, on this thread's own blocking client, so the
    probe's timing is the server's and not the load generator's event loop."""
    with httpx.Client(timeout=10) as http:
        while time.perf_counter() < stop:
            start = time.perf_counter()
            answer = http.get(f"{base}/health")
            if answer.status_code == 200:
                latencies.append(time.perf_counter() - start)
            time.sleep(0.2)


async def trickling(port: int, slow: int, seconds: float) -> int:
    stop = time.perf_counter() + seconds
    opened = [0]
    await asyncio.gather(*(trickle(port, stop, opened) for _ in range(slow)))
    return opened[0]


def loaded(base: str, port: int, picture: bytes, args: argparse.Namespace) -> tuple:
    """The slow clients in a child process (their event loop apart from the measuring one),
    the /health probe on a thread, the normal clients here."""
    seconds = args.seconds + 5
    trickler = subprocess.Popen(
        [sys.executable, __file__, "--trickle", str(port), "--slow", str(args.slow),
         "--seconds", str(seconds)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(5)  # all connected and trickling
    latencies: list[float] = []
    probe = threading.Thread(
        target=health_latencies, args=(base, time.perf_counter() + args.seconds, latencies)
    )
    probe.start()
    rate = asyncio.run(normal_rate(base, picture, args.clients, args.seconds))
    probe.join()
    opened = int(trickler.communicate(timeout=seconds + 30)[0].strip() or 0)
    return rate, latencies, opened


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/champion/model.onnx")
    parser.add_argument("--slow", type=int, default=500)
    parser.add_argument("--clients", type=int, default=2, help="normal clients at once")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--digits", type=Path, default=DEFAULT_DIGITS, help="MNIST test split")
    parser.add_argument("--trickle", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trickle:  # the child process of the slow clients: prints the connections opened
        print(asyncio.run(trickling(args.trickle, args.slow, args.seconds)))
        return

    picture = test_picture(args.digits)
    env = {**os.environ, "DIGITS_SERVE__MAX_CONCURRENCY": "2"}
    with tempfile.TemporaryDirectory() as folder:
        server, base = start_server(args.model, 1, env, Path(folder) / "server.log")
        try:
            asyncio.run(normal_rate(base, picture, args.clients, 3.0))  # warm-up, not counted
            unloaded = asyncio.run(normal_rate(base, picture, args.clients, args.seconds))
            port = int(base.rsplit(":", 1)[1])
            rate, latencies, opened = loaded(base, port, picture, args)
            time.sleep(2)  # the slow clients' connections closed
            # Unloaded again, after: the machine's speed drifts, so the loaded rate is judged
            # against the mean of the rates measured either side of it.
            after = asyncio.run(normal_rate(base, picture, args.clients, args.seconds))
        finally:
            stop_server(server)
    before, unloaded = unloaded, (unloaded + after) / 2
    ms = np.array(latencies) * 1000
    ratio = rate / unloaded
    print(f"one digits serve worker, {args.clients} normal clients, {args.seconds:g} s each:")
    print(f"  unloaded: {unloaded:.1f} pictures/s (mean of {before:.1f} before, {after:.1f} after)")
    print(f"  with {args.slow} clients sending 1 byte/s ({opened} connections opened): "
          f"{rate:.1f} pictures/s = {ratio:.2f}x ({'meets' if ratio >= RATE_GOAL else 'misses'} "
          f"the {RATE_GOAL}x goal)")  # fmt: skip
    print(f"  /health: median {np.median(ms):.1f} ms, max {ms.max():.1f} ms over {len(ms)} probes "
          f"({'meets' if ms.max() <= HEALTH_GOAL_MS else 'misses'} the {HEALTH_GOAL_MS} ms "
          "goal)")  # fmt: skip


if __name__ == "__main__":
    main()
