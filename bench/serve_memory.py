"""How much a `digits serve` worker's memory peaks while it reads huge pictures, 2 at a time.

Starts a real one-worker `digits serve` on a free loopback port, reads its resident peak
(VmHWM in /proc/PID/status) after a warm-up picture, then posts ``--pictures`` huge pictures, two
at a time, and reads the peak again. The pictures (made here, compressed to a few hundred kB):

- ``rgba-png``: 6300x6300 RGBA PNG, mostly transparent, a few digit strokes (the issue's case);
- ``photo-jpeg``: 6000x4500 JPEG photo-like page;
- ``rgb-png``: 6000x4500 RGB PNG.

    python bench/serve_memory.py [--model models/champion/model.onnx]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_bench import start_server, stop_server

GOAL_MB = 150


def huge_pictures() -> dict[str, tuple[bytes, str]]:
    def strokes(mode: str, size: tuple[int, int], background: tuple[int, ...]) -> Image.Image:
        picture = Image.new(mode, size, background)
        draw = ImageDraw.Draw(picture)
        rng = np.random.default_rng(0)
        for _ in range(40):  # digit-sized scribbles, 300 px tall
            x, y = int(rng.integers(0, size[0] - 300)), int(rng.integers(0, size[1] - 300))
            draw.ellipse((x, y, x + 200, y + 300), outline=(20, 20, 20, 255)[: len(mode)], width=24)
        return picture

    def encoded(picture: Image.Image, fmt: str) -> bytes:
        buffer = io.BytesIO()
        picture.save(buffer, fmt, **({"quality": 85} if fmt == "JPEG" else {}))
        return buffer.getvalue()

    return {
        "rgba-png": (encoded(strokes("RGBA", (6300, 6300), (0, 0, 0, 0)), "PNG"), "image/png"),
        "photo-jpeg": (
            encoded(strokes("RGB", (6000, 4500), (235, 230, 220)), "JPEG"),
            "image/jpeg",
        ),
        "rgb-png": (encoded(strokes("RGB", (6000, 4500), (250, 250, 250)), "PNG"), "image/png"),
    }


def peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/champion/model.onnx")
    parser.add_argument("--pictures", type=int, default=4, help="of each kind, 2 at a time")
    args = parser.parse_args()

    pictures = huge_pictures()
    env = {**os.environ, "DIGITS_SERVE__MAX_CONCURRENCY": "2"}
    print("one digits serve worker, peak resident memory (VmHWM) rise while reading, 2 at a time:")
    for kind, (data, media_type) in pictures.items():
        with tempfile.TemporaryDirectory() as folder:
            server, base = start_server(args.model, 1, env, Path(folder) / "server.log")
        try:
            headers = {"content-type": media_type}
            small = Path("tests/data/real/seed-notebook-test.png").read_bytes()
            httpx.post(f"{base}/predictions", content=small, headers={"content-type": "image/png"})
            before = peak_mb(server.pid)

            def post(
                _: int, base: str = base, data: bytes = data, headers: dict = headers
            ) -> tuple[int, float]:
                start = time.perf_counter()
                answer = httpx.post(f"{base}/predictions", content=data, headers=headers,
                                    timeout=60)  # fmt: skip
                return answer.status_code, time.perf_counter() - start

            with ThreadPoolExecutor(2) as pool:
                answers = list(pool.map(post, range(args.pictures)))
            after = peak_mb(server.pid)
        finally:
            stop_server(server)
        statuses = sorted({status for status, _ in answers})
        seconds = np.median([s for _, s in answers])
        rise = after - before
        verdict = "meets" if rise <= GOAL_MB else "misses"
        print(f"  {kind:10s} {len(data) / 1e3:7.0f} kB: peak {before:.0f} -> {after:.0f} MB, "
              f"+{rise:.0f} MB ({verdict} the {GOAL_MB} MB goal); status {statuses}, "
              f"median {seconds:.2f} s each")  # fmt: skip


if __name__ == "__main__":
    main()
