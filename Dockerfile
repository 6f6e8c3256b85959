# syntax=docker/dockerfile:1
# keras-zoo images, one Dockerfile, targets by role (docs/operations.md, "Images"):
#   serve      the gRPC server only (`zoo serve`, ZOO_WORKERS=0): ONNX Runtime, no TensorFlow
#   train      + TensorFlow, Keras, tf2onnx: `zoo worker` (fine-tuning and export jobs),
#              `zoo export`, `zoo weights`
#   serve-gpu, train-gpu   the same with onnxruntime-gpu and TensorFlow's CUDA wheels: CUDA and
#              cuDNN come as NVIDIA's pip wheels on the same Debian base, no nvidia/cuda image
#   cpu, gpu   the earlier names: the train images with `zoo serve` as their command
# The classic builder runs every stage above the target, so the serve stages come first and the
# GPU stages last.
#
#   docker build --target serve -t keras-zoo:serve .
#   docker build --target train -t keras-zoo:train --build-arg WEIGHTS=seed13 .
#
# Build args: PYTHON_IMAGE (python:3.11-slim-bookworm; or an image with Debian's python3 and
# python3-venv, `make base-image`), WEIGHTS=none|seed13|all (ImageNet weights baked into
# KERAS_HOME, hash-checked), PIP_INDEX_URL / PIP_EXTRA_INDEX_URL (a mirror), VERSION and
# REVISION (labels). Extra CA certificates for a TLS-inspecting proxy: deploy/ca-certificates/.
# No index at all: `make wheelhouse` first; wheels in wheelhouse/cpu or wheelhouse/gpu are
# installed with --no-index.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS python

# ---- builder: the package sources; each build-* stage makes a venv in /opt/zoo -------------
# Every dependency ships as a manylinux wheel, so no compiler is needed.
FROM python AS builder
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore \
    PIP_INDEX_URL=${PIP_INDEX_URL} PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL}
WORKDIR /src
COPY deploy/ca-certificates/ /tmp/extra-ca/
COPY deploy/images/pip-install.sh deploy/fetch-weights.sh /usr/local/bin/
COPY pyproject.toml constraints.txt README.md ./
COPY zoo ./zoo
COPY server ./server
COPY client ./client
COPY protos ./protos

FROM builder AS build-serve
COPY wheelhouse/cpu/ /wheels/
RUN pip-install.sh serve /wheels

# ---- the runtime shared by every target: user, directories, settings -------------------------
FROM python AS runtime
RUN groupadd --system --gid 10001 zoo \
 && useradd --system --uid 10001 --gid zoo --home-dir /home/zoo --create-home zoo \
 && mkdir -p /data/models /data/zoo /opt/keras/models \
 && chown -R zoo:zoo /data /opt/keras
ENV PATH=/opt/zoo/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    KERAS_HOME=/opt/keras \
    ZOO_REPOSITORY=/data/models \
    ZOO_DATA_DIR=/data/zoo \
    ZOO_PORT=8001 \
    ZOO_METRICS_PORT=8002 \
    ZOO_HTTP_PORT=8000
# /data/models: the model repository; /data/zoo: datasets, job files (and SQLite without
# ZOO_DATABASE); /opt/keras: the weights cache (reproducible: zoo weights fetch/seed).
# Nothing else is written: `docker run --read-only --tmpfs /tmp` works.
VOLUME ["/data/models", "/data/zoo", "/opt/keras"]
WORKDIR /home/zoo
EXPOSE 8000 8001 8002
# Docker 20.10 has no --start-interval, so the first check runs one interval after the start.
HEALTHCHECK --interval=10s --timeout=6s --start-period=60s --retries=3 \
  CMD zoo health --server "127.0.0.1:${ZOO_PORT:-8001}" --timeout 5
ENTRYPOINT ["zoo"]

# ---- serve: the server, no TensorFlow ---------------------------------------------------------
FROM runtime AS serve
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="keras-zoo serve" \
      org.opencontainers.image.description="Keras application models as ONNX, served over gRPC (Triton/KServe v2). Server only, CPU." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="docs/operations.md" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
COPY --from=build-serve /opt/zoo /opt/zoo
ENV ZOO_WORKERS=0
USER zoo
CMD ["serve", "--host", "0.0.0.0"]

# ---- train: + TensorFlow, Keras, tf2onnx: workers, export, weights ----------------------------
FROM builder AS build-train
COPY wheelhouse/cpu/ /wheels/
RUN pip-install.sh server /wheels
ARG WEIGHTS=none
ENV KERAS_HOME=/opt/keras PATH=/opt/zoo/bin:$PATH
RUN fetch-weights.sh "$WEIGHTS"

FROM runtime AS train
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="keras-zoo train" \
      org.opencontainers.image.description="Keras application models as ONNX with fine-tuning jobs: zoo worker, zoo export, zoo weights. CPU." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="docs/operations.md" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
COPY --from=build-train /opt/zoo /opt/zoo
COPY --from=build-train --chown=zoo:zoo /opt/keras /opt/keras
USER zoo
CMD ["worker"]

# cpu: the earlier all-in-one name; serves, and runs jobs in-process unless ZOO_WORKERS=0.
FROM train AS cpu
CMD ["serve", "--host", "0.0.0.0"]

# ---- GPU: one CUDA major per image, from NVIDIA's wheels in site-packages --------------------
# serve-gpu: onnxruntime-gpu with CUDA 13 and cuDNN 9 (cu13); train-gpu: tensorflow[and-cuda] with
# CUDA 12 and cuDNN 9 (cu12), ONNX Runtime on the CPU there (export checks). docs/operations.md,
# "Images". The NVIDIA driver comes from the host (NVIDIA Container Toolkit).
FROM builder AS build-serve-gpu
COPY wheelhouse/gpu/ /wheels/
RUN pip-install.sh serve-gpu /wheels

FROM runtime AS serve-gpu
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="keras-zoo serve-gpu" \
      org.opencontainers.image.description="Keras application models as ONNX, served over gRPC (Triton/KServe v2). Server only, NVIDIA GPU." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="docs/operations.md" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
COPY --from=build-serve-gpu /opt/zoo /opt/zoo
# ONNX Runtime's CUDA provider finds libcudart.so.13, cuDNN and cuBLAS through ld.so's cache.
RUN cp /opt/zoo/nvidia-libs.conf /etc/ld.so.conf.d/zoo-nvidia.conf && ldconfig
ENV ZOO_WORKERS=0 ZOO_PROVIDERS=cuda,cpu
USER zoo
CMD ["serve", "--host", "0.0.0.0"]

FROM builder AS build-train-gpu
COPY wheelhouse/gpu/ /wheels/
RUN pip-install.sh gpu /wheels
ARG WEIGHTS=none
ENV KERAS_HOME=/opt/keras PATH=/opt/zoo/bin:$PATH
RUN fetch-weights.sh "$WEIGHTS"

FROM runtime AS train-gpu
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="keras-zoo train-gpu" \
      org.opencontainers.image.description="Keras application models as ONNX with fine-tuning jobs: zoo worker, zoo export, zoo weights. NVIDIA GPU." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="docs/operations.md" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
COPY --from=build-train-gpu /opt/zoo /opt/zoo
COPY --from=build-train-gpu --chown=zoo:zoo /opt/keras /opt/keras
# Training takes GPU memory as it needs it, so a server sharing the GPU keeps its share.
ENV ZOO_PROVIDERS=cuda,cpu TF_FORCE_GPU_ALLOW_GROWTH=true
USER zoo
CMD ["worker"]

FROM train-gpu AS gpu
CMD ["serve", "--host", "0.0.0.0"]
