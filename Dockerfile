# syntax=docker/dockerfile:1
# The tritonscale operator image.
#
#   docker build -t tritonscale:0.1.0 .
#   docker run --rm tritonscale:0.1.0 --help
#
# Two stages: the builder makes a wheel of this project and installs it with its
# runtime dependencies (no dev extras) into a virtual environment at
# /opt/tritonscale; the final stage is the same slim base with only that venv
# copied in, running as an unprivileged user (uid/gid 10001) so the chart's
# runAsNonRoot / readOnlyRootFilesystem security context holds.
#
# tests/artifacts/test_dockerfile.py performs the builder's COPY and RUN steps in a
# clean virtual environment (no container engine is needed), runs the entrypoint,
# and lints this file with hadolint: keep the steps plain shell so it can.
#
# Base image pinned by tag; pin it by digest too in a release pipeline, e.g.
#   --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest>
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Only what the wheel needs (see also .dockerignore).
COPY pyproject.toml README.md ./
COPY operator/ ./operator/
# Wheel first (no deps), then install it with its runtime dependencies only; the
# dev extras (pytest, ruff, mypy, ...) are never requested. pip, setuptools and
# wheel are removed from the venv afterwards: the final image installs nothing.
RUN python -m venv /opt/tritonscale \
    && /opt/tritonscale/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && /opt/tritonscale/bin/pip install --no-cache-dir /wheels/tritonscale-*.whl \
    && /opt/tritonscale/bin/python -m pip uninstall --yes pip setuptools wheel \
    && find /opt/tritonscale -name '__pycache__' -type d -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="tritonscale" \
      org.opencontainers.image.description="Kubernetes operator that runs NVIDIA Triton fleets against latency and cost SLOs" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
ENV PATH=/opt/tritonscale/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 tritonscale \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin tritonscale
COPY --from=builder /opt/tritonscale /opt/tritonscale
USER 10001:10001
# 8080: Kopf liveness (/healthz); 9090: Prometheus metrics (/metrics).
EXPOSE 8080 9090
ENTRYPOINT ["tritonscale"]
CMD ["run", "--all-namespaces", "--liveness", "http://0.0.0.0:8080/healthz", "--metrics-port", "9090"]
