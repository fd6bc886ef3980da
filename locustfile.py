"""Realistic traffic for `digits serve`: pictures of MNIST test digits in several sizes and formats,
sent to the three reading endpoints in a mix, by users who pause between pictures.

locust is not a dependency of the project: `.venv/bin/pip install locust` first. Then, with a
server running (`.venv/bin/digits serve --model models/model.pt`), a bounded headless run:

    .venv/bin/locust -f locustfile.py --headless --host http://127.0.0.1:8000 \
        --users 20 --spawn-rate 5 --run-time 60s --only-summary

503 answers (queue full, with Retry-After) count as failures in locust's summary: they show where
the server starts shedding load. Only loopback or your own test hosts are valid targets.
"""

from __future__ import annotations

import random

from locust import HttpUser, between, task

from bench.serve_bench import digits_picture

# (width, height), digits: from a phone crop of a few digits to a scanned page of many
LAYOUTS = (((320, 240), 4), ((640, 480), 10), ((1024, 768), 15), ((1600, 1200), 20))
PICTURES = [
    (f"{w}x{h}.{fmt.lower()}", digits_picture((w, h), count, seed, fmt)[0], f"image/{fmt.lower()}")
    for seed, ((w, h), count) in enumerate(LAYOUTS)
    for fmt in ("PNG", "JPEG")
]


class PictureReader(HttpUser):
    """Someone reading pictures: mostly labels, sometimes probabilities or an annotated copy."""

    wait_time = between(0.5, 2.0)

    @task(6)
    def predictions(self) -> None:
        name, data, media_type = random.choice(PICTURES)
        self.client.post("/predictions", files={"file": (name, data, media_type)})

    @task(2)
    def probabilities(self) -> None:
        _, data, media_type = random.choice(PICTURES)
        self.client.post("/probabilities", data=data, headers={"Content-Type": media_type})

    @task(2)
    def annotations(self) -> None:
        name, data, media_type = random.choice(PICTURES)
        accept = random.choice(("image/png", "image/jpeg"))
        self.client.post(
            "/annotations", files={"file": (name, data, media_type)}, headers={"Accept": accept}
        )
