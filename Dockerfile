# syntax=docker/dockerfile:1
# keras-zoo images. Two targets:
#   docker build --target cpu -t keras-zoo:cpu .                       # python:3.11-slim, CPU
#   docker build --target gpu -t keras-zoo:gpu .                       # CUDA 13 + cuDNN 9 runtime
#   docker build --target gpu --build-arg WEIGHTS=seed13 -t keras-zoo:gpu .
# WEIGHTS=none|seed13|all bakes ImageNet weights (hash-checked) into KERAS_HOME.
#
# Why CUDA 13 and cuDNN 9 (from the wheels' Requires-Dist, see docs/operations.md):
#   onnxruntime-gpu 1.31.1 (the server's inference) wants nvidia-cuda-runtime ~=13.0 and
#   nvidia-cudnn-cu13 ~=9.0, so the base image is CUDA 13.0 with cuDNN 9 (host driver >= 580).
#   tensorflow[and-cuda] 2.21.0 (fine-tuning and export, in job child processes) wants CUDA 12
#   (nvidia-*-cu12 >=12.5,<13) and cuDNN 9.3+ (nvidia-cudnn-cu12 <10); those come as pip wheels
#   with the gpu extra and TensorFlow loads them from site-packages, not from the base image.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

FROM ${PYTHON_IMAGE} AS python

# ---- builder: compilers, wheels, a virtual environment in /opt/zoo --------------------------
FROM python AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY zoo ./zoo
COPY server ./server
COPY client ./client
COPY protos ./protos
COPY deploy/fetch-weights.sh /usr/local/bin/fetch-weights

FROM builder AS build-cpu
RUN pip wheel --wheel-dir /wheels -c constraints.txt ".[server]" \
 && python -m venv /opt/zoo \
 && /opt/zoo/bin/pip install --no-index --find-links /wheels -c constraints.txt "keras-zoo[server]"
ARG WEIGHTS=none
ENV KERAS_HOME=/opt/keras PATH=/opt/zoo/bin:$PATH
RUN fetch-weights "$WEIGHTS"

FROM builder AS build-gpu
RUN pip wheel --wheel-dir /wheels -c constraints.txt ".[gpu]" \
 && python -m venv /opt/zoo \
 && /opt/zoo/bin/pip install --no-index --find-links /wheels -c constraints.txt "keras-zoo[gpu]"
ARG WEIGHTS=none
ENV KERAS_HOME=/opt/keras PATH=/opt/zoo/bin:$PATH
RUN fetch-weights "$WEIGHTS"

# ---- cpu: python:3.11-slim, no compilers -----------------------------------------------------
FROM python AS cpu
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="keras-zoo" \
      org.opencontainers.image.description="Keras application models as ONNX, served over gRPC (Triton/KServe v2), with fine-tuning jobs. CPU image." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="docs/operations.md" \
      org.opencontainers.image.base.name="python:3.11-slim-bookworm"
RUN groupadd --system --gid 10001 zoo \
 && useradd --system --uid 10001 --gid zoo --home-dir /home/zoo --create-home zoo \
 && mkdir -p /data/models /data/zoo \
 && chown -R zoo:zoo /data
COPY --from=build-cpu /opt/zoo /opt/zoo
COPY --from=build-cpu --chown=zoo:zoo /opt/keras /opt/keras
ENV PATH=/opt/zoo/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    KERAS_HOME=/opt/keras \
    ZOO_REPOSITORY=/data/models \
    ZOO_DATA_DIR=/data/zoo \
    ZOO_PORT=8001 \
    ZOO_METRICS_PORT=8002
# /data/models: the model repository; /data/zoo: datasets, job files (and SQLite without
# ZOO_DATABASE); /opt/keras: the weights cache (reproducible: zoo weights fetch/seed).
VOLUME ["/data/models", "/data/zoo", "/opt/keras"]
USER zoo
WORKDIR /home/zoo
EXPOSE 8001 8002
HEALTHCHECK --interval=15s --timeout=6s --start-period=60s --retries=3 \
  CMD zoo health --server "127.0.0.1:${ZOO_PORT:-8001}" --timeout 5
ENTRYPOINT ["zoo"]
CMD ["serve", "--host", "0.0.0.0"]

# ---- gpu: CUDA 13.0 + cuDNN 9 runtime, the same Python as the builder ------------------------
FROM ${CUDA_IMAGE} AS gpu
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="keras-zoo" \
      org.opencontainers.image.description="Keras application models as ONNX, served over gRPC (Triton/KServe v2), with fine-tuning jobs. NVIDIA GPU image." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="docs/operations.md" \
      org.opencontainers.image.base.name="nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04"
# The venv in /opt/zoo was built by the python:3.11 image's interpreter in /usr/local, so the
# same interpreter comes along; these are the shared libraries its modules link against.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3t64 libffi8 \
      libsqlite3-0 libbz2-1.0 liblzma5 zlib1g libuuid1 libexpat1 libreadline8t64 \
      libncursesw6 libgdbm6t64 libgdbm-compat4t64 libnsl2 libtirpc3t64 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=python /usr/local/bin/ /usr/local/bin/
COPY --from=python /usr/local/lib/ /usr/local/lib/
COPY --from=python /usr/local/include/python3.11/ /usr/local/include/python3.11/
RUN ldconfig \
 && python3.11 -c "import ssl, sqlite3, ctypes, bz2, lzma, zlib, uuid, pyexpat" \
 && groupadd --system --gid 10001 zoo \
 && useradd --system --uid 10001 --gid zoo --home-dir /home/zoo --create-home zoo \
 && mkdir -p /data/models /data/zoo \
 && chown -R zoo:zoo /data
COPY --from=build-gpu /opt/zoo /opt/zoo
COPY --from=build-gpu --chown=zoo:zoo /opt/keras /opt/keras
# TensorRT is not in this image: ONNX Runtime uses CUDA, then the CPU. Training takes GPU
# memory as it needs it, so a server sharing the GPU keeps its share.
ENV PATH=/opt/zoo/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    KERAS_HOME=/opt/keras \
    ZOO_REPOSITORY=/data/models \
    ZOO_DATA_DIR=/data/zoo \
    ZOO_PORT=8001 \
    ZOO_METRICS_PORT=8002 \
    ZOO_PROVIDERS=cuda,cpu \
    TF_FORCE_GPU_ALLOW_GROWTH=true
VOLUME ["/data/models", "/data/zoo", "/opt/keras"]
USER zoo
WORKDIR /home/zoo
EXPOSE 8001 8002
HEALTHCHECK --interval=15s --timeout=6s --start-period=60s --retries=3 \
  CMD zoo health --server "127.0.0.1:${ZOO_PORT:-8001}" --timeout 5
ENTRYPOINT ["zoo"]
CMD ["serve", "--host", "0.0.0.0"]
