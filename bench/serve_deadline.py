"""A request whose deadline passes while its picture is being found: how soon its 504 comes, and
whether the request after it is served at once (the worker having dropped the slow work).

First, in this process: cluttered ruled pages (rules at a random pitch and tilt joined by a
margin line, and thousands of small ink marks: loops, strokes, blots, specks; made here with
OpenCV, a new layout, size and count for every seed) are read on one thread as a `digits serve`
worker reads them, timing decode, find and the first classification batch, and, for the page
sent, the calls find_digits makes itself (cProfile), which says where a deadline check inside
finding would go. The page sent is the one whose finding is nearest ``--find-seconds``, and
``serve.timeout`` is a ``--ratio``-th of its finding time.

Then over HTTP: a real `digits serve` on loopback, 1 worker, ``serve.max_concurrency 1``, that
timeout. Each repetition posts the slow page and times its answer (goal: 504 with the JSON
error within 1.5x the timeout), then at once posts a normal picture
(tests/data/real/seed-api-test.png) and times it against the idle server's latency; then posts
the slow page with a normal picture 0.1 s behind it, timing when the queued one is answered.
Prints the figures; asserts nothing. About 40 s.

    .venv/bin/python bench/serve_deadline.py [--model models/champion/model.onnx]
        [--repeats 3] [--seeds 3] [--find-seconds 3] [--ratio 3]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_bench import start_server, stop_server

ROOT = Path(__file__).resolve().parents[1]
NORMAL = ROOT / "tests/data/real/seed-api-test.png"
GOAL_RATIO = 1.5


# --- the pictures ----------------------------------------------------------------------------


def cluttered_page(seed: int, side: int, blobs: int, ruled: bool) -> bytes:
    """A ``side``-pixel square PNG page holding ``blobs`` small marks of random kinds."""
    rng = np.random.default_rng(seed)
    paper = rng.integers(225, 256, 3)
    page = np.empty((side, side, 3), np.uint8)
    page[:] = paper
    if ruled:  # rules at a random pitch and tilt, and a margin joining them: ruled paper
        pitch = int(rng.integers(25, 60))
        tilt = rng.uniform(-0.02, 0.02)
        colour = tuple(int(c) for c in rng.integers(120, 200, 3))
        for y in range(pitch, side, pitch):
            cv2.line(page, (0, y), (side - 1, int(y + tilt * side)), colour, 1, cv2.LINE_AA)
        margin = int(rng.integers(side // 20, side // 6))
        cv2.line(page, (margin, 0), (margin, side - 1), colour, 2, cv2.LINE_AA)
    for _ in range(blobs):
        x, y = (int(v) for v in rng.integers(0, side, 2))
        size = int(rng.integers(4, 40))
        ink = tuple(int(c) for c in rng.integers(0, 110, 3))
        thickness = int(rng.integers(1, 5))
        kind = rng.integers(0, 4)
        if kind == 0:  # a loop, like a 0 or a 6's belly
            axes = (max(1, size // 3), max(1, size // 2))
            angle = float(rng.uniform(0, 180))
            cv2.ellipse(page, (x, y), axes, angle, 0, 360, ink, thickness, cv2.LINE_AA)
        elif kind == 1:  # a stroke or a hook
            points = np.cumsum(rng.integers(-size // 2 - 1, size // 2 + 2, (4, 2)), axis=0)
            cv2.polylines(
                page, [np.add(points, (x, y)).astype(np.int32)], False, ink, thickness, cv2.LINE_AA
            )
        elif kind == 2:  # a filled blot
            cv2.circle(page, (x, y), max(1, size // 4), ink, -1, cv2.LINE_AA)
        else:  # specks
            for dx, dy in rng.integers(-size, size + 1, (8, 2)):
                cv2.circle(page, (x + int(dx), y + int(dy)), 1, ink, -1)
    buffer = io.BytesIO()
    Image.fromarray(page).save(buffer, "PNG")
    return buffer.getvalue()


def pages(seeds: int) -> dict[str, bytes]:
    """Ruled pages with a margin (the line remover's hardest case) and clutter, one per seed."""
    found = {}
    for seed in range(seeds):
        rng = np.random.default_rng(1000 + seed)
        side = int(rng.choice([1600, 1800, 2000]))
        blobs = int(rng.integers(3000, 9000))
        name = f"seed {seed}: {side}x{side}, ruled, {blobs} marks"
        found[name] = cluttered_page(1000 + seed, side, blobs, ruled=True)
    return found


# --- in-process steps ------------------------------------------------------------------------


def timed(step: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    result = step()
    return result, time.perf_counter() - start


def step_times(data: bytes, model: Any, segment: Any) -> dict[str, float]:
    """Seconds of decode, find and the first classification batch of ``data``, as a serving
    worker runs them (one thread)."""
    from digits_cli.finder import find_digits
    from digits_cli.images import decode_scaled

    decoded, decode_s = timed(
        lambda: decode_scaled(data, "page", segment.max_pixels, segment.max_side)
    )
    picture = decoded[0]  # type: ignore[index]
    found, find_s = timed(lambda: find_digits(picture, segment))
    candidates: list[Any] = found  # type: ignore[assignment]
    crops = np.stack([c.crop for c in candidates]) if candidates else None
    _, classify_s = timed(lambda: None if crops is None else model.classify(crops))
    return {
        "decode": decode_s,
        "find": find_s,
        "classify": classify_s,
        "candidates": float(len(candidates)),
    }


def find_breakdown(data: bytes, segment: Any) -> list[tuple[str, float]]:
    """The calls find_digits makes itself, by seconds (cProfile, which slows Python more than
    the C it calls: shares, not absolute times)."""
    from digits_cli.finder import find_digits, regions
    from digits_cli.images import decode_scaled

    picture, _ = decode_scaled(data, "page", segment.max_pixels, segment.max_side)
    profile = cProfile.Profile()
    profile.runcall(find_digits, picture, segment)
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    (finder,) = [k for k in stats if k[2] == "find_digits" and k[0] == regions.__file__]
    calls: dict[str, float] = {}
    for (path, _, function), (*_, callers) in stats.items():
        if finder in callers:
            label = f"{Path(path).stem}.{function}" if path != "~" else function
            calls[label] = calls.get(label, 0.0) + callers[finder][3]
    return sorted(calls.items(), key=lambda item: -item[1])


# --- over HTTP -------------------------------------------------------------------------------


def post(url: str, data: bytes) -> tuple[int, float, dict]:
    start = time.perf_counter()
    answer = httpx.post(url, content=data, headers={"content-type": "image/png"}, timeout=60)
    seconds = time.perf_counter() - start
    try:
        body = answer.json()
    except ValueError:
        body = {}
    return answer.status_code, seconds, body


def post_after(delay: float, url: str, data: bytes) -> tuple[int, float, dict]:
    time.sleep(delay)
    return post(url, data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/champion/model.onnx")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3, help="cluttered pages to try")
    parser.add_argument("--ratio", type=float, default=3.0, help="finding time / timeout")
    parser.add_argument(
        "--find-seconds", type=float, default=3.0, help="send the page nearest this finding time"
    )
    args = parser.parse_args()
    model = str((ROOT / args.model).resolve())
    if not Path(model).is_file():
        raise SystemExit(f"{model}: no model file; run `make run` or pass --model")
    cv2.setNumThreads(1)  # as a serving worker (serving.py)
    from digits_cli.config import load_settings
    from digits_cli.inference import load_model

    settings = load_settings()
    loaded = load_model(model, settings)

    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print("in-process, one thread, seconds per step (classify: the first batch):")
    print("  page                                     kB  decode    find  classify  regions")
    times = {}
    candidates = pages(args.seeds)
    step_times(NORMAL.read_bytes(), loaded, settings.segment)  # warm-up: first calls
    for name, data in candidates.items():
        times[name] = step_times(data, loaded, settings.segment)
        t = times[name]
        print(f"  {name:36s} {len(data) / 1e3:6.0f} {t['decode']:7.3f} {t['find']:7.3f} "
              f"{t['classify']:9.3f} {t['candidates']:8.0f}")  # fmt: skip
    # The page to send: the one whose finding is nearest --find-seconds (bounds the run).
    chosen = min(times, key=lambda name: abs(times[name]["find"] - args.find_seconds))
    slow, find_s = candidates[chosen], times[chosen]["find"]
    print(f"sent: {chosen}; the calls find_digits makes, cProfile's shares:")
    breakdown = find_breakdown(slow, settings.segment)
    total = sum(seconds for _, seconds in breakdown) or 1.0
    for label, seconds in breakdown[:8]:
        print(f"  {label:40s} {100 * seconds / total:5.1f}%")

    timeout = round(max(0.1, find_s / args.ratio), 2)
    normal = NORMAL.read_bytes()
    env = {
        **os.environ,
        "DIGITS_SERVE__TIMEOUT": str(timeout),
        "DIGITS_SERVE__MAX_CONCURRENCY": "1",
    }
    print(f"\ndigits serve, 1 worker, max_concurrency 1, serve.timeout {timeout:g} s (finding "
          f"the slow page took {find_s:.2f} s = {find_s / timeout:.1f} timeouts):")  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        server, base = start_server(model, 1, env, Path(folder) / "server.log")
        try:
            url = f"{base}/predictions"
            for _ in range(3):
                post(url, normal)
            idle = [post(url, normal)[1] for _ in range(10)]
            idle_ms = 1000 * statistics.median(idle)
            print(f"  idle server, normal picture: median {idle_ms:.1f} ms over 10")
            for repeat in range(args.repeats):
                status, slow_s, body = post(url, slow)
                after_status, after_s, _ = post(url, normal)
                later = statistics.median(post(url, normal)[1] for _ in range(3))
                verdict = "within" if slow_s <= GOAL_RATIO * timeout else "OVER"
                print(f"  #{repeat + 1} slow page: {status} in {slow_s:.2f} s = "
                      f"{slow_s / timeout:.2f}x the timeout ({verdict} {GOAL_RATIO}x), "
                      f"JSON error {body.get('error')!r}")  # fmt: skip
                print(f"     next normal picture: {after_status} in {1000 * after_s:.1f} ms "
                      f"({after_s * 1000 / idle_ms:.2f}x idle; the 3 after it: median "
                      f"{1000 * later:.1f} ms)")  # fmt: skip
                with ThreadPoolExecutor(1) as pool:
                    queued = pool.submit(post_after, 0.1, url, normal)
                    status, slow_s, _ = post(url, slow)
                    q_status, q_s, _ = queued.result()
                answered = 0.1 + q_s
                print(f"     with a normal picture 0.1 s behind it: slow {status} in "
                      f"{slow_s:.2f} s; the queued one {q_status} {answered:.2f} s after the "
                      f"slow one was sent ({q_s:.2f} s after its own)")  # fmt: skip
        finally:
            stop_server(server)


if __name__ == "__main__":
    main()
