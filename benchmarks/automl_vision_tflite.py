"""AutoML Vision adapter, offline path: LiteRT scores against Keras, and scoring throughput.

Builds the test suite's three TFLite models (small CNNs trained on the real breastmnist and
retinamnist: float, and full-integer with uint8 input and output, ``dict.txt`` in shuffled order;
see ``tests/test_automl_vision.py``) plus an AutoML-edge-sized model (MobileNetV2, 224x224x3,
random weights, full-integer uint8, 9 classes like pathmnist). Then, in the adapter's own
environment, scores the real test images with the adapter's ``TFLiteClassifier`` and reports the
AUC against the Keras model's, the largest probability difference, and images per second
(including Pillow resizing of the 28x28 images to the model's input).

Run from the repository root with the harness's venv; it needs the AutoKeras environment (or
``DECATHLON_TF_PYTHON``) for TensorFlow and builds the adapter's environment if needed::

    .venv/bin/python benchmarks/automl_vision_tflite.py --out /tmp/bench-automl --threads 2

It writes ``automl_vision_tflite.json`` into ``--out`` and logs a table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from decathlon import environments, metrics
from decathlon.datasets import Catalog
from decathlon.plugins import make_registry

log = logging.getLogger("automl_vision_tflite")
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "medmnist"

MOBILENET_SCRIPT = r"""
import os, sys
import numpy as np
import keras
import tensorflow as tf
out = sys.argv[1]
keras.utils.set_random_seed(0)
model = keras.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None, classes=9)
def representative():
    rng = np.random.default_rng(0)
    for _ in range(20):
        yield [rng.uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)]
converter = tf.lite.TFLiteConverter.from_keras_model(model)
converter.optimizations = [tf.lite.Optimize.DEFAULT]
converter.representative_dataset = representative
converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
converter.inference_input_type = tf.uint8
converter.inference_output_type = tf.uint8
folder = os.path.join(out, "mobilenet_v2_224_uint8", "pathmnist")
os.makedirs(folder, exist_ok=True)
open(os.path.join(folder, "model.tflite"), "wb").write(converter.convert())
"""

SCORE_SCRIPT = r"""
import importlib.util, json, sys, time
from pathlib import Path
repo, job_path = Path(sys.argv[1]), Path(sys.argv[2])
sys.path.insert(0, str(repo))
spec = importlib.util.spec_from_file_location(
    "decathlon_adapters", str(repo / "adapters" / "__init__.py"),
    submodule_search_locations=[str(repo / "adapters")])
module = importlib.util.module_from_spec(spec)
sys.modules["decathlon_adapters"] = module
spec.loader.exec_module(module)
import numpy as np
from decathlon.datasets import Catalog
from decathlon_adapters.automl_vision.inference import TFLiteClassifier
job = json.loads(job_path.read_text())
results = {}
for run in job["runs"]:
    info = Catalog.load().info(run["flag"])
    images = np.load(run["npz"])[run["split"] + "_images"]
    if run.get("repeat"):
        images = np.concatenate([images] * run["repeat"])
    clf = TFLiteClassifier(Path(run["folder"]), info, num_threads=job["threads"],
                           resize=run["resize"])
    clf.predict(images[:8])  # warm-up
    start = time.perf_counter()
    scores = clf.predict(images)
    seconds = time.perf_counter() - start
    np.save(Path(job["out"]) / (run["key"] + ".npy"), scores)
    results[run["key"]] = {"seconds": seconds, "images": len(images), **clf.describe()}
print(json.dumps(results))
"""


def _tests_module() -> Any:
    path = REPO / "tests" / "test_automl_vision.py"
    spec = importlib.util.spec_from_file_location("test_automl_vision", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _python(name: str) -> Path:
    return environments.build(make_registry().get(name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    tests = _tests_module()
    tf_python = Path(os.environ.get("DECATHLON_TF_PYTHON") or _python("autokeras"))
    automl_python = _python("automl_vision")
    catalog = Catalog.load()

    spec: dict[str, Any] = {"out": str(args.out), "models": []}
    for name, (flag, size, channels, quantize, perm, epochs) in tests.MODELS.items():
        spec["models"].append(
            {
                "name": name,
                "flag": flag,
                "npz": str(SHARED / f"{flag}.npz"),
                "size": size,
                "channels": channels,
                "quantize": quantize,
                "perm": perm,
                "epochs": epochs,
                "labels": tests.vertex_label_names(catalog.info(flag)),
            }
        )
    tests._build(tf_python, spec)
    (args.out / "mobilenet.py").write_text(MOBILENET_SCRIPT)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    subprocess.run(
        [str(tf_python), str(args.out / "mobilenet.py"), str(args.out)], check=True, env=env
    )
    names = tests.vertex_label_names(catalog.info("pathmnist"))
    mobile = args.out / "mobilenet_v2_224_uint8" / "pathmnist"
    (mobile / "dict.txt").write_text("".join(n + "\n" for n in names))

    runs = [
        {
            "key": name,
            "flag": flag,
            "npz": str(SHARED / f"{flag}.npz"),
            "split": "test",
            "folder": str(args.out / name / flag),
            "resize": "nearest",
        }
        for name, (flag, *_rest) in tests.MODELS.items()
    ]
    # An AutoML-sized model on 28x28 images (breastmnist's, taken as pathmnist's RGB input).
    runs.append(
        {
            "key": "mobilenet_v2_224_uint8",
            "flag": "pathmnist",
            "npz": str(SHARED / "breastmnist.npz"),
            "split": "test",
            "folder": str(mobile),
            "resize": "bilinear",
            "repeat": 2,
        }
    )
    job = {"out": str(args.out), "threads": args.threads, "runs": runs}
    (args.out / "score.json").write_text(json.dumps(job))
    (args.out / "score.py").write_text(SCORE_SCRIPT)
    done = subprocess.run(
        [str(automl_python), str(args.out / "score.py"), str(REPO), str(args.out / "score.json")],
        capture_output=True,
        text=True,
        check=True,
    )
    timings = json.loads(done.stdout.strip().splitlines()[-1])

    results: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()},"
        f" {os.cpu_count()} cores",
        "threads": args.threads,
        "models": {},
    }
    log.info("%-24s %8s %8s %10s %10s", "model", "keras", "litert", "max|dp|", "images/s")
    for name, timing in timings.items():
        row: dict[str, Any] = {
            "input": timing["input"],
            "images_per_second": timing["images"] / timing["seconds"],
        }
        if name in tests.MODELS:
            flag = tests.MODELS[name][0]
            info = catalog.info(flag)
            y = np.load(SHARED / f"{flag}.npz")["test_labels"]
            reference = np.load(args.out / name / "reference_test.npy")
            scores = np.load(args.out / f"{name}.npy")
            row["keras_auc"] = metrics.auc(info.task, y, reference)
            row["litert_auc"] = metrics.auc(info.task, y, scores)
            row["max_abs_prob_diff"] = float(np.abs(scores - reference).max())
        results["models"][name] = row
        log.info(
            "%-24s %8s %8s %10s %10.0f",
            name,
            f"{row['keras_auc']:.4f}" if "keras_auc" in row else "-",
            f"{row['litert_auc']:.4f}" if "litert_auc" in row else "-",
            f"{row['max_abs_prob_diff']:.4f}" if "max_abs_prob_diff" in row else "-",
            row["images_per_second"],
        )
    (args.out / "automl_vision_tflite.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
