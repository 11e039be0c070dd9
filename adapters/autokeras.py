"""AutoKeras 3.0: neural architecture search with ``ak.ImageClassifier``, as in the MedMNIST papers.

The paper's protocol (Yang et al., ISBI 2021): ``max_trials`` 20, 20 epochs per trial, the
official val split as validation data, the best model chosen by validation AUC. Here trials and
epochs come from ``budgets.toml`` (``trials``, ``epochs``); the tuner is AutoKeras' default
task-specific one (a small CNN first, then ResNet50, EfficientNet, then greedy search); the
tuner's objective is ``val_auc`` (Keras ``AUC`` averaged over classes or labels, as the MedMNIST
evaluator averages) and keras-tuner keeps, per trial, the epoch with the best ``val_auc``.

Deadline: the search stops before the harness's hard limit, keeping back time to export and
predict (measured from the validation passes seen so far, plus ``reserve_seconds``). A Keras
callback ends the running trial at the next batch (the epoch still validates, so its checkpoint
counts), and no new trial starts when the next would not finish one epoch. The best model so far
is then exported (``export_model()``), saved as ``best_model.keras`` in the task's output
folder, and scores the splits. The leaderboard's notes say ``trials_run`` and ``stopped_early``.

Environment: Python 3.11, ``autokeras==3.0.0``, ``keras==3.12.0`` (keras 3.15 breaks AutoKeras'
head), TensorFlow 2.21 and tensorboard (keras-tuner imports it). TensorFlow is ``tensorflow-cpu``
unless ``$DECATHLON_TF_PACKAGE`` names another distribution when the adapter is registered, for
example ``DECATHLON_TF_PACKAGE='tensorflow[and-cuda]'`` for the GPU build with CUDA libraries
from pip. The package name is part of the environment's hash, so each choice gets its own
environment. With ``device`` cuda, TensorFlow trains on the GPUs it sees (memory growth on).
AutoKeras 3 also runs on Keras' other backends: ``KERAS_BACKEND=torch`` (or ``jax``) in the
harness's environment reaches the worker, and Keras then trains with that framework, which the
adapter's environment must hold (``benchmarks/autokeras_gpu.py`` uses this where TensorFlow
cannot be installed).

Differences from the paper's run: AutoKeras 3.0 on Keras 3 rather than AutoKeras 1.0 on
TensorFlow 2.3; images scaled to [0, 1]; early stopping within a trial watches ``val_auc``
(patience ``patience``) instead of AutoKeras' inserted ``val_loss`` rule, which also means the
best trial is not refit after the search (AutoKeras refits only when it inserted early stopping).
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import numpy as np

from decathlon.contract import BINARY, MULTI_LABEL, Adapter, Environment, Predictions, Task
from decathlon.hookspecs import hookimpl
from decathlon.options import Range, check_table

log = logging.getLogger(__name__)

#: The TensorFlow release of the verified recipe (ENVIRONMENTS.md).
TF_VERSION = "2.21.0"
#: Names the TensorFlow distribution of the environment; default ``tensorflow-cpu``.
TF_PACKAGE_VARIABLE = "DECATHLON_TF_PACKAGE"
BEST_MODEL_FILE = "best_model.keras"
#: Share of the hard limit that ``reserve_seconds`` may take at most (short test limits).
MAX_RESERVE_SHARE = 0.25
#: Inference time per image is multiplied by this when sizing the reserve.
PREDICT_SAFETY = 2.0


def tensorflow_requirement() -> str:
    """The TensorFlow requirement string: ``$DECATHLON_TF_PACKAGE==2.21.0``.

    ``DECATHLON_TF_PACKAGE`` is read each time the adapter record is made (when the plugin
    manager registers adapters); unset or empty means ``tensorflow-cpu``. Use ``tensorflow`` or
    ``tensorflow[and-cuda]`` on a machine with an NVIDIA GPU.
    """
    package = os.environ.get(TF_PACKAGE_VARIABLE, "").strip() or "tensorflow-cpu"
    return f"{package}=={TF_VERSION}"


#: The options' ranges: a negative ``reserve_seconds`` would stop the search only after the hard
#: limit's kill; a ``batch_size`` of 0 fails inside every task.
RANGES = (
    Range("reserve_seconds", 0),
    Range("batch_size", 1, whole=True),
    Range("patience", 0, whole=True),
)


def check_options(options: dict[str, Any]) -> None:
    """Refuse, in the harness before any task starts, an option outside :data:`RANGES`."""
    check_table(options, RANGES)


def make_adapter() -> Adapter:
    """The ``autokeras`` adapter record, its environment chosen by ``$DECATHLON_TF_PACKAGE``."""
    return Adapter(
        name="autokeras",
        run="decathlon_adapters.autokeras:run",
        description=(
            "AutoKeras 3.0 ImageClassifier: architecture search, best model by val AUC"
            f" ({tensorflow_requirement()})"
        ),
        environment=Environment(
            python="3.11",
            requirements=(
                "autokeras==3.0.0",
                "keras==3.12.0",
                tensorflow_requirement(),
                "tensorboard",
                "scikit-learn",
            ),
        ),
        options={"batch_size": 32, "patience": 10, "reserve_seconds": 60.0, "verbose": 2},
        check_options=check_options,
        uses_gpu=True,
        version="autokeras-3.0.0",
    )


@hookimpl
def decathlon_register_adapters(register) -> None:
    register(make_adapter())


# ---------------------------------------------------------------------------- pure helpers


def images(x: np.ndarray) -> np.ndarray:
    """uint8 images to float32 in [0, 1] with a channel axis: (N, 28, 28, C)."""
    out = np.asarray(x, dtype=np.float32) / 255.0
    return out[..., None] if out.ndim == 3 else out


def targets(y: np.ndarray, task_type: str, n_classes: int) -> np.ndarray:
    """Labels as AutoKeras' head takes them already encoded, so column order is ours.

    Binary: (N, 1) zeros and ones (one sigmoid unit, P(class 1)). Multi-label: the (N, 14)
    zeros and ones as given (one sigmoid per label). Multi-class and ordinal: one-hot (N, C)
    in class-id order (softmax).
    """
    y = np.asarray(y)
    if task_type == MULTI_LABEL:
        return y.astype(np.float32)
    ids = y.reshape(-1).astype(np.int64)
    if task_type == BINARY:
        return ids.astype(np.float32)[:, None]
    return np.eye(n_classes, dtype=np.float32)[ids]


def to_scores(raw: np.ndarray, task_type: str, n_outputs: int) -> np.ndarray:
    """The exported model's outputs as the evaluator's columns, clipped to [0, 1].

    A binary model has one sigmoid column p; the evaluator wants [1 - p, p].
    """
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim == 1:
        raw = raw[:, None]
    if task_type == BINARY and raw.shape[1] == 1:
        raw = np.concatenate([1.0 - raw, raw], axis=1)
    if raw.shape[1] != n_outputs:
        raise ValueError(f"the exported model gives {raw.shape[1]} columns, expected {n_outputs}")
    return np.clip(np.nan_to_num(raw, nan=0.5), 0.0, 1.0)


class Clock:
    """When the search must stop so that exporting and predicting still fit before the deadline.

    ``deadline`` is the harness's kill time; ``base_reserve`` seconds are always kept back, plus
    the time predicting ``n_predict`` images takes (times :data:`PREDICT_SAFETY`) at the slowest
    inference rate of any trial, each trial's rate from its latest validation pass (the first
    pass of a trial also traces the graph, so it overstates the rate on small sets).
    """

    def __init__(self, deadline: float, base_reserve: float, n_predict: int) -> None:
        self.deadline = deadline
        self.base_reserve = base_reserve
        self.n_predict = n_predict
        self.trial_rates: list[float] = []
        self.current_rate = 0.0
        self.first_epoch_seconds: list[float] = []
        self.trial_started = time.time()
        self.first_epoch_seen = False
        self.trial_cut = False
        self.trials_skipped = False

    @property
    def seconds_per_image(self) -> float:
        return max([*self.trial_rates, self.current_rate])

    @property
    def reserve(self) -> float:
        return self.base_reserve + PREDICT_SAFETY * self.seconds_per_image * self.n_predict

    @property
    def stop_at(self) -> float:
        return self.deadline - self.reserve

    def left(self) -> float:
        """Seconds until the search must stop (negative when past)."""
        return self.stop_at - time.time()

    def saw_inference(self, seconds: float, n_images: int) -> None:
        if n_images > 0 and seconds > 0:
            self.current_rate = seconds / n_images

    def start_trial(self) -> None:
        if self.current_rate:
            self.trial_rates.append(self.current_rate)
        self.current_rate = 0.0
        self.trial_started = time.time()
        self.first_epoch_seen = False

    def end_epoch(self) -> None:
        if not self.first_epoch_seen:
            self.first_epoch_seen = True
            self.first_epoch_seconds.append(time.time() - self.trial_started)

    def room_for_a_trial(self) -> bool:
        """Whether a new trial would reach the end of its first epoch before the stop."""
        if self.trial_cut or self.left() <= 0:
            return False
        if not self.first_epoch_seconds:
            return True
        return self.left() > min(self.first_epoch_seconds)

    @property
    def stopped_early(self) -> bool:
        return self.trial_cut or self.trials_skipped


# ---------------------------------------------------------------------------- the run


def run(task: Task) -> Predictions:
    """Search with AutoKeras, export the best model by val AUC, score every split."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = time.time()
    opts = task.options
    info = task.dataset
    hard_limit = task.budget.hard_limit_seconds
    base_reserve = min(float(opts["reserve_seconds"]), MAX_RESERVE_SHARE * hard_limit)
    clock = Clock(task.deadline, base_reserve, len(task.x_val) + len(task.x_test))

    import autokeras as ak
    import keras
    import keras_tuner

    gpus = _configure_backend(keras.backend.backend(), task)
    keras.utils.set_random_seed(task.seed)

    x_train, x_val, x_test = (images(x) for x in (task.x_train, task.x_val, task.x_test))
    y_train = targets(task.y_train, info.task, info.n_classes)
    y_val = targets(task.y_val, info.task, info.n_classes)
    trials = int(task.budget.trials or 1)
    epochs = int(task.budget.epochs or 1)
    multi_label = info.task == MULTI_LABEL

    clf = ak.ImageClassifier(
        num_classes=info.n_classes,
        multi_label=multi_label,
        # Averaged over columns, as the MedMNIST evaluator averages its AUCs.
        metrics=[keras.metrics.AUC(name="auc", multi_label=True), "accuracy"],
        objective=keras_tuner.Objective("val_auc", direction="max"),
        max_trials=trials,
        directory=str(task.scratch_dir / "autokeras"),
        project_name=info.flag,
        seed=task.seed,
        overwrite=True,
    )
    _stop_between_trials(clf.tuner, clock)
    callbacks = [
        # Any EarlyStopping of ours keeps AutoKeras from inserting its own (on val_loss) and
        # then refitting the best trial: the model kept is the best epoch by val AUC.
        keras.callbacks.EarlyStopping(
            monitor="val_auc", mode="max", patience=int(opts["patience"]), min_delta=1e-4
        ),
        _deadline_callback(keras, clock, len(x_val)),
    ]
    log.info(
        "AutoKeras on %s: %d trials x %d epochs, search stops %.0f s before the hard limit",
        info.flag,
        trials,
        epochs,
        clock.reserve,
    )
    try:
        clf.fit(
            x_train,
            y_train,
            validation_data=(x_val, y_val),
            epochs=epochs,
            batch_size=int(opts["batch_size"]),
            callbacks=callbacks,
            verbose=int(opts["verbose"]),
        )
    except IndexError as exc:  # AutoKeras asks for the best of no trials
        raise RuntimeError(
            f"no AutoKeras trial produced a model: {_last_failure(clf.tuner)}"
        ) from exc
    search_seconds = time.time() - started

    model = clf.export_model()
    task.output_dir.mkdir(parents=True, exist_ok=True)
    model.save(task.output_dir / BEST_MODEL_FILE)
    summary = _search_summary(clf.tuner)
    (task.output_dir / "search.json").write_text(json.dumps(summary, indent=2, default=str))

    batch = max(int(opts["batch_size"]), 256)

    def predict(x: np.ndarray) -> np.ndarray:
        return to_scores(model.predict(x, batch_size=batch, verbose=0), info.task, info.n_outputs)

    val = predict(x_val)  # the first call also traces the model's graph
    t0 = time.time()
    test = predict(x_test)
    per_image = (time.time() - t0) / max(1, len(x_test))
    # Train scores are optional: only when they fit before the deadline with room to spare.
    train = None
    needed = PREDICT_SAFETY * per_image * len(x_train) + 0.25 * base_reserve
    if task.deadline - time.time() > needed:
        train = predict(x_train)
    else:
        log.warning("no time left to score the training set; train scores omitted")
    completed = [t for t in summary["trials"] if t["status"] == "COMPLETED"]
    return Predictions(
        train=train,
        val=val,
        test=test,
        info={
            "trials_run": len(completed),
            "stopped_early": clock.stopped_early,
            "best_trial": summary["best_trial"],
            "best_val_auc": summary["best_val_auc"],
            "search_s": round(search_seconds, 1),
            "backend": keras.backend.backend(),
            "gpus": len(gpus),
            "model": BEST_MODEL_FILE,
        },
    )


def _configure_backend(backend: str, task: Task) -> list[str]:
    """Threads from ``task.n_jobs``; the names of the GPUs Keras trains on (none on ``cpu``).

    TensorFlow is Keras' backend unless ``$KERAS_BACKEND`` says ``torch`` or ``jax`` (AutoKeras
    3 runs on all three); on ``cpu`` the runner has already hidden every CUDA device.
    """
    if backend == "tensorflow":
        import tensorflow as tf

        return [g.name for g in _configure_tensorflow(tf, task)]
    gpus: list[str] = []
    if backend == "torch":
        import torch

        torch.set_num_threads(max(1, task.n_jobs))
        if task.device == "cuda" and torch.cuda.is_available():
            gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    elif backend == "jax":
        import jax

        gpus = [str(d) for d in jax.devices() if d.platform == "gpu"]
    if task.device == "cuda" and not gpus:
        log.warning("device cuda was asked for but Keras' %s backend sees no GPU", backend)
    log.info("Keras backend %s; GPUs: %s", backend, ", ".join(gpus) or "none")
    return gpus


def _configure_tensorflow(tf: Any, task: Task) -> list[Any]:
    """Threads from ``task.n_jobs``; on ``cuda`` the GPUs with memory growth, else none."""
    tf.config.threading.set_intra_op_parallelism_threads(max(1, task.n_jobs))
    tf.config.threading.set_inter_op_parallelism_threads(min(2, max(1, task.n_jobs)))
    gpus = tf.config.list_physical_devices("GPU")
    if task.device != "cuda":
        if gpus:
            tf.config.set_visible_devices([], "GPU")
        return []
    if not gpus:
        log.warning(
            "device cuda was asked for but TensorFlow sees no GPU (is %s a GPU build? set"
            " %s=tensorflow[and-cuda] and rebuild the environment); training on the CPU",
            tensorflow_requirement(),
            TF_PACKAGE_VARIABLE,
        )
        return []
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    log.info("TensorFlow uses %s", ", ".join(g.name for g in gpus))
    return gpus


def _deadline_callback(keras: Any, clock: Clock, n_val: int) -> Any:
    """A Keras callback that ends training at the next batch once the clock says stop.

    It also times each validation pass (``n_val`` images), which sizes the predict reserve.
    """

    class DeadlineStop(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self._test_started = 0.0

        def __deepcopy__(self, memo: dict) -> DeadlineStop:
            # keras-tuner deep-copies callbacks for each trial; the clock must stay shared.
            return DeadlineStop()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if not self.model.stop_training and clock.left() <= 0:
                log.warning("stopping the search: %.0f s left before the hard limit", clock.reserve)
                clock.trial_cut = True
                self.model.stop_training = True

        def on_test_begin(self, logs: Any = None) -> None:
            self._test_started = time.time()

        def on_test_end(self, logs: Any = None) -> None:
            clock.saw_inference(time.time() - self._test_started, n_val)

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            clock.end_epoch()

    return DeadlineStop()


def _stop_between_trials(tuner: Any, clock: Clock) -> None:
    """Before each new trial: end the search when the next trial would not fit."""
    original = tuner.pre_create_trial

    def pre_create_trial() -> None:
        original()
        done = len(tuner.oracle.trials)
        if done and not clock.room_for_a_trial():
            if not clock.trial_cut:
                clock.trials_skipped = True
            log.warning("no time for another trial after %d; ending the search", done)
            tuner.oracle.max_trials = done  # the oracle then answers STOPPED
        clock.start_trial()

    tuner.pre_create_trial = pre_create_trial


def _search_summary(tuner: Any) -> dict[str, Any]:
    """Each trial's status, val AUC, best epoch and hyperparameters; the best trial."""
    trials = []
    for trial_id, trial in sorted(tuner.oracle.trials.items()):
        auc = trial.metrics.get_best_value("val_auc") if trial.metrics.exists("val_auc") else None
        trials.append(
            {
                "trial": trial_id,
                "status": str(getattr(trial.status, "value", trial.status)).upper(),
                "val_auc": None if auc is None else float(auc),
                "best_epoch": trial.best_step,
                "hyperparameters": trial.hyperparameters.values,
            }
        )
    best = tuner.oracle.get_best_trials(1)
    best_trial = best[0] if best else None
    return {
        "trials": trials,
        "best_trial": best_trial.trial_id if best_trial else None,
        "best_val_auc": None
        if best_trial is None or best_trial.score is None
        else round(float(best_trial.score), 4),
    }


def _last_failure(tuner: Any) -> str:
    for trial in reversed(list(tuner.oracle.trials.values())):
        if trial.message:
            lines = [line for line in str(trial.message).splitlines() if line.strip()]
            return lines[-1] if lines else "failed"
    return "the search ended before any trial finished an epoch"
