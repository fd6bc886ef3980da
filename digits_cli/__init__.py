"""digits: handwritten-digit recognition from data to serving."""

__version__ = "0.1.0"
