"""The OpenAPI description of `digits serve`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass


# --- OpenAPI ---------------------------------------------------------------------------------


def openapi_document() -> dict[str, Any]:
    """A hand-written OpenAPI 3.1 description of the endpoints."""
    error = {"$ref": "#/components/responses/Error"}
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
        "413": error,
        "415": error,
        "503": {"$ref": "#/components/responses/Unavailable"},
        "504": error,
    }

    def reading_operation(summary: str, schema: str) -> dict[str, Any]:
        return {
            "post": {
                "summary": summary,
                "requestBody": upload,
                "responses": {
                    "200": {
                        "description": "The reading.",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": f"#/components/schemas/{schema}"}
                            }
                        },
                    },
                    **picture_errors,
                },
            }
        }

    def simple_get(summary: str, content_type: str, codes: tuple[str, ...] = ("200",)) -> dict:
        responses: dict[str, Any] = {
            "200": {"description": "OK", "content": {content_type: {"schema": {}}}}
        }
        for code in codes[1:]:
            responses[code] = {"$ref": "#/components/responses/Unavailable"}
        return {"get": {"summary": summary, "responses": responses}}

    digit = {
        "type": "object",
        "properties": {
            "label": {"type": "integer", "minimum": 0, "maximum": 9},
            "confidence": {"type": "number"},
            "box": {
                "type": "array",
                "items": {"type": "integer"},
                "minItems": 4,
                "maxItems": 4,
                "description": "x, y, width, height in pixels",
            },
            "probabilities": {
                "type": "array",
                "items": {"type": "number"},
                "minItems": 10,
                "maxItems": 10,
            },
        },
    }
    reading = {
        "type": "object",
        "required": ["model", "width", "height", "text", "digits"],
        "properties": {
            "model": {
                "type": "object",
                "properties": {k: {"type": "string"} for k in ("name", "version", "uri")},
            },
            "width": {"type": "integer"},
            "height": {"type": "integer"},
            "text": {"type": "string", "description": "the digits read, in reading order"},
            "digits": {"type": "array", "items": {"$ref": "#/components/schemas/Digit"}},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "digits",
            "version": "1",
            "description": "Reads every handwritten digit in a picture.",
        },
        "paths": {
            "/predictions": reading_operation(
                "Read every digit: label per box corner", "Predictions"
            ),
            "/probabilities": reading_operation(
                "Read every digit: 10 probabilities per box corner", "Probabilities"
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
            "/health": simple_get("Liveness", "application/json"),
            "/ready": simple_get(
                "Readiness: 200 once the model is loaded", "application/json", ("200", "503")
            ),
            "/metrics": simple_get("Prometheus metrics", "text/plain"),
            "/": simple_get("The web page", "text/html"),
        },
        "components": {
            "schemas": {
                "Digit": digit,
                "Predictions": {
                    "allOf": [
                        reading,
                        {
                            "properties": {
                                "predictions": {
                                    "type": "object",
                                    "description": '"x,y" of a box -> its label',
                                    "additionalProperties": {"type": "integer"},
                                }
                            }
                        },
                    ]
                },
                "Probabilities": {
                    "allOf": [
                        reading,
                        {
                            "properties": {
                                "probabilities": {
                                    "type": "object",
                                    "description": '"x,y" of a box -> its 10 probabilities',
                                    "additionalProperties": {
                                        "type": "array",
                                        "items": {"type": "number"},
                                    },
                                }
                            }
                        },
                    ]
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                },
            },
            "responses": {
                "Error": {
                    "description": "The request cannot be served (see the message).",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
                "Unavailable": {
                    "description": "Model not loaded yet, or the work queue is full: retry after "
                    "the Retry-After header's seconds.",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
            },
        },
    }
