"""What `digits serve` answers with: a reading as the API's JSON models, or drawn on the picture."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from digits_cli.schema import Predictions, Probabilities, answer_of

if TYPE_CHECKING:
    import numpy as np

    from digits_cli.finder import Reading
    from digits_cli.inference import LoadedModel


def reading_answer(model: LoadedModel, reading: Reading, key: str) -> Predictions | Probabilities:
    """The answer: model, picture size, text, digits, and the ``"x,y"``-keyed ``key`` map.

    ``key`` is ``predictions`` (label per digit) or ``probabilities`` (10 floats per digit); x,y is
    the top-left corner of the digit's box, the reference project's contract.
    """
    if key == "predictions":
        labels = {f"{d.box[0]},{d.box[1]}": d.label for d in reading.digits}
        return answer_of(Predictions, reading, model=model.public(), predictions=labels)
    tens = {f"{d.box[0]},{d.box[1]}": d.probabilities for d in reading.digits}
    return answer_of(Probabilities, reading, model=model.public(), probabilities=tens)


def reading_payload(model: LoadedModel, reading: Reading, key: str) -> dict[str, Any]:
    """The answer (see reading_answer) as JSON-ready data."""
    return reading_answer(model, reading, key).model_dump(mode="json")


def annotated_picture(picture: np.ndarray, reading: Reading, fmt: str) -> bytes:
    """The picture as decoded (at most twice the finder's working size) with a box and label
    drawn for every digit, encoded as ``fmt``."""
    from digits_cli.drawing import annotate_image
    from digits_cli.images import encode_image
    from digits_cli.inference import at_size

    on_picture = at_size(reading, picture.shape[1], picture.shape[0])
    return encode_image(annotate_image(picture, on_picture), fmt)


def preferred_picture_type(accept: str) -> str:
    """``image/jpeg`` when the Accept header prefers it to PNG, else ``image/png``."""
    quality = {"image/png": 0.0, "image/jpeg": 0.0}
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        media = "image/jpeg" if media.lower() == "image/jpg" else media.lower()
        if media in quality:
            q = 1.0
            for param in params:
                name, _, value = param.partition("=")
                if name.strip() == "q":
                    with contextlib.suppress(ValueError):
                        q = float(value)
            quality[media] = q
    return "image/jpeg" if quality["image/jpeg"] > quality["image/png"] else "image/png"
