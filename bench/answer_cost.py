"""What building answers through the models of digits_cli.schema costs per reading.

    .venv/bin/python bench/answer_cost.py [--model MODEL] [--rounds 9] [--calls 2000]

The reading is the champion's (or ``--model``'s) of read_speed's 640x480 picture of 10 MNIST
test digits. Times, interleaved in one run, medians of ``--rounds`` rounds of ``--calls`` calls:

- the answer of /predictions as a dict built by hand, as the code did before the models
  (``Reading.to_dict``), against ``answers.reading_payload`` (validated through the models);
- its bytes: ``json.dumps`` of the hand-built dict against the models' ``model_dump_json``
  (what the service sends);
- a `digits predict --json` line built by hand, against ``cli.reading_line``; both through
  ``json.dumps``, as the command prints it.

Goal: at most 0.1 ms extra per reading of 10 digits (the issue asks for well under).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from read_speed import test_picture
from synthetic import DEFAULT_DIGITS

from digits_cli.answers import reading_answer, reading_payload
from digits_cli.batch import FileReading
from digits_cli.cli_reading import reading_line
from digits_cli.config import load_settings
from digits_cli.finder import Reading
from digits_cli.inference import DigitReader, LoadedModel, load_model

GOAL_SECONDS = 1e-4


def by_hand(model: LoadedModel, reading: Reading) -> dict[str, Any]:
    """The /predictions answer as Reading.to_dict and reading_payload built it before."""
    payload: dict[str, Any] = {
        "model": model.public(),
        "width": reading.width,
        "height": reading.height,
        "text": reading.text,
        "digits": [
            {
                "label": d.label,
                "confidence": d.confidence,
                "box": list(d.box),
                "probabilities": list(d.probabilities),
            }
            for d in reading.digits
        ],
    }
    payload["predictions"] = {f"{d['box'][0]},{d['box'][1]}": d["label"] for d in payload["digits"]}
    return payload


def line_by_hand(model: LoadedModel, reading: Reading) -> dict[str, Any]:
    answer = by_hand(model, reading)
    del answer["predictions"]
    return {"image": "picture.png", **answer, "model": model.describe()}


def seconds_per_call(call: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="as digits predict --model")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()

    settings = load_settings()
    model = load_model(args.model, settings)
    _, reading = DigitReader(model, settings.segment).read_bytes(
        test_picture(DEFAULT_DIGITS), "picture.png"
    )
    answer = FileReading(Path("picture.png"), reading)
    assert json.dumps(by_hand(model, reading)) == json.dumps(
        reading_payload(model, reading, "predictions")
    )
    assert json.loads(reading_answer(model, reading, "predictions").model_dump_json()) == by_hand(
        model, reading
    )
    assert json.loads(json.dumps(line_by_hand(model, reading))) == reading_line(answer, model)
    pairs = {
        "/predictions as a dict": (
            lambda: by_hand(model, reading),
            lambda: reading_payload(model, reading, "predictions"),
        ),
        "/predictions as bytes": (
            lambda: json.dumps(by_hand(model, reading)),
            lambda: reading_answer(model, reading, "predictions").model_dump_json(),
        ),
        "predict --json line": (
            lambda: json.dumps(line_by_hand(model, reading)),
            lambda: json.dumps(reading_line(answer, model)),
        ),
    }
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in pairs}
    for _ in range(args.rounds):
        for name, (before, now) in pairs.items():
            times[name][0].append(seconds_per_call(before, args.calls))
            times[name][1].append(seconds_per_call(now, args.calls))
    print(f"reading of {len(reading.digits)} digits, medians of {args.rounds} interleaved rounds")
    for name, (before, now) in times.items():
        old, new = statistics.median(before), statistics.median(now)
        extra = new - old
        verdict = "meets" if extra <= GOAL_SECONDS else "misses"
        print(
            f"  {name:24s} by hand {old * 1e6:6.1f} us, models {new * 1e6:6.1f} us: "
            f"{extra * 1e6:+6.1f} us ({verdict} the {GOAL_SECONDS * 1e3:.1f} ms goal)"
        )


if __name__ == "__main__":
    main()
