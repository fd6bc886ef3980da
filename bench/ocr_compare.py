"""This reader beside general OCR on the same layout pages: Tesseract 5 and RapidOCR, if installed.

    .venv/bin/python bench/ocr_compare.py [--layouts 10] [--layout-seed 0] [--condition ...]

The pages are bench/layouts.py's (MNIST test digits and the machine's fonts, every condition).
Each engine's text is reduced to its digits, in its own reading order, and compared with the
page's digits in reading order: digits found and right are the longest common subsequence of
the two (so a digit read in the wrong place, or a wrong digit, does not count), precision is
that over the digits the engine read, and a page is read exactly when the two sequences are
equal (spacing and line breaks aside; finder_quality.py's exact reads also check those).

Engines, each only when present:
- this reader (the champion, or ``--model``);
- Tesseract 5 (`apt-get install tesseract-ocr`), digits only, as a block of text (``--psm 6``)
  and as sparse text (``--psm 11``);
- RapidOCR (PP-OCRv4 on ONNX Runtime; ``pip install rapidocr-onnxruntime``, whose wheel carries
  its models), importable from this Python.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from layouts import CONDITIONS, make_layout
from synthetic import DEFAULT_DIGITS, load_digits

from digits_cli.config import load_settings
from digits_cli.finder import read_digits
from digits_cli.images import encode_image
from digits_cli.inference import load_model

Engine = Callable[[np.ndarray], str]  # an RGB page -> the text read


def digits_only(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def common_digits(truth: str, read: str) -> int:
    """The length of the longest common subsequence of two digit strings."""
    previous = [0] * (len(read) + 1)
    for t in truth:
        current = [0]
        for j, r in enumerate(read):
            current.append(previous[j] + 1 if t == r else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def this_reader(model: str | None) -> Engine:
    settings = load_settings()
    classify = load_model(model, settings).classify
    return lambda page: read_digits(page, classify, settings.segment).text


def tesseract(psm: int) -> Engine:
    def read(page: np.ndarray) -> str:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "page.png"
            path.write_bytes(encode_image(page, "png"))
            return subprocess.run(
                ["tesseract", str(path), "stdout", "--psm", str(psm),
                 "-c", "tessedit_char_whitelist=0123456789"],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip

    return read


def rapidocr() -> Engine | None:
    try:
        from rapidocr_onnxruntime import RapidOCR  # type: ignore[import-not-found]
    except ImportError:
        return None
    engine = RapidOCR()

    def read(page: np.ndarray) -> str:
        result, _ = engine(np.ascontiguousarray(page[:, :, ::-1]))  # it takes BGR, as OpenCV
        return " ".join(text for _, text, _ in result or [])

    return read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="as digits predict --model (default: the champion)")
    parser.add_argument("--layouts", type=int, default=10, help="pages per condition")
    parser.add_argument("--layout-seed", type=int, default=0)
    parser.add_argument("--condition", nargs="*", default=list(CONDITIONS), choices=CONDITIONS)
    parser.add_argument("--digits", type=Path, default=DEFAULT_DIGITS, help="MNIST test split")
    args = parser.parse_args()
    import cv2

    cv2.setNumThreads(1)
    engines: dict[str, Engine] = {"digits": this_reader(args.model)}
    if shutil.which("tesseract"):
        engines["tesseract psm 6"] = tesseract(6)
        engines["tesseract psm 11"] = tesseract(11)
    else:
        print("tesseract: not installed (apt-get install tesseract-ocr), left out")
    if (rapid := rapidocr()) is not None:
        engines["rapidocr"] = rapid
    else:
        print("rapidocr: not importable (pip install rapidocr-onnxruntime), left out")
    images, labels = load_digits(args.digits)
    # per engine and condition: truth digits, read digits, common digits, exact pages, pages
    counts: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    seconds: dict[str, float] = defaultdict(float)
    for condition in args.condition:
        for index in range(args.layouts):
            sample = make_layout(condition, index, args.layout_seed, images, labels)
            truth = digits_only(sample.text)
            for name, engine in engines.items():
                start = time.perf_counter()
                read = digits_only(engine(sample.image))
                seconds[name] += time.perf_counter() - start
                row = counts[name].setdefault(condition, np.zeros(5, np.int64))
                row += (len(truth), len(read), common_digits(truth, read), truth == read, 1)
    pages = len(args.condition) * args.layouts
    print(f"layout pages: {args.layouts} per condition, seed {args.layout_seed}; digits in "
          "reading order, spacing aside (found+right / precision / exact pages)")  # fmt: skip
    print("  " + "condition".ljust(11) + "".join(name.rjust(22) for name in engines))
    for condition in [*args.condition, "all"]:
        cells = []
        for name in engines:
            truth, read, common, exact, total = (
                sum(counts[name].values()) if condition == "all" else counts[name][condition]
            )
            cells.append(
                f"{common / max(1, truth):.1%}/{common / max(1, read):.1%}/{exact / total:.0%}"
            )
        print("  " + condition.ljust(11) + "".join(cell.rjust(22) for cell in cells))
    print("  seconds a page: " + ", ".join(f"{n} {seconds[n] / pages:.2f}" for n in engines))


if __name__ == "__main__":
    main()
