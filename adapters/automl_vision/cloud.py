"""Every call to Google Cloud the adapter makes: configuration check, upload, train, export.

The only module that imports ``google.*``. :func:`resolve_config` runs first and stops the task
at once, with one line naming what to configure, when the project, the bucket or application
default credentials are missing. :func:`train_edge_model` then uploads an export folder, creates
a Vertex AI image dataset from its CSV, trains an AutoML edge model for the task's node hours
with the CSV's ML_USE split, exports it as TFLite and downloads ``model.tflite``, ``dict.txt``
and ``tflite_metadata.json``. Any failing call raises; nothing here returns a made-up result.
Cloud resources (dataset, training pipeline, model, bucket objects) are left in the project for
the user to inspect or delete; their names are returned for the leaderboard's notes.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger(__name__)

SCHEMA_SINGLE_LABEL = (
    "gs://google-cloud-aiplatform/schema/dataset/ioformat/"
    "image_classification_single_label_io_format_1.0.0.yaml"
)
SCHEMA_MULTI_LABEL = (
    "gs://google-cloud-aiplatform/schema/dataset/ioformat/"
    "image_classification_multi_label_io_format_1.0.0.yaml"
)
ML_USE_FILTER = "labels.aiplatform.googleapis.com/ml_use={}"
EXPORTED_FILES = ("model.tflite", "dict.txt", "tflite_metadata.json")
#: Vertex AI accepts 1,000 to 100,000 milli node hours for an edge image model.
MIN_MILLI_NODE_HOURS = 1000

_GS = re.compile(r"^gs://([a-z0-9][a-z0-9._-]{1,221}[a-z0-9])(?:/(.*))?$")


class CloudConfigError(RuntimeError):
    """Google Cloud is not configured for training; the message says what to set."""


@dataclass(frozen=True)
class CloudConfig:
    """Where to train: project, region, ``gs://bucket/path`` for uploads, AutoML model type."""

    project: str
    location: str
    bucket: str
    model_type: str


def split_gs(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ``("bucket", "a/b")``."""
    match = _GS.match(uri.rstrip("/"))
    if not match:
        raise CloudConfigError(f"bucket '{uri}' is not a Cloud Storage path; use gs://BUCKET/PATH")
    return match.group(1), match.group(2) or ""


def _credentials() -> tuple[Optional[str], Optional[str]]:
    """(problem, project from the credentials): ``problem`` is None when they load."""
    try:
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError
    except ImportError:
        return "pip install google-cloud-aiplatform google-cloud-storage", None
    try:
        _, project = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    except DefaultCredentialsError:
        return "credentials (gcloud auth application-default login)", None
    return None, project


def resolve_config(
    options: Mapping[str, Any], environ: Optional[Mapping[str, str]] = None
) -> CloudConfig:
    """The cloud configuration from the adapter's options and the environment, or one-line error.

    Project: option ``project``, else ``$GOOGLE_CLOUD_PROJECT``, else the credentials' project.
    Bucket: option ``bucket`` (``gs://BUCKET/PATH``), else ``$DECATHLON_AUTOML_BUCKET``.
    Credentials: Google's application default credentials.
    """
    environ = os.environ if environ is None else environ
    missing = []
    problem, credentials_project = _credentials()
    if problem:
        missing.append(problem)
    project = (
        str(options.get("project") or "")
        or environ.get("GOOGLE_CLOUD_PROJECT", "")
        or (credentials_project or "")
    )
    if not project:
        missing.append("GOOGLE_CLOUD_PROJECT or --option project=ID")
    bucket = str(options.get("bucket") or "") or environ.get("DECATHLON_AUTOML_BUCKET", "")
    if not bucket:
        missing.append("--option bucket=gs://BUCKET/PATH")
    if missing:
        raise CloudConfigError(
            "Google Cloud is not configured for AutoML Vision training: set "
            + ", ".join(missing)
            + "; or score exported models offline with --option model_dir=DIR"
        )
    split_gs(bucket)
    return CloudConfig(
        project=project,
        location=str(options.get("location") or "us-central1"),
        bucket=bucket.rstrip("/"),
        model_type=str(options.get("model_type") or "MOBILE_TF_VERSATILE_1"),
    )


def upload_folder(config: CloudConfig, folder: Path, prefix: str) -> str:
    """Upload every file under ``folder`` to ``<bucket>/<prefix>/``; return that gs:// URI."""
    from google.cloud import storage
    from google.cloud.storage import transfer_manager

    bucket_name, base = split_gs(config.bucket)
    blob_prefix = "/".join(p for p in (base, prefix) if p) + "/"
    names = sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file())
    client = storage.Client(project=config.project)
    results = transfer_manager.upload_many_from_filenames(
        client.bucket(bucket_name),
        names,
        source_directory=str(folder),
        blob_name_prefix=blob_prefix,
        max_workers=8,
        worker_type="thread",
    )
    failed = [(n, r) for n, r in zip(names, results) if isinstance(r, Exception)]
    if failed:
        name, error = failed[0]
        raise RuntimeError(
            f"upload to gs://{bucket_name}/{blob_prefix}: {len(failed)} files failed;"
            f" {name}: {error}"
        )
    log.info("uploaded %d files to gs://%s/%s", len(names), bucket_name, blob_prefix)
    return f"gs://{bucket_name}/{blob_prefix.rstrip('/')}"


def download_export(config: CloudConfig, artifact_uri: str, dest: Path) -> Path:
    """Download the TFLite export's files from ``artifact_uri`` into ``dest``."""
    from google.cloud import storage

    bucket_name, prefix = split_gs(artifact_uri)
    client = storage.Client(project=config.project)
    dest.mkdir(parents=True, exist_ok=True)
    found = []
    for blob in client.list_blobs(bucket_name, prefix=prefix):
        name = blob.name.rsplit("/", 1)[-1]
        if name in EXPORTED_FILES:
            blob.download_to_filename(str(dest / name))
            found.append(name)
    for required in EXPORTED_FILES[:2]:
        if required not in found:
            raise RuntimeError(f"the TFLite export at {artifact_uri} holds no {required}")
    return dest


def train_edge_model(
    config: CloudConfig,
    export_dir: Path,
    csv_name: str,
    *,
    prefix: str,
    display_name: str,
    multi_label: bool,
    node_hours: float,
    dest: Path,
) -> dict[str, Any]:
    """Upload ``export_dir`` to ``<bucket>/<prefix>``, train, export TFLite, download to ``dest``.

    The CSV in ``export_dir`` must already name its images under ``<bucket>/<prefix>``. The
    split is the CSV's ML_USE (filter splits on ``ml_use``); the budget is ``node_hours`` x
    1000 milli node hours. Returns the names of what was created, for the notes.
    """
    from google.cloud import aiplatform

    milli = int(round(1000 * float(node_hours)))
    if milli < MIN_MILLI_NODE_HOURS:
        raise ValueError(
            f"budget of {node_hours:g} node hours is below Vertex AI's minimum of 1 node hour for"
            " edge image models; raise node_hours in budgets.toml"
        )
    base_uri = upload_folder(config, export_dir, prefix)
    aiplatform.init(project=config.project, location=config.location)
    dataset = aiplatform.ImageDataset.create(
        display_name=display_name,
        gcs_source=[f"{base_uri}/{csv_name}"],
        import_schema_uri=SCHEMA_MULTI_LABEL if multi_label else SCHEMA_SINGLE_LABEL,
        sync=True,
    )
    job = aiplatform.AutoMLImageTrainingJob(
        display_name=display_name,
        prediction_type="classification",
        multi_label=multi_label,
        model_type=config.model_type,
    )
    model = job.run(
        dataset=dataset,
        model_display_name=display_name,
        budget_milli_node_hours=milli,
        training_filter_split=ML_USE_FILTER.format("training"),
        validation_filter_split=ML_USE_FILTER.format("validation"),
        test_filter_split=ML_USE_FILTER.format("test"),
        sync=True,
    )
    if model is None:
        raise RuntimeError(f"training pipeline {job.resource_name} ended without a model")
    output = model.export_model(
        export_format_id="tflite", artifact_destination=f"{base_uri}/model-export/", sync=True
    )
    artifact_uri = output.get("artifactOutputUri")
    if not artifact_uri:
        raise RuntimeError(f"export of {model.resource_name} returned no artifact URI: {output}")
    download_export(config, artifact_uri, dest)
    return {
        "project": config.project,
        "location": config.location,
        "dataset": dataset.resource_name,
        "training_pipeline": job.resource_name,
        "model": model.resource_name,
        "model_type": config.model_type,
        "milli_node_hours": milli,
        "export": artifact_uri,
    }
