"""The exception for user mistakes: the CLI prints its message on one line, no traceback."""


class DigitsError(Exception):
    """A problem the user can fix: a missing file, a bad value, missing data."""


# The optional installs (pyproject.toml's extras) and the top-level modules only they bring.
# The base install reads and serves; the lifecycle and the registry client are extras.
EXTRA_OF_MODULE = {
    "torch": "train",
    "onnx": "train",
    "dvc": "train",
    "codecarbon": "train",
    "matplotlib": "train",
    "scipy": "train",
    "sklearn": "train",
    "mlflow": "registry",
}


def missing_extra(exc: ModuleNotFoundError, needs: str | None = None) -> Exception:
    """The one-line error for a module of an extra that is not installed, naming the extra the
    command ``needs`` (else the module's own); any other missing module is a broken install and
    stays what it is."""
    module = (exc.name or "").split(".")[0]
    if module not in EXTRA_OF_MODULE:
        return exc
    extra = needs or EXTRA_OF_MODULE[module]
    also = " (or 'train', which includes it)" if extra == "registry" else ""
    return DigitsError(
        f"{module} is not installed: this needs the '{extra}' extra{also}: "
        f"pip install 'digits-cli[{extra}]'"
    )
