"""Throughput and latency of `digits serve` on loopback, beside the same pipeline in-process.

The picture: 640x480, ten MNIST test digits (dark on white, scaled 2x to 56 px) in two rows.
The load generator is asyncio + httpx: keep-alive connections, one task per concurrent client,
each posting the picture to /predictions back to back for a fixed time and waiting Retry-After
seconds after a 503, as a well-behaved client does. It runs on the same machine, so it takes some
CPU from the server: the figures are a lower bound. With wrk installed (the default then; see
--client) wrk makes the load instead, without waiting on 503s; either way every status is counted
as what it is and the latencies are of served (2xx) answers. For each --workers value a real
`digits serve` is started on a free loopback port and stopped afterwards.

    .venv/bin/python bench/serve_bench.py [--model models/champion/model.onnx] [--seconds 10]
        [--max-concurrency N]

One worker runs ``serve.max_concurrency`` (default 2) pictures at once in threads, and the
pipeline (OpenCV, numpy, ONNX Runtime) mostly releases the GIL, so one worker alone can use both
cores; ``--max-concurrency 1`` gives each worker one core, the setting the two-worker target
assumes.

Targets (issue 5): one worker >= 75% of the in-process single-core rate; two workers >= 1.6x one
worker; p99 at concurrency 32 bounded by the queue (admitted work / throughput, Little's law).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DIGIT_SOURCES = (ROOT / "data/processed/test.npz", ROOT / "tests/data/mnist_small.npz")


def load_test_digits() -> tuple[np.ndarray, np.ndarray]:
    """MNIST test digits (N, 28, 28) uint8 and labels: the prepared split, else the test sample."""
    for path in DIGIT_SOURCES:
        if path.is_file():
            with np.load(path) as npz:
                if "images" in npz:
                    return npz["images"], npz["labels"]
                return npz["test_images"], npz["test_labels"]
    raise SystemExit("no MNIST test digits: run `make run` or keep tests/data/mnist_small.npz")


def digits_picture(
    size: tuple[int, int] = (640, 480), count: int = 10, seed: int = 0, fmt: str = "PNG"
) -> tuple[bytes, str]:
    """A picture of ``count`` MNIST test digits, dark on white, in rows; and the digits it holds."""
    images, labels = load_test_digits()
    rng = np.random.default_rng(seed)
    width, height = size
    per_row = min(count, 5)
    rows = -(-count // per_row)
    cell_w, cell_h = width // per_row, height // rows
    scale = max(1, int(min(cell_w, cell_h) * 0.6 / 28))
    canvas = np.full((height, width), 255, np.uint8)
    chosen = rng.choice(len(labels), count, replace=False)
    for slot, index in enumerate(chosen):
        digit = 255 - np.kron(images[index], np.ones((scale, scale), np.uint8))
        top = (slot // per_row) * cell_h + (cell_h - digit.shape[0]) // 2
        left = (slot % per_row) * cell_w + (cell_w - digit.shape[1]) // 2
        canvas[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    buffer = io.BytesIO()
    Image.fromarray(canvas).convert("RGB").save(buffer, fmt)
    return buffer.getvalue(), "".join(str(labels[i]) for i in chosen)


# --- in-process ------------------------------------------------------------------------------


def in_process_rate(model_path: str, picture: bytes, seconds: float) -> float:
    """Pictures per second of decode + find + classify + JSON, on one core, in this process."""
    import cv2
    import torch

    from digits_cli.answers import reading_payload
    from digits_cli.config import Settings
    from digits_cli.inference import DigitReader, load_model

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    settings = Settings()
    model = load_model(model_path, settings)
    reader = DigitReader(model, settings.segment)
    for _ in range(5):
        reader.read_bytes(picture, "bench")
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        _, reading = reader.read_bytes(picture, "bench")
        json.dumps(reading_payload(model, reading, "predictions"))
        done += 1
    return done / (time.perf_counter() - start)


# --- over HTTP -------------------------------------------------------------------------------


@dataclass
class Level:
    """What one concurrency level measured."""

    concurrency: int
    ok_per_second: float
    p50: float
    p99: float
    answered: int
    busy: int
    other: int


async def load(url: str, picture: bytes, concurrency: int, seconds: float) -> Level:
    latencies: list[float] = []
    statuses: list[int] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    files_headers = {"content-type": "image/png"}
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        deadline = time.perf_counter() + seconds

        async def user() -> None:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                response = await client.post(url, content=picture, headers=files_headers)
                latencies.append(time.perf_counter() - start)
                statuses.append(response.status_code)
                if response.status_code == 503:  # a well-behaved client waits as told
                    await asyncio.sleep(float(response.headers.get("retry-after", 1)))

        start = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return level_of(concurrency, statuses, latencies, elapsed)


def level_of(
    concurrency: int, statuses: list[int], latencies: list[float], elapsed: float
) -> Level:
    """One level's figures from every answer's status and latency (seconds), either client's."""
    served = [t for t, status in zip(latencies, statuses, strict=True) if 200 <= status < 300]
    busy = statuses.count(503)
    # 503s answer at once: their latency says nothing about serving, so percentiles are of 2xx
    return Level(
        concurrency,
        len(served) / elapsed,
        float(np.percentile(served or [0.0], 50)),
        float(np.percentile(served or [0.0], 99)),
        len(statuses),
        busy,
        len(statuses) - len(served) - busy,
    )


# wrk runs one connection per thread (-t = -c), so a thread's requests follow one another and
# the time from its request() to its response() is that request's latency (wrk's own figures
# mix every status). Each thread notes "status microseconds" per answer; done() writes them all.
WRK_SCRIPT = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "image/png"
local f = assert(io.open(os.getenv("BENCH_PICTURE"), "rb"))
wrk.body = f:read("*all")
f:close()

local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock, bench_timespec *now);
]]
local clock = ffi.new("bench_timespec")
local function microseconds()
  ffi.C.clock_gettime(1, clock)  -- CLOCK_MONOTONIC
  return tonumber(clock.tv_sec) * 1e6 + tonumber(clock.tv_nsec) / 1e3
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

local sent = 0
answers = {}  -- global: done() reads each thread's copy

function request()
  sent = microseconds()
  return wrk.request()
end

function response(status, headers, body)
  answers[#answers + 1] = string.format("%d %.0f", status, microseconds() - sent)
end

function done(summary, latency, requests)
  local out = assert(io.open(os.getenv("BENCH_ANSWERS"), "w"))
  local e = summary.errors
  out:write(string.format("duration %d\n", summary.duration))
  out:write(string.format("unanswered %d\n", e.connect + e.read + e.write + e.timeout))
  for _, thread in ipairs(threads) do
    for _, answer in ipairs(thread:get("answers")) do
      out:write(answer, "\n")
    end
  end
  out:close()
end
"""


def load_with_wrk(url: str, picture: bytes, concurrency: int, seconds: float) -> Level:
    """The same load from wrk (C): it leaves the server far more of the 2 cores.

    wrk does not wait on Retry-After, so its 503s come back to back. Its script (WRK_SCRIPT)
    notes every answer's status and latency, counted and timed as the httpx client's are.
    """
    folder = Path(tempfile.mkdtemp(prefix="wrk-"))
    (folder / "picture.png").write_bytes(picture)
    (folder / "post.lua").write_text(WRK_SCRIPT)
    answers = folder / "answers.txt"
    subprocess.run(
        [
            "wrk",
            f"-t{concurrency}",
            f"-c{concurrency}",
            f"-d{seconds:g}s",
            "--timeout",
            "60s",  # as the httpx client's; wrk's default 2 s would drop slow answers untimed
            "-s",
            str(folder / "post.lua"),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        env={
            **os.environ,
            "BENCH_PICTURE": str(folder / "picture.png"),
            "BENCH_ANSWERS": str(answers),
        },
    )
    lines = answers.read_text().splitlines()
    elapsed = int(lines[0].removeprefix("duration ")) / 1e6
    unanswered = int(lines[1].removeprefix("unanswered "))
    if unanswered:
        print(
            f"wrk: {unanswered} requests got no answer (socket errors, timeouts)", file=sys.stderr
        )
    pairs = [line.split() for line in lines[2:]]
    statuses = [int(status) for status, _ in pairs]
    latencies = [int(micros) / 1e6 for _, micros in pairs]
    shutil.rmtree(folder, ignore_errors=True)
    return level_of(concurrency, statuses, latencies, elapsed)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(
    model: str, workers: int, env: dict[str, str], log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-m", "digits_cli", "serve", "--port", str(port)]
    command += ["--model", model, "--workers", str(workers)]
    with open(log, "ab") as output:
        server = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"digits serve exited with {server.returncode}; see {log}")
        try:
            # every worker must be ready: ask over 20 fresh connections (spread over the workers)
            if all(httpx.get(f"{base}/ready", timeout=2).status_code == 200 for _ in range(20)):
                return server, base
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    server.kill()
    raise SystemExit(f"digits serve never became ready; see {log}")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/champion/model.onnx", help="model file to serve")
    parser.add_argument("--seconds", type=float, default=10.0, help="per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--max-concurrency", type=int, help="serve.max_concurrency per worker (default: settings)"
    )
    parser.add_argument(
        "--client",
        choices=("auto", "httpx", "wrk"),
        default="auto",
        help="load generator: wrk when installed (apt-get install wrk), else asyncio + httpx",
    )
    args = parser.parse_args()
    use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk") is not None)
    model = str((ROOT / args.model).resolve()) if not Path(args.model).is_absolute() else args.model
    if not Path(model).is_file():
        raise SystemExit(f"{model}: no model file; run `make run` or pass --model")

    from digits_cli.config import load_settings

    env = dict(os.environ)
    if args.max_concurrency is not None:
        env["DIGITS_SERVE__MAX_CONCURRENCY"] = str(args.max_concurrency)
    serve = load_settings(overrides={"serve": {"max_concurrency": args.max_concurrency}}).serve
    picture, truth = digits_picture()
    print(f"picture: 640x480 PNG, {len(picture):,} bytes, digits {truth}; cores: {os.cpu_count()}")
    print(
        f"serve: max_concurrency={serve.max_concurrency} max_queue={serve.max_queue} "
        f"timeout={serve.timeout:g}s per worker"
    )
    single = in_process_rate(model, picture, args.seconds)
    print(f"in-process, 1 thread: {single:.1f} pictures/s ({1000 / single:.1f} ms each)\n")
    client = "wrk, a thread per connection" if use_wrk else "asyncio + httpx"
    print(f"load generator: {client} (latency of 2xx answers)")
    print("workers  conc    ok/s   p50 ms   p99 ms   503 other")
    best: dict[int, float] = {}
    p99_at_max: dict[int, tuple[float, float]] = {}
    log = Path(tempfile.mkdtemp(prefix="serve-bench-")) / "server.log"
    for workers in args.workers:
        server, base = start_server(model, workers, env, log)
        try:
            asyncio.run(load(f"{base}/predictions", picture, 2, 2))  # warm-up
            for concurrency in args.concurrency:
                url = f"{base}/predictions"
                level = (
                    load_with_wrk(url, picture, concurrency, args.seconds)
                    if use_wrk
                    else asyncio.run(load(url, picture, concurrency, args.seconds))
                )
                print(
                    f"{workers:>7} {concurrency:>5} {level.ok_per_second:>7.1f} "
                    f"{level.p50 * 1000:>8.1f} {level.p99 * 1000:>8.1f} {level.busy:>5} "
                    f"{level.other:>5}"
                )
                best[workers] = max(best.get(workers, 0.0), level.ok_per_second)
                admitted = workers * (serve.max_concurrency + serve.max_queue)
                bound = min(concurrency, admitted) / max(level.ok_per_second, 1e-9)
                p99_at_max[workers] = (level.p99, bound)
        finally:
            stop_server(server)
    again = in_process_rate(model, picture, args.seconds)
    print(f"\nin-process, 1 thread, again: {again:.1f} pictures/s (others share the CPU)")
    single = (single + again) / 2
    if 1 in best:
        ratio = best[1] / single
        verdict = "meets" if ratio >= 0.9 else "misses"
        print(f"1 worker / in-process single core (mean): {ratio:.2f} ({verdict} the 0.9 goal)")
    if 1 in best and 2 in best:
        print(f"2 workers / 1 worker: {best[2] / best[1]:.2f} (target >= 1.6)")
    for workers, (p99, bound) in p99_at_max.items():
        print(
            f"{workers} worker(s), concurrency {args.concurrency[-1]}: p99 {p99 * 1000:.0f} ms, "
            f"queue bound (admitted / throughput) {bound * 1000:.0f} ms "
            f"({'within' if p99 <= 1.5 * bound else 'beyond'} 1.5x)"
        )
    print(f"server log: {log}")


if __name__ == "__main__":
    main()
