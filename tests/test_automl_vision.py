"""The AutoML Vision adapter: export format, cloud configuration check, offline TFLite inference.

The cloud itself is not reachable here: tests cover everything up to :mod:`cloud`'s calls.
The inference tests build real TFLite models from small Keras CNNs trained on the real
breastmnist and retinamnist (in the AutoKeras adapter's TensorFlow environment, or the Python
named by ``$DECATHLON_TF_PYTHON``), write ``dict.txt`` in a shuffled label order with the
model's outputs permuted to match, and check that the adapter reproduces the Keras model's AUC.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from decathlon_adapters.automl_vision import cloud
from decathlon_adapters.automl_vision.export import (
    EMPTY_LABEL,
    ExportError,
    add_cli,
    export_dataset,
    run_cli,
    split_validation,
    vertex_label_names,
)
from decathlon_adapters.automl_vision.inference import (
    ModelFolderError,
    dataset_labels,
    read_model_folder,
    to_probabilities,
)

from decathlon import environments, leaderboard, metrics
from decathlon.conformance import TASK_TYPE_DATASETS, assert_conforms
from decathlon.contract import MULTI_LABEL
from decathlon.datasets import Catalog
from decathlon.errors import DecathlonError, PluginError
from decathlon.plugins import make_registry
from decathlon.runner import RunConfig, Runner

REPO = Path(__file__).resolve().parents[1]
VALID_LABEL = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
CLOUD_VARIABLES = (
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "DECATHLON_AUTOML_BUCKET",
    "CLOUDSDK_CORE_PROJECT",
    "GCLOUD_PROJECT",
)


def _export_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command", required=True))
    return run_cli(parser.parse_args(argv))


def _read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def _no_cloud(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No Google Cloud configuration at all: variables cleared, empty gcloud config folder."""
    for name in CLOUD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    empty = tmp_path / "gcloud-config"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(empty))
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # not on Google Compute Engine: skip the probe


# ---------------------------------------------------------------------------- export


def test_vertex_label_names_are_valid_and_unique_for_every_dataset() -> None:
    catalog = Catalog.load()
    for flag in catalog.flags:
        info = catalog.info(flag)
        names = vertex_label_names(info)
        assert len(names) == info.n_classes
        assert len(set(names)) == len(names), flag
        assert all(VALID_LABEL.match(n) for n in names), (flag, names)
        assert EMPTY_LABEL not in names
    assert vertex_label_names(catalog.info("breastmnist")) == ["malignant", "normal_benign"]
    assert vertex_label_names(catalog.info("retinamnist"))[0] == "class_0"
    assert vertex_label_names(catalog.info("organamnist"))[1] == "femur_left"


def test_export_single_label_writes_pngs_and_the_vertex_csv(tiny_catalog, tmp_path) -> None:
    from PIL import Image

    out = tmp_path / "export"
    argv = ["export-automl-vision", "--dataset", "dermamnist", "--out", str(out)]
    argv += ["--data-dir", str(tiny_catalog.data_dir), "--info", str(tiny_catalog.info_path)]
    assert _export_cli(argv + ["--no-download"]) == 0
    rows = _read_csv(out / "dermamnist_import.csv")
    info = tiny_catalog.catalog.info("dermamnist")
    names = vertex_label_names(info)
    arrays = np.load(tiny_catalog.data_dir / "dermamnist.npz")
    assert [r[0] for r in rows] == ["training"] * 60 + ["validation"] * 30 + ["test"] * 30
    for split, ml_use in (("train", "training"), ("val", "validation"), ("test", "test")):
        part = [r for r in rows if r[0] == ml_use]
        for index, row in enumerate(part):
            assert len(row) == 3
            assert row[1] == f"images/{ml_use}/dermamnist_{ml_use}_{index:06d}.png"
            assert row[2] == names[int(arrays[f"{split}_labels"][index, 0])]
        # PNGs hold the exact pixels (RGB for dermamnist).
        for index in (0, len(part) - 1):
            picture = Image.open(out / part[index][1])
            assert picture.mode == "RGB"
            np.testing.assert_array_equal(np.asarray(picture), arrays[f"{split}_images"][index])
    mapping = json.loads((out / "labels.json").read_text())
    assert mapping["dataset"] == "dermamnist"
    assert [e["vertex_label"] for e in mapping["labels"]] == names
    assert mapping["labels"][0]["name"] == info.labels["0"]
    assert mapping["rows"] == {"training": 60, "validation": 30, "test": 30}


def test_export_multi_label_lists_every_positive_label(tiny_catalog, tmp_path) -> None:
    from PIL import Image

    info = tiny_catalog.catalog.info("chestmnist")
    arrays = np.load(tiny_catalog.data_dir / "chestmnist.npz")
    labels = arrays["train_labels"].copy()
    labels[0] = 0  # one image without any finding
    csv_path = export_dataset(info, {"training": (arrays["train_images"], labels)}, tmp_path)
    rows = _read_csv(csv_path)
    names = vertex_label_names(info)
    assert len(rows) == 60 and {r[0] for r in rows} == {"training"}
    assert rows[0][2:] == [EMPTY_LABEL]
    for row, label_row in zip(rows[1:], labels[1:]):
        expected = [names[j] for j in np.flatnonzero(label_row)] or [EMPTY_LABEL]
        assert row[2:] == expected
        assert all(VALID_LABEL.match(label) for label in row[2:])
    assert max(len(r) for r in rows) > 3  # several labels on one row
    assert Image.open(tmp_path / rows[0][1]).mode == "L"
    assert json.loads((tmp_path / "labels.json").read_text())["empty_label"] == EMPTY_LABEL


def test_gcs_prefix_rewrites_the_paths(tiny_catalog, tmp_path) -> None:
    out = tmp_path / "export"
    argv = ["export-automl-vision", "--dataset", "breastmnist", "--out", str(out)]
    argv += ["--data-dir", str(tiny_catalog.data_dir), "--info", str(tiny_catalog.info_path)]
    assert _export_cli(argv + ["--no-download", "--gcs-prefix", "gs://my-bucket/medmnist/"]) == 0
    rows = _read_csv(out / "breastmnist_import.csv")
    prefix = "gs://my-bucket/medmnist/"
    assert all(r[1].startswith(prefix + "images/") for r in rows)
    assert all((out / r[1][len(prefix) :]).is_file() for r in rows)
    with pytest.raises(ExportError, match="not a Cloud Storage path"):
        _export_cli(argv + ["--no-download", "--gcs-prefix", "s3://bucket/x"])


def test_export_of_an_unknown_dataset_is_a_one_line_error(tiny_catalog, tmp_path) -> None:
    argv = ["export-automl-vision", "--dataset", "breastmnit", "--out", str(tmp_path)]
    argv += ["--data-dir", str(tiny_catalog.data_dir), "--info", str(tiny_catalog.info_path)]
    with pytest.raises(DecathlonError, match="Did you mean 'breastmnist'"):
        _export_cli(argv + ["--no-download"])


def test_split_validation_halves_each_class_without_overlap() -> None:
    labels = np.array([0] * 21 + [1] * 57, dtype=np.uint8)[:, None]
    keep, give = split_validation(labels, multi_label=False, seed=0)
    assert len(np.intersect1d(keep, give)) == 0
    assert sorted(np.concatenate([keep, give]).tolist()) == list(range(78))
    assert (labels[give, 0] == 0).sum() == 10 and (labels[give, 0] == 1).sum() == 28
    again = split_validation(labels, multi_label=False, seed=0)
    np.testing.assert_array_equal(again[1], give)
    keep, give = split_validation(np.zeros((9, 14), dtype=np.uint8), multi_label=True, seed=1)
    assert len(keep) == 5 and len(give) == 4


# ---------------------------------------------------------------------------- cloud config


def test_missing_cloud_configuration_is_one_line_naming_what_to_set(monkeypatch, tmp_path) -> None:
    _no_cloud(monkeypatch, tmp_path)
    with pytest.raises(cloud.CloudConfigError) as caught:
        cloud.resolve_config({"project": "", "bucket": ""})
    message = str(caught.value)
    assert "\n" not in message
    for needed in ("GOOGLE_CLOUD_PROJECT", "bucket=gs://BUCKET/PATH", "model_dir=DIR"):
        assert needed in message
    with pytest.raises(cloud.CloudConfigError, match="not a Cloud Storage path"):
        cloud.split_gs("bucket-without-scheme/path")
    assert cloud.split_gs("gs://my-bucket/a/b/") == ("my-bucket", "a/b")


def test_logits_become_probabilities() -> None:
    probs, logits = to_probabilities(np.array([[0.2, 0.8], [1.0, 0.0]]), multi_label=False)
    assert not logits
    np.testing.assert_allclose(probs, [[0.2, 0.8], [1.0, 0.0]])
    probs, logits = to_probabilities(np.array([[-2.0, 3.0]]), multi_label=False)
    assert logits and np.isclose(probs.sum(), 1.0) and probs[0, 1] > 0.99
    probs, logits = to_probabilities(np.array([[-2.0, 3.0]]), multi_label=True)
    np.testing.assert_allclose(probs, 1 / (1 + np.exp([[2.0, -3.0]])))


# ---------------------------------------------------------------------------- real models

BUILD_SCRIPT = r"""
import json, os, sys
import numpy as np
import keras
import tensorflow as tf

spec = json.loads(open(sys.argv[1]).read())
out = spec["out"]
for m in spec["models"]:
    keras.utils.set_random_seed(0)
    data = np.load(m["npz"])
    size, channels, perm = m["size"], m["channels"], m["perm"]

    def prep(images):
        x = images.astype(np.float32) / 255.0
        if x.ndim == 3:
            x = x[..., None]
        if size != x.shape[1]:  # integer upsampling: exactly what nearest resizing gives
            f = size // x.shape[1]
            x = np.repeat(np.repeat(x, f, axis=1), f, axis=2)
        if channels == 3 and x.shape[3] == 1:
            x = np.repeat(x, 3, axis=3)
        return x

    x_train = prep(data["train_images"])
    multi = m.get("multi", False)
    y_train = data["train_labels"] if multi else data["train_labels"].ravel()
    n_classes = len(m["labels"])
    inputs = keras.Input((size, size, channels))
    h = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(16, 3, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    probs = keras.layers.Dense(n_classes, activation="sigmoid" if multi else "softmax")(h)
    model = keras.Model(inputs, probs)
    loss = "binary_crossentropy" if multi else "sparse_categorical_crossentropy"
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss)
    model.fit(x_train, y_train, epochs=m["epochs"], batch_size=32, verbose=0)
    # The exported model's columns follow dict.txt, which lists the labels in `perm` order;
    # index n_classes is Vertex's extra "no_finding" label of multi-label exports.
    labels = m["labels"] + ["no_finding"]
    columns = keras.ops.concatenate([probs, 1.0 - keras.ops.max(probs, axis=1, keepdims=True)], 1)
    exported = keras.Model(inputs, keras.ops.take(columns, perm, axis=1))
    folder = os.path.join(out, m["name"], m["flag"])
    os.makedirs(folder, exist_ok=True)
    for split in ("val", "test"):
        ref = model.predict(prep(data[split + "_images"]), verbose=0)
        np.save(os.path.join(out, m["name"], "reference_" + split + ".npy"), ref)
    converter = tf.lite.TFLiteConverter.from_keras_model(exported)
    if m["quantize"]:
        def representative():
            for i in range(0, 200):
                yield [x_train[i : i + 1]]
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    with open(os.path.join(folder, "model.tflite"), "wb") as f:
        f.write(converter.convert())
    with open(os.path.join(folder, "dict.txt"), "w") as f:
        f.write("".join(labels[j] + "\n" for j in perm))
    print(m["name"], "built", flush=True)
"""

#: name -> (flag, input size, channels, quantized, dict.txt order, epochs)
MODELS: dict[str, tuple[str, int, int, bool, list[int], int]] = {
    "breast_float": ("breastmnist", 28, 1, False, [1, 0], 20),
    "breast_uint8": ("breastmnist", 56, 3, True, [1, 0], 20),
    "retina_uint8": ("retinamnist", 28, 3, True, [3, 0, 4, 1, 2], 20),
}


def _in_ci() -> bool:
    return bool(os.environ.get("CI"))


def _adapter_python(name: str) -> Path:
    try:
        adapter = make_registry().get(name)
    except PluginError as exc:
        if _in_ci():
            pytest.fail(f"adapter '{name}' is needed here: {exc}")
        pytest.skip(f"adapter '{name}' is not installed: {exc}")
    return environments.build(adapter)


@pytest.fixture(scope="session")
def tf_python() -> Path:
    """A Python with TensorFlow 2.21: $DECATHLON_TF_PYTHON, else the AutoKeras environment."""
    explicit = os.environ.get("DECATHLON_TF_PYTHON")
    return Path(explicit) if explicit else _adapter_python("autokeras")


@pytest.fixture(scope="session")
def automl_python() -> Path:
    """The automl_vision adapter's environment (LiteRT, Pillow), built once."""
    return _adapter_python("automl_vision")


@pytest.fixture(scope="session")
def tflite_models(tf_python, real_data_dir, tmp_path_factory) -> Path:
    """Three real TFLite models (float, and two full-integer uint8) with shuffled dict.txt."""
    out = tmp_path_factory.mktemp("tflite")
    catalog = Catalog.load()
    spec: dict[str, Any] = {"out": str(out), "models": []}
    for name, (flag, size, channels, quantize, perm, epochs) in MODELS.items():
        spec["models"].append(
            {
                "name": name,
                "flag": flag,
                "npz": str(real_data_dir / f"{flag}.npz"),
                "size": size,
                "channels": channels,
                "quantize": quantize,
                "perm": perm,
                "epochs": epochs,
                "labels": vertex_label_names(catalog.info(flag)),
            }
        )
    _build(tf_python, spec)
    return out


def _build(tf_python: Path, spec: dict[str, Any]) -> None:
    """Run the model-building script in the TensorFlow environment."""
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(json.dumps(spec))
    (out / "build.py").write_text(BUILD_SCRIPT)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [str(tf_python), str(out / "build.py"), str(out / "spec.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def _reference(models: Path, name: str, split: str) -> np.ndarray:
    return np.load(models / name / f"reference_{split}.npy")


def _run_harness(
    tmp_path: Path, data_dir: Path, flag: str, options: dict[str, Any], run: str = "run"
) -> tuple[dict[str, Any], Path]:
    config = RunConfig(
        adapter="automl_vision",
        profile="quick",
        datasets=(flag,),
        data_dir=str(data_dir),
        download=False,
        options=options,
    )
    path = Runner(config, make_registry()).run(tmp_path / run)
    rows = [r for r in leaderboard.read(path) if r["dataset"] == flag and r["split"] == "test"]
    return rows[0], path.parent / "tasks" / flag / "seed0"


@pytest.fixture(scope="session")
def real_links(real_data_dir, tmp_path_factory) -> Path:
    """Symlinks to the real files, so the loader's sidecars land in a temporary folder."""
    folder = tmp_path_factory.mktemp("real")
    for flag in ("breastmnist", "retinamnist"):
        (folder / f"{flag}.npz").symlink_to(real_data_dir / f"{flag}.npz")
    return folder


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("name", list(MODELS))
def test_offline_scores_match_the_keras_model(
    name, tflite_models, real_links, automl_python, tmp_path
) -> None:
    flag = MODELS[name][0]
    options: dict[str, Any] = {"model_dir": str(tflite_models / name), "resize": "nearest"}
    row, task_dir = _run_harness(tmp_path, real_links, flag, options)
    assert row["status"] == "ok", row["reason"]
    info = Catalog.load().info(flag)
    y_test = np.load(real_links / f"{flag}.npz")["test_labels"]
    reference = _reference(tflite_models, name, "test")
    keras_auc = metrics.auc(info.task, y_test, reference)
    scores = np.load(task_dir / "predictions" / "test.npy")
    assert scores.shape == reference.shape
    if MODELS[name][3]:  # full-integer: quantization moves the scores a little
        assert abs(float(row["auc"]) - keras_auc) < 0.02, (row["auc"], keras_auc)
        assert np.mean(scores.argmax(1) == reference.argmax(1)) > 0.9
    else:
        np.testing.assert_allclose(scores, reference, atol=1e-4)
        assert abs(float(row["auc"]) - keras_auc) < 1e-3
    notes = json.loads(row["notes"]) if row.get("notes") else {}
    assert notes.get("mode") == "offline"


DIRECT_SCRIPT = r"""
import importlib.util, json, sys
from pathlib import Path
repo, spec_path = Path(sys.argv[1]), Path(sys.argv[2])
sys.path.insert(0, str(repo))  # the harness's `decathlon` package, from the checkout
spec = importlib.util.spec_from_file_location(
    "decathlon_adapters", str(repo / "adapters" / "__init__.py"),
    submodule_search_locations=[str(repo / "adapters")])
module = importlib.util.module_from_spec(spec)
sys.modules["decathlon_adapters"] = module
spec.loader.exec_module(module)
import numpy as np
from decathlon.datasets import Catalog
from decathlon_adapters.automl_vision.inference import (
    ModelFolderError, TFLiteClassifier, find_model_folder)
job = json.loads(spec_path.read_text())
info = Catalog.load().info(job["flag"])
images = np.load(job["npz"])["test_images"]
result = {}
for key, options in job["runs"].items():
    try:
        folder = find_model_folder(Path(job["model_dir"]), job["flag"])
        clf = TFLiteClassifier(folder, info, **options)
        np.save(Path(job["out"]) / (key + ".npy"), clf.predict(images))
        result[key] = clf.describe()
    except ModelFolderError as exc:
        result[key] = {"error": str(exc)}
print(json.dumps(result))
"""


@pytest.mark.slow
@pytest.mark.realdata
def test_inference_directly_and_label_mapping(
    tflite_models, real_links, automl_python, tmp_path
) -> None:
    info = Catalog.load().info("breastmnist")
    y_test = np.load(real_links / "breastmnist.npz")["test_labels"]

    def direct(model_dir: Path, flag: str, runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        job = {"flag": flag, "npz": str(real_links / f"{flag}.npz"), "model_dir": str(model_dir)}
        job.update(out=str(tmp_path), runs=runs)
        (tmp_path / "job.json").write_text(json.dumps(job))
        (tmp_path / "direct.py").write_text(DIRECT_SCRIPT)
        done = subprocess.run(
            [
                str(automl_python),
                str(tmp_path / "direct.py"),
                str(REPO),
                str(tmp_path / "job.json"),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    # The uint8 model (56x56x3 input) fed raw pixels, and fed [0, 1] quantized by its own
    # input parameters; bilinear resizing as well as nearest. Columns follow the class order
    # although dict.txt lists "normal_benign" first.
    folder = tflite_models / "breast_uint8" / "breastmnist"
    assert folder.joinpath("dict.txt").read_text().split() == ["normal_benign", "malignant"]
    described = direct(
        folder,
        "breastmnist",
        {
            "raw": {"resize": "nearest"},
            "range01": {"resize": "nearest", "input_range": "0,1"},
            "bilinear": {"resize": "bilinear"},
        },
    )
    reference = _reference(tflite_models, "breast_uint8", "test")
    keras_auc = metrics.auc(info.task, y_test, reference)
    assert described["raw"]["input"] == "56x56x3 uint8"
    for key in ("raw", "range01", "bilinear"):
        scores = np.load(tmp_path / f"{key}.npy")
        assert scores.shape == (156, 2) and scores.min() >= 0 and scores.max() <= 1
        tolerance = 0.02 if key != "bilinear" else 0.05
        assert abs(metrics.auc(info.task, y_test, scores) - keras_auc) < tolerance, key
        # Mapping: ignoring dict.txt would swap the columns and flip the AUC below 0.5.
        assert np.corrcoef(scores[:, 1], reference[:, 1])[0, 1] > 0.9, key

    # The retinamnist model is no model for breastmnist: its dict.txt lacks the labels.
    wrong = direct(tflite_models / "retina_uint8" / "retinamnist", "breastmnist", {"x": {}})
    assert "lacks the labels" in wrong["x"]["error"]
    assert "malignant" in wrong["x"]["error"]


@pytest.mark.slow
def test_run_without_cloud_configuration_is_an_error_row(
    tiny_catalog, automl_python, monkeypatch, tmp_path
) -> None:
    _no_cloud(monkeypatch, tmp_path)
    monkeypatch.setenv("DECATHLON_INFO", str(tiny_catalog.info_path))
    row, task_dir = _run_harness(tmp_path, tiny_catalog.data_dir, "breastmnist", {})
    assert row["status"] == "error"
    reason = row["reason"]
    assert reason.startswith("CloudConfigError: Google Cloud is not configured"), reason
    for needed in (
        "application-default login",
        "GOOGLE_CLOUD_PROJECT",
        "bucket=gs://",
        "model_dir",
    ):
        assert needed in reason
    assert "\n" not in reason and not reason.endswith("...")
    # It stopped before exporting anything, and no model was made up.
    assert not (task_dir / "output" / "model").exists()


def test_unreadable_files_of_a_model_folder_are_one_line_naming_the_file(tmp_path) -> None:
    folder = tmp_path / "breastmnist"
    folder.mkdir()
    (folder / "model.tflite").write_bytes(b"\0")
    (folder / "dict.txt").write_bytes(b"malignant\n\xff\xfe\n")  # not UTF-8
    with pytest.raises(ModelFolderError, match=r"dict\.txt: unreadable"):
        read_model_folder(folder)
    (folder / "dict.txt").write_text("malignant\nnormal_benign\n")
    (folder / "tflite_metadata.json").write_text('{"inputTensorMetadata": [')  # cut short
    with pytest.raises(ModelFolderError, match=r"tflite_metadata\.json: not readable JSON"):
        read_model_folder(folder)
    (folder / "tflite_metadata.json").unlink()
    info = Catalog.load().info("breastmnist")
    for text in ("not json", '{"dataset": "breastmnist"}', '{"labels": [{"id": 0}]}'):
        (folder / "labels.json").write_text(text)
        with pytest.raises(ModelFolderError, match=r"labels\.json: not"):
            dataset_labels(info, folder)


@pytest.mark.slow
def test_a_corrupt_model_file_is_an_error_row_naming_it(
    tiny_catalog, automl_python, monkeypatch, tmp_path
) -> None:
    monkeypatch.setenv("DECATHLON_INFO", str(tiny_catalog.info_path))
    models = tmp_path / "models" / "breastmnist"
    models.mkdir(parents=True)
    (models / "dict.txt").write_text("malignant\nnormal_benign\n")
    for run, content in (("truncated", b"TFL3" + b"\0" * 20), ("empty", b"")):
        (models / "model.tflite").write_bytes(content)
        options = {"model_dir": str(tmp_path / "models")}
        row, _ = _run_harness(tmp_path, tiny_catalog.data_dir, "breastmnist", options, run=run)
        assert row["status"] == "error"
        reason = row["reason"]
        assert reason.startswith("ModelFolderError: "), reason
        assert str(models / "model.tflite") in reason and "export the model again" in reason
        assert "\n" not in reason


@pytest.mark.slow
def test_conforms_on_every_task_type(tiny_catalog, tf_python, automl_python, tmp_path) -> None:
    # One small float model per task type, trained on generated data of the right shape; the
    # chestmnist one has Vertex's extra "no_finding" column, listed first in its dict.txt.
    catalog = Catalog.load()
    spec: dict[str, Any] = {"out": str(tmp_path / "models"), "models": []}
    for flag in TASK_TYPE_DATASETS:
        info = catalog.info(flag)
        multi = info.task == MULTI_LABEL
        order = np.random.default_rng(0).permutation(info.n_classes).tolist()
        spec["models"].append(
            {
                "name": "conformance",
                "flag": flag,
                "npz": str(tiny_catalog.data_dir / f"{flag}.npz"),
                "size": 28,
                "channels": info.n_channels,
                "quantize": False,
                "perm": ([info.n_classes] if multi else []) + order,
                "epochs": 2,
                "labels": vertex_label_names(info),
                "multi": multi,
            }
        )
    _build(tf_python, spec)
    model_dir = tmp_path / "models" / "conformance"
    assert (model_dir / "chestmnist" / "dict.txt").read_text().split()[0] == EMPTY_LABEL
    assert_conforms(
        "automl_vision", tmp_path / "conformance", options={"model_dir": str(model_dir)}
    )


def test_adapter_module_is_import_light() -> None:
    code = (
        "import sys\n"
        "import decathlon_adapters.automl_vision as m\n"
        "import decathlon_adapters.automl_vision.export\n"
        "heavy = ('ai_edge_litert', 'google', 'PIL', 'tensorflow')\n"
        "print(m.ADAPTER.name, [n for n in heavy if n in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "automl_vision []"
    assert MULTI_LABEL  # the contract's names are importable beside it
