"""Init container of the tabular example: write the one version this pod serves.

The model server serves every version it finds (and the highest by default), so each pod's
repository holds only its own version, taken from the pod's sidemesh.io/version annotation
(MODEL_VERSION, from the downward API). `sidemesh model-server --make-examples` would also
write the 553 MB benchmark model, which has no place in a pod; this writes the same tabular
model through the function it uses.
"""

import json
import os
import pathlib

import onnx

from model_server.examples import tabular_model

version = int(os.environ["MODEL_VERSION"])
root = pathlib.Path(os.environ.get("MODEL_REPOSITORY", "/models")) / "tabular"
(root / str(version)).mkdir(parents=True, exist_ok=True)
onnx.save(tabular_model(version), str(root / str(version) / "model.onnx"))
(root / "config.json").write_text(json.dumps({"max_batch_size": 64, "max_queue_delay_us": 1000}) + "\n")
print(f"wrote {root}/{version}/model.onnx")
