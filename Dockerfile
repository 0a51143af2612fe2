# syntax=docker/dockerfile:1
# The one sidemesh image: every component (control plane, drift detector, injector, sidecar,
# model server) is a subcommand of its `sidemesh` entrypoint, e.g.
#   docker run --rm ghcr.io/sidemesh/sidemesh:0.1.0 control-plane --help
# Build from the repository root:
#   docker build -t ghcr.io/sidemesh/sidemesh:0.1.0 .
#
# The model server's ONNX Runtime (onnxruntime-gpu) runs on the CPU unless CUDA libraries are
# present. --build-arg ORT_EXTRAS=cuda,cudnn adds NVIDIA's CUDA and cuDNN wheels (several GB)
# for GPU nodes; the tests of this repository do not exercise that variant.

ARG PYTHON_VERSION=3.11

# Build stage: install sidemesh and its dependencies into a virtual environment.
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ARG ORT_EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/sidemesh
WORKDIR /src
# The project metadata and the packages pyproject.toml names; nothing else is copied (see
# .dockerignore), so tests, benchmarks and local state never reach the image.
COPY pyproject.toml README.md ./
COPY sidemesh ./sidemesh
COPY model_server ./model_server
COPY control_plane ./control_plane
COPY sidecar ./sidecar
COPY drift ./drift
RUN /opt/sidemesh/bin/pip install . \
 && if [ -n "$ORT_EXTRAS" ]; then /opt/sidemesh/bin/pip install "onnxruntime-gpu[$ORT_EXTRAS]"; fi \
 && /opt/sidemesh/bin/sidemesh --help > /dev/null

# Runtime stage: the same Python, the virtual environment, no compilers or sources.
FROM python:${PYTHON_VERSION}-slim-bookworm
LABEL org.opencontainers.image.title="sidemesh" \
      org.opencontainers.image.description="A sidecar service mesh for ML model traffic" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/sidemesh /opt/sidemesh
# Read-only root filesystems (the manifests use them): no bytecode is written at run time and
# HOME is the writable /tmp (an emptyDir in the manifests).
ENV PATH=/opt/sidemesh/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# A numeric non-root user, so Kubernetes' runAsNonRoot can check it; the same id the
# manifests and the injected sidecars run as.
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["sidemesh"]
CMD ["--help"]
