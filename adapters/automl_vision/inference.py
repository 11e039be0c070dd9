"""Offline inference with an exported AutoML Vision edge model (TFLite) through LiteRT.

A model folder holds ``model.tflite``, ``dict.txt`` (one label per line, in the order of the
model's output columns) and, when Vertex AI wrote one, ``tflite_metadata.json``; a
``labels.json`` written by :func:`~decathlon_adapters.automl_vision.export.export_dataset` may
sit beside them and then names the labels, else they are derived from the dataset's label names
exactly as the export derives them.

Input: each image (28x28, or MedMNIST+ 64 to 224) is resized to the model's input size with
Pillow (``resize`` option: ``bilinear``, the default, or ``nearest``), grey images are repeated
to three channels when the model wants three (colour ones are converted to luminance when it
wants one). Integer inputs (AutoML's ``QUANTIZED_UINT8`` models) get the raw pixel values, the
convention of uint8 image models, unless ``input_range`` ("lo,hi") names the real-valued range
the model was trained on; then the pixels are scaled to that range and quantized with the input
tensor's own (scale, zero point). Float inputs get the pixels scaled to ``input_range``, by
default [0, 1].

Output: integer outputs are dequantized with the output tensor's (scale, zero point). Rows that
are not probabilities (a value below 0 or above 1) are treated as logits: softmax for
single-label tasks, a sigmoid per label for multi-label. Columns are then picked in the dataset's
class order through ``dict.txt``; labels the dataset does not know (``no_finding``) are dropped.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from decathlon.contract import MULTI_LABEL, DatasetInfo

from .export import LABELS_FILE, vertex_label_names

log = logging.getLogger(__name__)

MODEL_FILE = "model.tflite"
DICT_FILE = "dict.txt"
METADATA_FILE = "tflite_metadata.json"
RESIZE_MODES = ("bilinear", "nearest")


class ModelFolderError(ValueError):
    """A model folder is missing a file or does not fit the dataset."""


@dataclass(frozen=True)
class ModelFolder:
    """The files of one exported model, and its ``tflite_metadata.json`` (``{}`` without one)."""

    path: Path
    model: Path
    labels: list[str]
    metadata: dict[str, Any]


def find_model_folder(model_dir: Path, flag: str) -> Path:
    """``model_dir/<flag>`` when it holds ``model.tflite``, else ``model_dir`` itself.

    A folder with one subfolder per dataset serves a run over several datasets; a folder holding
    ``model.tflite`` directly serves any dataset whose labels its ``dict.txt`` names.
    """
    model_dir = Path(model_dir).expanduser()
    for candidate in (model_dir / flag, model_dir):
        if (candidate / MODEL_FILE).is_file():
            return candidate
    raise ModelFolderError(
        f"model_dir {model_dir}: no {MODEL_FILE} in {model_dir / flag} or in {model_dir};"
        f" put the exported model of {flag} (model.tflite, dict.txt) in {model_dir / flag}"
    )


def read_model_folder(folder: Path) -> ModelFolder:
    """Read ``dict.txt`` and ``tflite_metadata.json`` of a model folder."""
    folder = Path(folder)
    model = folder / MODEL_FILE
    dict_path = folder / DICT_FILE
    if not model.is_file():
        raise ModelFolderError(f"{folder}: no {MODEL_FILE}")
    if not dict_path.is_file():
        raise ModelFolderError(
            f"{folder}: no {DICT_FILE}; the export's label list is needed to map the model's"
            " outputs onto the dataset's classes"
        )
    try:
        text = dict_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFolderError(f"{dict_path}: unreadable ({exc}); re-export the model") from None
    labels = [label for label in (line.strip() for line in text.splitlines()) if label]
    if not labels:
        raise ModelFolderError(f"{dict_path}: names no label; re-export the model")
    metadata: dict[str, Any] = {}
    if (folder / METADATA_FILE).is_file():
        loaded = _read_json(folder / METADATA_FILE)
        metadata = loaded if isinstance(loaded, dict) else {"value": loaded}
    return ModelFolder(path=folder, model=model, labels=labels, metadata=metadata)


def _read_json(path: Path) -> Any:
    """A JSON file of a model folder; one line naming it when it cannot be read."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or bad UTF-8
        raise ModelFolderError(f"{path}: not readable JSON ({exc}); re-export it") from None


def dataset_labels(info: DatasetInfo, folder: Optional[Path] = None) -> list[str]:
    """The Vertex label of each class id: from ``folder/labels.json`` if there, else derived."""
    if folder is not None and (Path(folder) / LABELS_FILE).is_file():
        mapping = _read_json(Path(folder) / LABELS_FILE)
        if not isinstance(mapping, dict):
            mapping = {}
        if mapping.get("dataset") not in (None, info.flag):
            raise ModelFolderError(
                f"{Path(folder) / LABELS_FILE} describes {mapping['dataset']}, not {info.flag}"
            )
        try:
            by_id = {int(e["class_id"]): str(e["vertex_label"]) for e in mapping["labels"]}
        except (KeyError, TypeError, ValueError):
            raise ModelFolderError(
                f"{Path(folder) / LABELS_FILE}: not the export's label list (a 'labels' list"
                " of class_id and vertex_label); delete it or export the dataset again"
            ) from None
        if sorted(by_id) != list(range(info.n_classes)):
            raise ModelFolderError(
                f"{Path(folder) / LABELS_FILE}: class ids {sorted(by_id)} do not match"
                f" {info.flag}'s {info.n_classes} classes"
            )
        return [by_id[i] for i in range(info.n_classes)]
    return vertex_label_names(info)


def column_order(model_labels: list[str], wanted: list[str], where: str) -> list[int]:
    """The model's output column for each wanted label, in the wanted (class-id) order."""
    position = {label: i for i, label in enumerate(model_labels)}
    missing = [label for label in wanted if label not in position]
    if missing:
        raise ModelFolderError(
            f"{where}: {DICT_FILE} lacks the labels {missing} (it has {model_labels});"
            " is this the model of another dataset?"
        )
    return [position[label] for label in wanted]


def parse_range(text: Any) -> Optional[tuple[float, float]]:
    """``"lo,hi"`` (or a two-item list) as floats; ``""``/``None`` as ``None``."""
    if text is None or text == "":
        return None
    parts = text if isinstance(text, (list, tuple)) else str(text).split(",")
    try:
        lo, hi = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(
            f"input_range must be 'lo,hi' such as '0,1' or '-1,1', got {text!r}"
        ) from None
    return lo, hi


def prepare_images(
    images: np.ndarray, height: int, width: int, channels: int, resize: str = "bilinear"
) -> np.ndarray:
    """uint8 (N, S, S[, 3]) -> uint8 (N, height, width, channels), resized with Pillow."""
    from PIL import Image

    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    method = Image.Resampling.BILINEAR if resize == "bilinear" else Image.Resampling.NEAREST
    images = np.asarray(images)
    n = len(images)
    out = np.empty((n, height, width, channels), dtype=np.uint8)
    for i in range(n):
        picture = Image.fromarray(np.ascontiguousarray(images[i]))
        if picture.size != (width, height):
            picture = picture.resize((width, height), method)
        if channels == 3 and picture.mode != "RGB":
            picture = picture.convert("RGB")
        elif channels == 1 and picture.mode != "L":
            picture = picture.convert("L")
        array = np.asarray(picture, dtype=np.uint8)
        out[i] = array.reshape(height, width, channels)
    return out


def _input_tensor(
    pixels: np.ndarray, detail: dict[str, Any], input_range: Optional[tuple[float, float]]
) -> np.ndarray:
    """Pixels (uint8) as the model's input dtype, following its input details."""
    dtype = np.dtype(detail["dtype"])
    if np.issubdtype(dtype, np.floating):
        lo, hi = input_range or (0.0, 1.0)
        return (lo + (hi - lo) * pixels.astype(np.float32) / 255.0).astype(dtype)
    info = np.iinfo(dtype)
    if input_range is None:  # raw pixels: the uint8 image convention (int8: shifted by 128)
        shift = -128 if info.min < 0 else 0
        return (pixels.astype(np.int32) + shift).astype(dtype)
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if not scale:
        raise ValueError(
            f"input_range given but the model's {dtype} input carries no quantization scale"
        )
    lo, hi = input_range
    real = lo + (hi - lo) * pixels.astype(np.float64) / 255.0
    q = np.round(real / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def _dequantize(raw: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if np.issubdtype(raw.dtype, np.floating):
        return raw.astype(np.float64)
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if not scale:  # an integer output without parameters: take the values as they are
        return raw.astype(np.float64)
    return (raw.astype(np.float64) - zero_point) * scale


def to_probabilities(scores: np.ndarray, multi_label: bool) -> tuple[np.ndarray, bool]:
    """Scores as probabilities in [0, 1]; the flag says whether they were taken as logits."""
    scores = np.asarray(scores, dtype=np.float64)
    logits = bool(np.any(scores < -1e-6) or np.any(scores > 1 + 1e-6))
    if logits:
        if multi_label:
            scores = 1.0 / (1.0 + np.exp(-scores))
        else:
            shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
            scores = shifted / shifted.sum(axis=1, keepdims=True)
    return np.clip(scores, 0.0, 1.0), logits


class TFLiteClassifier:
    """A LiteRT interpreter over one model folder, scoring MedMNIST images for one dataset."""

    def __init__(
        self,
        folder: Path,
        info: DatasetInfo,
        *,
        num_threads: int = 1,
        resize: str = "bilinear",
        input_range: Any = None,
        batch_size: int = 64,
    ) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.folder = read_model_folder(folder)
        self.info = info
        self.resize = resize
        self.input_range = parse_range(input_range)
        self.columns = column_order(
            self.folder.labels, dataset_labels(info, folder), str(self.folder.path)
        )
        try:
            self.interpreter = Interpreter(
                model_path=str(self.folder.model), num_threads=max(1, int(num_threads))
            )
            self.interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as exc:  # LiteRT's words for a file it cannot load
            reason = " ".join(str(exc).split())[:200]
            raise ModelFolderError(
                f"{self.folder.model}: LiteRT cannot load it as a TFLite model ({reason});"
                " export the model again (TFLite, from Vertex AI)"
            ) from None
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1:
            raise ModelFolderError(f"{self.folder.model}: {len(inputs)} inputs; expected one image")
        self.input = inputs[0]
        shape = [int(v) for v in self.input["shape"]]
        if len(shape) != 4 or shape[3] not in (1, 3):
            raise ModelFolderError(
                f"{self.folder.model}: input shape {shape}; expected (batch, height, width, 1|3)"
            )
        self.height, self.width, self.channels = shape[1], shape[2], shape[3]
        self.batch = self._try_batch(batch_size)
        self.output = self.interpreter.get_output_details()[0]
        n_out = int(np.prod(self.output["shape"][1:]))
        if n_out != len(self.folder.labels):
            raise ModelFolderError(
                f"{self.folder.model}: {n_out} output columns but {len(self.folder.labels)}"
                f" labels in {DICT_FILE}"
            )
        self.took_logits = False

    def _try_batch(self, batch_size: int) -> int:
        """Resize the input to ``batch_size`` images; stay at one where the model refuses."""
        if batch_size > 1:
            try:
                shape = [batch_size, self.height, self.width, self.channels]
                self.interpreter.resize_tensor_input(self.input["index"], shape)
                self.interpreter.allocate_tensors()
                self.input = self.interpreter.get_input_details()[0]
                return batch_size
            except (RuntimeError, ValueError) as exc:
                log.info("model keeps batch 1 (%s)", exc)
                shape = [1, self.height, self.width, self.channels]
                self.interpreter.resize_tensor_input(self.input["index"], shape)
                self.interpreter.allocate_tensors()
                self.input = self.interpreter.get_input_details()[0]
        return 1

    def describe(self) -> dict[str, Any]:
        """Facts for the leaderboard's notes."""
        return {
            "model": str(self.folder.model),
            "input": f"{self.height}x{self.width}x{self.channels} "
            f"{np.dtype(self.input['dtype']).name}",
            "output": np.dtype(self.output["dtype"]).name,
            "resize": self.resize,
            "input_range": list(self.input_range) if self.input_range else "raw/[0,1]",
            "outputs_were_logits": self.took_logits,
            "batch": self.batch,
            "tflite_metadata": self.folder.metadata,
        }

    def raw_scores(self, images: np.ndarray) -> np.ndarray:
        """The model's dequantized outputs, (N, len(dict.txt)), in dict.txt order."""
        n = len(images)
        out = np.empty((n, len(self.folder.labels)), dtype=np.float64)
        for start in range(0, n, 512):
            chunk = prepare_images(
                images[start : start + 512], self.height, self.width, self.channels, self.resize
            )
            tensor = _input_tensor(chunk, self.input, self.input_range)
            for offset in range(0, len(tensor), self.batch):
                part = tensor[offset : offset + self.batch]
                size = len(part)
                if size < self.batch:  # pad the last batch to the fixed input shape
                    pad = np.zeros((self.batch - size,) + part.shape[1:], dtype=part.dtype)
                    part = np.concatenate([part, pad])
                self.interpreter.set_tensor(self.input["index"], part)
                self.interpreter.invoke()
                raw = self.interpreter.get_tensor(self.output["index"])
                scores = _dequantize(raw.reshape(self.batch, -1), self.output)
                out[start + offset : start + offset + size] = scores[:size]
        return out

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities (N, n_classes) in the dataset's class order."""
        scores, logits = to_probabilities(
            self.raw_scores(images), multi_label=self.info.task == MULTI_LABEL
        )
        self.took_logits = self.took_logits or logits
        return scores[:, self.columns]
