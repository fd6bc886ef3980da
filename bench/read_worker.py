"""One reader for bench/read_speed.py --against: reads a picture on request, in lockstep.

    PYTHONPATH=TREE python bench/read_worker.py PICTURE MODEL   (MODEL '': the champion)

``digits_cli`` comes from ``PYTHONPATH``: this tree, or an earlier revision's checkout, so only
what both have is used (``decode_image``, ``read_digits``, ``load_settings``; the model through
``inference.load_model`` today, a torch checkpoint through ``make_classify`` before issue 9).
Each line ``N`` on standard input reads the picture N times; the answer is one line: the CPU
seconds they took, of which decoding and classifying, and the text read. An empty line ends it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any


def main() -> None:
    import cv2

    from digits_cli.config import load_settings
    from digits_cli.finder import read_digits
    from digits_cli.images import decode_image

    picture, model_spec = Path(sys.argv[1]).read_bytes(), sys.argv[2] or None
    cv2.setNumThreads(1)
    settings = load_settings()
    try:
        from digits_cli.inference import load_model
        from digits_cli.memory import keep_freed_memory
    except ImportError:  # before issue 9: torch classifies a checkpoint
        import importlib

        import torch

        from digits_cli.model import load_checkpoint

        torch.set_num_threads(1)
        then = importlib.import_module("digits_cli.inference")  # its make_classify is gone now
        classify = then.make_classify(load_checkpoint(Path(model_spec or "models/model.pt"))[0])
    else:
        keep_freed_memory()  # as a serving worker reads
        classify = load_model(model_spec, settings).classify
    cfg = settings.segment
    spent = {"decode": 0.0, "classify": 0.0}

    def timed_classify(crops: Any) -> Any:
        start = time.process_time()
        probabilities = classify(crops)
        spent["classify"] += time.process_time() - start
        return probabilities

    for line in sys.stdin:
        if not line.strip():
            break
        spent.update(decode=0.0, classify=0.0)
        start = time.process_time()
        for _ in range(int(line)):
            decoding = time.process_time()
            rgb = decode_image(picture, "bench.png", cfg.max_pixels)
            spent["decode"] += time.process_time() - decoding
            reading = read_digits(rgb, timed_classify, cfg)
        total = time.process_time() - start
        print(total, spent["decode"], spent["classify"], repr(reading.text), flush=True)


if __name__ == "__main__":
    main()
