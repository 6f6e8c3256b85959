"""Run by test_server.py in its own process: the real tritonclient against our server.

tritonclient's generated `inference` modules and ours cannot share one protobuf registry,
so this script imports only tritonclient (and onnxruntime for the reference numbers) and
prints what it observed as JSON.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import onnxruntime as ort
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

address, model_file, token = sys.argv[1], sys.argv[2], sys.argv[3]
client = tc.InferenceServerClient(address)
auth = {"authorization": f"Bearer {token}"}
seen: dict[str, object] = {
    "live": client.is_server_live(),
    "ready": client.is_server_ready(),
    "model_ready": client.is_model_ready("mobilenetv2"),
}
meta = client.get_model_metadata("mobilenetv2", as_json=True)
seen["metadata"] = {
    "name": meta["name"],
    "versions": meta["versions"],
    "platform": meta["platform"],
    "inputs": [[t["name"], t["datatype"], [int(d) for d in t["shape"]]] for t in meta["inputs"]],
    "outputs": [[t["name"], t["datatype"], [int(d) for d in t["shape"]]] for t in meta["outputs"]],
}
config = client.get_model_config("mobilenetv2", as_json=True)["config"]
seen["config"] = {
    "max_batch_size": config["max_batch_size"],
    "platform": config["platform"],
    "input_dims": [int(d) for d in config["input"][0]["dims"]],
}

rng = np.random.default_rng(0)
pixels = rng.integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
image = tc.InferInput("image", list(pixels.shape), "UINT8")
image.set_data_from_numpy(pixels)
result = client.infer(
    "mobilenetv2",
    [image],
    outputs=[tc.InferRequestedOutput("logits"), tc.InferRequestedOutput("probabilities")],
)
expected = ort.InferenceSession(model_file).run(["logits", "probabilities"], {"image": pixels})
seen["infer"] = {
    "logits_max_diff": float(np.max(np.abs(result.as_numpy("logits") - expected[0]))),
    "probabilities_max_diff": float(np.max(np.abs(result.as_numpy("probabilities") - expected[1]))),
    "logits_spread": float(np.std(expected[0], axis=0).mean()),
    "model_version": result.get_response().model_version,
}
stats = client.get_inference_statistics("mobilenetv2", as_json=True)["model_stats"][0]
seen["stats"] = {
    "inference_count": int(stats.get("inference_count", 0)),
    "success": int(stats["inference_stats"]["success"].get("count", 0)),
}
index = client.get_model_repository_index(as_json=True)["models"]
seen["index"] = sorted([m["name"], m.get("version", ""), m.get("state", "")] for m in index)

try:
    client.unload_model("mobilenetv2")
    seen["unload_without_token"] = "accepted"
except InferenceServerException as e:
    seen["unload_without_token"] = e.status()
client.unload_model("mobilenetv2", headers=auth)
seen["ready_after_unload"] = client.is_model_ready("mobilenetv2")
client.load_model("mobilenetv2", headers=auth)
seen["ready_after_load"] = client.is_model_ready("mobilenetv2")
print(json.dumps(seen))
