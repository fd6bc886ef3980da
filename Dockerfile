# syntax=docker/dockerfile:1
# The `digits serve` HTTP service on CPU. The model comes one of two ways:
#
# - Baked in (what `make image` and docker-compose.yml do): `digits export models/serving.pt`
#   writes the registry's champion to one file, copied into the image and served by building with
#   MODEL=/app/serving.pt. No registry is needed at run time.
# - From a registry (the default MODEL): at start `digits serve` loads the champion from the
#   MLflow server at MLFLOW_TRACKING_URI, given at run time, e.g.
#     docker run -p 8000:8000 -e MLFLOW_TRACKING_URI=http://mlflow.internal:5000 digits
#   so a new champion ships by moving the alias, not by rebuilding.

FROM python:3.11.13-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# CPU-only wheels first: the default PyPI torch drags in GBs of CUDA libraries a CPU server never
# uses; installing the package afterwards finds these pins already satisfied.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1
WORKDIR /src
# README.md is left out on purpose: it only feeds the wheel's long description, and every
# documentation edit would otherwise rebuild this layer.
COPY pyproject.toml ./
COPY digits_cli ./digits_cli
RUN --mount=type=cache,target=/root/.cache/pip pip install .

FROM python:3.11.13-slim-bookworm AS runtime
ARG MODEL=models:/digits-classifier@champion
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CODECARBON_LOG_LEVEL=error \
    DIGITS_SERVE__PORT=8000 \
    DIGITS_SERVE__MODEL=${MODEL}
RUN useradd --create-home --uid 10001 --user-group digits
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# params.yaml gives the container the repository's settings; /app belongs to the service user
# because codecarbon writes emissions.csv into the working directory. The wildcard makes the baked
# model optional: without `digits export models/serving.pt` nothing but params.yaml is copied.
COPY --chown=digits:digits params.yaml models/serving.pt* ./
RUN chown digits:digits /app
USER digits
EXPOSE 8000
# slim images carry no curl; urlopen raises (exit 1) on a refused connection or a non-2xx answer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
CMD ["digits", "serve", "--host", "0.0.0.0"]
