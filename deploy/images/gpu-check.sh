#!/bin/sh
# On a host with an NVIDIA GPU, its driver (>= 580 for CUDA 13) and the NVIDIA Container
# Toolkit, after `make images-gpu` (or the images loaded from elsewhere): gpu-check.sh
# Checks what no CPU machine can: ONNX Runtime runs a model on CUDAExecutionProvider in
# serve-gpu, and TensorFlow sees the GPU and trains a step on it in train-gpu. Exit 0 when both do.
set -eu
docker=${DOCKER:-docker}
# serve-gpu has no onnx package: export a tiny model with train-gpu, then serve it with serve-gpu.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 777 "$work"
"$docker" run --rm --gpus all --network host -v "$work:/data/models" keras-zoo:train-gpu \
  export MobileNetV2 -r /data/models --weights none --input-size 96
"$docker" run --rm --gpus all --network host -v "$work:/data/models:ro" --entrypoint python \
  keras-zoo:serve-gpu -c '
import glob, numpy as np, onnxruntime as ort
ort.preload_dlls()
path = glob.glob("/data/models/*/1/model.onnx")[0]
session = ort.InferenceSession(path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
print("serve-gpu providers in use:", session.get_providers())
assert session.get_providers()[0] == "CUDAExecutionProvider"
shape = [1 if not isinstance(d, int) else d for d in session.get_inputs()[0].shape]
out = session.run(None, {session.get_inputs()[0].name: np.zeros(shape, np.uint8)})
print("serve-gpu: ran", path, "->", [o.shape for o in out])
'
"$docker" run --rm --gpus all --network host --entrypoint python keras-zoo:train-gpu -c '
import tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
print("train-gpu: TensorFlow", tf.__version__, "sees", gpus)
assert gpus
with tf.device("/GPU:0"):
    x = tf.random.normal((256, 256))
    print("train-gpu: matmul on", (x @ x).device)
'
echo "gpu-check: both GPU images use the GPU"
