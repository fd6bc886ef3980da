"""The OpenAPI description of `digits serve`: the paths written here, every schema of an answer
generated from the models of digits_cli.schema.

Built on the first request for it, never at import: the reading path does not pay for it.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from digits_cli.schema import ANSWERS, Error, Health, Predictions, Probabilities, Ready

SCHEMAS = "#/components/schemas/"


def component_schemas() -> tuple[dict[str, Any], dict[type, dict[str, str]]]:
    """The JSON schemas of every answer (as they are dumped) keyed by model name, and the
    ``$ref`` of each model's."""
    from pydantic.json_schema import models_json_schema

    refs, schemas = models_json_schema(
        [(model, "serialization") for model in ANSWERS], ref_template=SCHEMAS + "{model}"
    )
    return schemas["$defs"], {model: refs[(model, "serialization")] for model in ANSWERS}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of the endpoints."""
    schemas, ref = component_schemas()
    error = {"$ref": "#/components/responses/Error"}
    unavailable = {"$ref": "#/components/responses/Unavailable"}
    upload = {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
    picture_errors = {
        "400": error,
        "408": error,
        "413": error,
        "415": error,
        "503": unavailable,
        "504": error,
    }

    def json_content(schema: dict[str, Any]) -> dict[str, Any]:
        return {"application/json": {"schema": schema}}

    def reading_operation(summary: str, answer: type) -> dict[str, Any]:
        return {
            "post": {
                "summary": summary,
                "requestBody": upload,
                "responses": {
                    "200": {"description": "The reading.", "content": json_content(ref[answer])},
                    **picture_errors,
                },
            }
        }

    def simple_get(summary: str, content: dict[str, Any], **others: Any) -> dict[str, Any]:
        return {
            "get": {
                "summary": summary,
                "responses": {"200": {"description": "OK", "content": content}, **others},
            }
        }

    html = {"text/html": {"schema": {"type": "string"}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "digits",
            "version": "1",
            "description": "Reads every handwritten digit in a picture.",
        },
        "paths": {
            "/predictions": reading_operation(
                "Read every digit: label per box corner", Predictions
            ),
            "/probabilities": reading_operation(
                "Read every digit: 10 probabilities per box corner", Probabilities
            ),
            "/annotations": {
                "post": {
                    "summary": "The picture with every digit boxed and labelled",
                    "requestBody": upload,
                    "responses": {
                        "200": {
                            "description": "PNG, or JPEG when the Accept header prefers it.",
                            "content": {
                                "image/png": {"schema": {"type": "string", "format": "binary"}},
                                "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                            },
                        },
                        **picture_errors,
                    },
                }
            },
            "/health": simple_get("Liveness", json_content(ref[Health])),
            "/ready": simple_get(
                "Readiness: 200 once the model is loaded",
                json_content(ref[Ready]),
                **{"503": unavailable},
            ),
            "/metrics": simple_get(
                "Prometheus metrics", {"text/plain": {"schema": {"type": "string"}}}
            ),
            "/": simple_get("The web page", html),
            "/docs": simple_get("This description, to read and try in a browser", html),
        },
        "components": {
            "schemas": schemas,
            "responses": {
                "Error": {
                    "description": "The request cannot be served (see the message).",
                    "content": json_content(ref[Error]),
                },
                "Unavailable": {
                    "description": "Model not loaded yet, or the work queue is full: retry after "
                    "the Retry-After header's seconds.",
                    "content": json_content(ref[Error]),
                },
            },
        },
    }


@functools.cache
def openapi_json() -> bytes:
    """The document as served at /openapi.json, built once."""
    return json.dumps(openapi_document(), separators=(",", ":")).encode()
