# syntax=docker/dockerfile:1
# The `digits serve` HTTP service on CPU: the base install only (numpy, OpenCV, Pillow, ONNX Runtime,
# Starlette, uvicorn), no torch and no MLflow. The model comes one of two ways:
#
# - Baked in (the default; what `make image` and docker-compose.yml do): `digits export
#   models/serving.onnx` writes the registry's champion to one ONNX file, copied into the image.
#   No registry is needed at run time; the file names the registry version it came from.
# - From a registry: build with the registry client and a registry URI,
#     docker build --build-arg EXTRAS=registry --build-arg MODEL=models:/digits-classifier@champion .
#   and give the MLflow server at run time, e.g.
#     docker run -p 8000:8000 -e MLFLOW_TRACKING_URI=http://mlflow.internal:5000 digits
#   so a new champion ships by moving the alias, not by rebuilding.

FROM python:3.11.13-slim-bookworm AS builder
ARG EXTRAS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The dependencies from their lock, every file hash-checked (requirements/base.txt, or
# requirements/registry.txt with EXTRAS=registry; requirements/lock.py writes them), in a layer
# of their own that a code change does not rebuild; then the project alone (its build backend is
# in the lock). The lock is the whole closure, hence --no-deps (as make install): pip resolves
# nothing. README.md is left out on purpose: it only feeds the wheel's long description.
COPY requirements/base.txt requirements/registry.txt ./requirements/
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps --require-hashes -r "requirements/${EXTRAS:-base}.txt"
COPY pyproject.toml ./
COPY digits_cli ./digits_cli
RUN pip install --no-deps --no-build-isolation . && pip check

FROM python:3.11.13-slim-bookworm AS runtime
ARG MODEL=/app/serving.onnx
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DIGITS_SERVE__PORT=8000 \
    DIGITS_SERVE__MODEL=${MODEL}
RUN useradd --create-home --uid 10001 --user-group digits
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# params.yaml gives the container the repository's settings. The wildcard makes the baked model
# optional: without `digits export models/serving.onnx` nothing but params.yaml is copied.
COPY --chown=digits:digits params.yaml models/serving.onnx* ./
USER digits
EXPOSE 8000
# slim images carry no curl; urlopen raises (exit 1) on a refused connection or a non-2xx answer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
CMD ["digits", "serve", "--host", "0.0.0.0"]
