# syntax=docker/dockerfile:1
# One image for every kvmesh service; the command picks the service:
#   docker run kvmesh:latest serve gateway     (entrypoint `kvmesh`; also: router, worker, auth, cache)
# CPU build (this file). The inference worker's CUDA build is Dockerfile.cuda.
#
# Stages: `build` makes a virtualenv in /opt/venv (torch from the CPU wheel index, then kvmesh
# and its dependencies as wheels) and, unless PULL_MODEL=0, fetches the default model; `runtime`
# is a fresh slim Python with that virtualenv and model copied in, no compiler, running as the
# unprivileged user `kvmesh`. Build: docker build -t kvmesh:latest .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_SPEC="torch>=2.4"
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PULL_MODEL=1
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 KVMESH_MODEL_DIR=/var/lib/kvmesh/models
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the CPU index, so the range in pyproject.toml never pulls the CUDA build.
RUN pip install --index-url "${TORCH_INDEX_URL}" "${TORCH_SPEC}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kvmesh ./kvmesh
COPY gateway ./gateway
COPY auth ./auth
COPY router ./router
COPY inference ./inference
COPY cache ./cache
COPY telemetry ./telemetry
RUN pip install . && rm -rf /src/build
# The default model (SmolLM2-135M-Instruct GGUF, 93 MB) goes into the image; compose mounts
# the named volume `models` over this folder, which Docker fills from the image on first use.
RUN mkdir -p "${KVMESH_MODEL_DIR}" && if [ "${PULL_MODEL}" = "1" ]; then kvmesh models pull; fi

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="kvmesh" \
      org.opencontainers.image.description="kvmesh LLM serving mesh (gateway, auth, router, cache, inference)"
RUN groupadd --system --gid 10001 kvmesh \
    && useradd --system --uid 10001 --gid kvmesh --home-dir /home/kvmesh --create-home kvmesh
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=kvmesh:kvmesh /var/lib/kvmesh /var/lib/kvmesh
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    KVMESH_MODEL_DIR=/var/lib/kvmesh/models \
    KVMESH_HOST=0.0.0.0
USER kvmesh
WORKDIR /home/kvmesh
EXPOSE 8000 9101 9102
# compose.yaml gives each service its own check: python -m kvmesh.cli.healthcheck <service>
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "kvmesh.cli.healthcheck", "gateway"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["kvmesh"]
CMD ["serve", "gateway"]
