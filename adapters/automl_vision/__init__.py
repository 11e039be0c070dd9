"""Google AutoML Vision (Vertex AI AutoML image classification, edge models), scored offline.

The paper's commercial baseline: AutoML Vision trained an edge model per dataset within a node
hour budget (1 / 2 / 3 node hours by dataset size), exported as TFLite and scored offline.

Two ways to run, chosen by the ``model_dir`` option:

- ``--option model_dir=DIR``: offline only, no cloud call at all. ``DIR/<flag>/`` holds the
  exported model of each dataset (``model.tflite``, ``dict.txt``, ``tflite_metadata.json`` when
  Vertex wrote one, ``labels.json`` optionally); when only one dataset runs, ``DIR`` may hold
  ``model.tflite`` directly. The model is run with LiteRT on the train, val and test images.
- without it: the cloud path. Needs a project (``project`` option or ``GOOGLE_CLOUD_PROJECT``),
  a bucket (``bucket`` option, ``gs://BUCKET/PATH``, or ``DECATHLON_AUTOML_BUCKET``) and
  application default credentials; without them the task stops at once with one line saying
  what to set. It exports train (ML_USE ``training``) and the validation split, halved into
  Vertex's ``validation`` and ``test`` sets (the adapter never has test labels), uploads, trains
  an edge model (``model_type``, default ``MOBILE_TF_VERSATILE_1``) for ``node_hours`` x 1000
  milli node hours, exports TFLite, downloads it to the task's ``output/model/<flag>/`` (usable
  later as ``model_dir``) and scores it offline as above.

Modules: :mod:`.export` (PNGs and the import CSV, also the ``export-automl-vision`` command),
:mod:`.cloud` (the only one that talks to Google Cloud), :mod:`.inference` (LiteRT).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from decathlon.contract import MULTI_LABEL, Adapter, Environment, Predictions, Task
from decathlon.hookspecs import hookimpl

log = logging.getLogger(__name__)

ADAPTER = Adapter(
    name="automl_vision",
    run="decathlon_adapters.automl_vision:run",
    description="Google AutoML Vision edge model (Vertex AI), TFLite scored offline with LiteRT",
    environment=Environment(
        python="3.11",
        requirements=(
            "ai-edge-litert==2.3.0",
            "pillow==13.0.0",
            "google-cloud-aiplatform==2.7.0",
            "google-cloud-storage==3.17.1",
        ),
    ),
    options={
        "model_dir": "",
        "project": "",
        "location": "us-central1",
        "bucket": "",
        "model_type": "MOBILE_TF_VERSATILE_1",
        "resize": "bilinear",
        "input_range": "",
        "score_train": True,  # when it fits before the hard limit
    },
    version="vertex-ai-automl-edge",
    sizes=(28, 64, 128, 224),  # images are resized to the edge model's input anyway
)


@hookimpl
def decathlon_register_adapters(register) -> None:
    register(ADAPTER)


@hookimpl
def decathlon_add_commands(commands) -> None:
    """``python -m decathlon export-automl-vision``: the core knows it only through this hook."""
    from decathlon_adapters.automl_vision import export

    export.add_cli(commands).set_defaults(handler=export.run_cli)


def _train_in_cloud(task: Task, notes: dict[str, Any]) -> Path:
    """Export, upload, train, export TFLite, download; the local model folder."""
    from . import cloud
    from .export import LABELS_FILE, export_dataset, split_validation

    config = cloud.resolve_config(task.options)  # one-line error at once when unconfigured
    info = task.dataset
    if task.budget.node_hours is None:
        raise ValueError(
            f"no node_hours budget for {info.flag}; set node_hours in budgets.toml's"
            " [PROFILE.automl_vision] table"
        )
    multi = info.task == MULTI_LABEL
    keep, give = split_validation(task.y_val, multi, task.seed)
    name = f"decathlon-{info.flag}-s{task.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    export_dir = Path(task.scratch_dir) / "export"
    splits = {
        "training": (task.x_train, task.y_train),
        "validation": (task.x_val[keep], task.y_val[keep]),
        "test": (task.x_val[give], task.y_val[give]),
    }
    bucket_name, base = cloud.split_gs(config.bucket)
    prefix_uri = f"gs://{bucket_name}/" + "/".join(p for p in (base, name) if p)
    csv_path = export_dataset(info, splits, export_dir, gcs_prefix=prefix_uri)
    dest = Path(task.output_dir) / "model" / info.flag
    created = cloud.train_edge_model(
        config,
        export_dir,
        csv_path.name,
        prefix=name,
        display_name=name,
        multi_label=multi,
        node_hours=float(task.budget.node_hours),
        dest=dest,
    )
    shutil.copyfile(export_dir / LABELS_FILE, dest / LABELS_FILE)
    (dest / "cloud.json").write_text(json.dumps(created, indent=2) + "\n")
    notes.update(cloud=created, vertex_split={k: len(v[0]) for k, v in splits.items()})
    return dest


def run(task: Task) -> Predictions:
    """Score an exported model offline (``model_dir``), or train one in the cloud first."""
    from .inference import TFLiteClassifier, find_model_folder

    opts = task.options
    notes: dict[str, Any] = {}
    if opts.get("model_dir"):
        folder = find_model_folder(Path(str(opts["model_dir"])), task.dataset.flag)
        notes["mode"] = "offline"
    else:
        folder = _train_in_cloud(task, notes)
        notes["mode"] = "cloud"
    classifier = TFLiteClassifier(
        folder,
        task.dataset,
        num_threads=task.n_jobs,
        resize=str(opts.get("resize") or "bilinear"),
        input_range=opts.get("input_range") or None,
    )
    started = time.monotonic()
    val = classifier.predict(task.x_val)
    test = classifier.predict(task.x_test)
    rate = (len(task.x_val) + len(task.x_test)) / max(time.monotonic() - started, 1e-6)
    notes["images_per_second"] = round(rate, 1)
    train = None
    if opts.get("score_train", True):
        # Train scores are optional: skip them when they would not end well before the kill.
        needed = 1.25 * len(task.x_train) / rate + 30.0
        if time.time() + needed < task.deadline:
            train = classifier.predict(task.x_train)
        else:
            notes["train_scores"] = f"skipped: need about {needed:.0f} s before the hard limit"
    notes.update(classifier.describe())
    return Predictions(val=val, test=test, train=train, info=notes)
