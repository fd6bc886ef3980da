"""The shapes of every answer, defined once: `digits predict --json` lines, the HTTP service's
JSON answers, and (built from these models, see digits_cli.openapi) its OpenAPI schemas.

An answer is validated from the finder's results in one pass (``answer_of``): tens of us for a
reading of 10 digits, and pydantic's JSON of it is faster than json.dumps of a dict built by
hand (bench/answer_cost.py). The models are built when first used (``defer_build``), and no
JSON schema is made on the reading path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

if TYPE_CHECKING:
    from digits_cli.finder import Reading

TenProbabilities = Annotated[
    list[float],
    Field(
        min_length=10,
        max_length=10,
        description="the probability of each digit 0-9 (between 0 and 1, summing to 1)",
    ),
]


class Shape(BaseModel):
    """Base of the answers: built on first use, fields from attributes too."""

    model_config = ConfigDict(defer_build=True, from_attributes=True)


class Digit(Shape):
    """One digit read from a picture."""

    label: int = Field(ge=0, le=9, description="the digit read")
    confidence: float = Field(description="the probability of the label (between 0 and 1)")
    box: list[int] = Field(
        min_length=4, max_length=4, description="x, y, width, height in pixels of the picture"
    )
    probabilities: TenProbabilities


class PictureReading(Shape):
    """Every digit read from a picture, in reading order, and the text they spell."""

    width: int = Field(ge=0, description="the picture's width in pixels")
    height: int = Field(ge=0, description="the picture's height in pixels")
    text: str = Field(
        description="the numbers read, in reading order: a space between the numbers of a line, "
        "a newline between lines"
    )
    digits: list[Digit] = Field(description="every digit read, in reading order")


def without_default(schema: dict[str, Any]) -> None:
    """An optional field that is left out, never null: its schema shows no default."""
    schema.pop("default", None)


class ModelInfo(Shape):
    """The model that read the picture."""

    name: str
    version: str
    # The service names a registry URI only (a local path tells about the server's disk).
    uri: str | SkipJsonSchema[None] = Field(
        default=None,
        exclude_if=lambda uri: uri is None,
        json_schema_extra=without_default,
        description="where the model came from (the service shows registry URIs only)",
    )


# pydantic puts inherited fields first, the last base's first: these mixins keep the keys in the
# order the answers always had (image, model, then the reading).
class WithModel(Shape):
    model: ModelInfo


class WithImage(Shape):
    image: str = Field(description="the picture's path, as given")


class ReadingLine(PictureReading, WithModel, WithImage):
    """One line of `digits predict --json` (and of its --output file): a picture read."""


class FailedLine(WithImage):
    """A line of `digits predict --output FILE` for a picture that could not be read."""

    error: str = Field(description="why the picture could not be read")


class OutputSummary(Shape):
    """What `digits predict --output FILE --json` prints once the file is written."""

    output: str = Field(description="the JSON Lines file written")
    shard: str | None = Field(description="INDEX/COUNT of the share read, or null")
    pictures: int = Field(ge=0, description="pictures listed")
    failed: int = Field(ge=0, description="pictures that could not be read")
    model: ModelInfo


class Predictions(PictureReading, WithModel):
    """The answer of `POST /predictions`."""

    predictions: dict[str, Annotated[int, Field(ge=0, le=9)]] = Field(
        description='"x,y" (top-left corner of a digit\'s box) -> its label'
    )


class Probabilities(PictureReading, WithModel):
    """The answer of `POST /probabilities`."""

    probabilities: dict[str, TenProbabilities] = Field(
        description='"x,y" (top-left corner of a digit\'s box) -> its 10 probabilities'
    )


class Error(Shape):
    """Every error answer of the service."""

    error: str = Field(description="what went wrong, in one line")


class Health(Shape):
    """The answer of `GET /health`: the process answers."""

    status: Literal["ok"]


class Ready(Shape):
    """The answer of `GET /ready` once the model is loaded."""

    status: Literal["ready"]
    model: ModelInfo


# Everything the OpenAPI document describes (digits_cli.openapi), in this order.
ANSWERS: tuple[type[BaseModel], ...] = (
    Predictions,
    Probabilities,
    Error,
    Health,
    Ready,
    ReadingLine,
    FailedLine,
    OutputSummary,
)


Answer = TypeVar("Answer", bound=PictureReading)


def answer_of(shape: type[Answer], reading: Reading, **fields: Any) -> Answer:
    """The answer ``shape`` holding the finder's ``reading`` (its digits taken by attribute) and
    the other ``fields``, validated in one pass."""
    return shape.model_validate({**vars(reading), **fields})
