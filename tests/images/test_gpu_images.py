"""The GPU images, as far as a machine without a GPU can check them (`ZOO_GPU_IMAGES=1`).

They are built from NVIDIA's CUDA wheels on the same Debian base as the CPU images. Here: ONNX
Runtime lists its CUDA provider among the available ones, TensorFlow imports, and the CUDA
libraries both need are in the image. Running a model on a GPU is
deploy/images/gpu-check.sh, on a host with one.
"""

from __future__ import annotations

import json
import os

import pytest
from containers import docker, inspect

pytestmark = [
    pytest.mark.images,
    pytest.mark.skipif(
        os.environ.get("ZOO_GPU_IMAGES") != "1",
        reason="GPU images not built (several GB of CUDA wheels); ZOO_GPU_IMAGES=1 builds them",
    ),
]
MB = 10**6

PROBE = """
import glob, importlib.util as u, json, onnxruntime as ort, sysconfig
site = sysconfig.get_paths()["purelib"]
libs = sorted({p.rsplit("/", 1)[1] for p in glob.glob(site + "/nvidia/**/lib*.so*", recursive=True)})
answer = {"providers": ort.get_available_providers(), "libs": libs}
if u.find_spec("tensorflow"):
    import tensorflow as tf
    answer["tensorflow"] = tf.__version__
    answer["tf_cuda"] = tf.test.is_built_with_cuda()
print(json.dumps(answer))
"""


@pytest.mark.parametrize(
    ("image", "cudart"),
    [("keras-zoo:serve-gpu", "libcudart.so.13"), ("keras-zoo:train-gpu", "libcudart.so.12")],
)
def test_gpu_image_has_cuda_providers_and_libraries(image: str, cudart: str) -> None:
    size = inspect("image", image)["Size"]
    config = inspect("image", image)["Config"]
    done = docker("run", "--rm", "--network", "host", "--entrypoint", "python", image, "-c", PROBE)
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\n{image}: {size / MB:.0f} MB; {answer}")
    assert "CUDAExecutionProvider" in answer["providers"]
    assert "ZOO_PROVIDERS=cuda,cpu" in config["Env"]
    # one CUDA major per image, with its cuDNN 9 and cuBLAS
    assert {cudart, "libcudnn.so.9"} <= set(answer["libs"])
    other = "libcudart.so.12" if cudart.endswith("13") else "libcudart.so.13"
    assert other not in answer["libs"]
    assert any(lib.startswith("libcublas.so.") for lib in answer["libs"])
    if image.endswith("train-gpu"):
        assert (answer["tensorflow"], answer["tf_cuda"]) == ("2.21.0", True)
    else:
        assert "tensorflow" not in answer
        # the server's ONNX Runtime finds CUDA 13 through the linker's cache
        done = docker("run", "--rm", "--network", "host", "--entrypoint", "ldconfig", image, "-p")
        assert cudart in done.stdout
