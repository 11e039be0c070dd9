"""The adapter contract: what an adapter declares, what it is given, what it returns.

Dataclasses only, no logic. This module is imported inside adapter environments, so it runs on
Python 3.9 with nothing but the standard library and numpy.

An adapter is a plain function ``run(task: Task) -> Predictions`` named by an :class:`Adapter`
record that a plugin registers through the ``decathlon_register_adapters`` hook. The harness
starts that function in a subprocess (in the adapter's own environment when it declares one),
enforces the budget from the outside and computes every score itself: the task holds no test
labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

#: Task types as MedMNIST's ``INFO[flag]["task"]`` spells them.
BINARY = "binary-class"
MULTI_CLASS = "multi-class"
ORDINAL = "ordinal-regression"
MULTI_LABEL = "multi-label, binary-class"
TASK_TYPES = (BINARY, MULTI_CLASS, ORDINAL, MULTI_LABEL)


@dataclass(frozen=True)
class Environment:
    """Where an adapter runs: its own virtual environment, built once and cached.

    ``python`` is a version ("3.9") that the harness looks for (an explicit setting, the PATH,
    pyenv's versions, uv's managed Pythons) or has uv fetch. ``requirements`` are pip requirement
    strings; the harness adds numpy and pluggy, which its worker needs. ``pip_args`` are install
    options (for example ``("--only-binary", "ConfigSpace")``), given to pip, or to uv as uv's
    equivalents. ``name`` names the lock file (``locks/<name>-py<python>.txt`` beside the
    adapter's module; default: the adapter's name); adapters that share an environment give it
    one name. The environment's cache key is the hash of its lock, or without a usable lock a
    hash of ``python``, ``requirements`` and ``pip_args``.
    """

    python: str
    requirements: tuple[str, ...] = ()
    pip_args: tuple[str, ...] = ()
    name: str = ""


@dataclass(frozen=True)
class Adapter:
    """An AutoML method the decathlon can run.

    ``name``: the name users pass to ``--adapter`` (lowercase, digits and underscores).
    ``run``: ``"package.module:function"``; the function takes a :class:`Task` and returns
    :class:`Predictions`. It is imported only inside the worker, so heavy frameworks are imported
    there and ``python -m decathlon list`` works without them.
    ``environment``: ``None`` to run in the harness's own environment, else an :class:`Environment`.
    ``default_budgets``: per profile (``"paper"``, ``"quick"``), the budget table to use when
    ``budgets.toml`` has no entry for this adapter, in the same form as that file's tables.
    ``options``: the options the adapter accepts, with their defaults; ``budgets.toml`` and
    ``--option KEY=VALUE`` may override them, and unknown names are refused.
    ``uses_gpu``: whether the adapter uses a CUDA device when one is given.
    ``sizes``: the image sizes (28, 64, 128, 224: MedMNIST+) the adapter accepts; a run at any
    other size is refused before anything starts. Only 28 unless the adapter says more.
    ``check_options``: called in the harness with the merged options before anything starts;
    it raises ``ValueError`` (one line) for a value the adapter refuses, which the harness
    reports as a bad option. Keep it light: it runs where the adapter's framework is absent.
    """

    name: str
    run: str
    description: str = ""
    environment: Optional[Environment] = None
    default_budgets: dict[str, dict[str, Any]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    uses_gpu: bool = False
    version: str = ""
    sizes: tuple[int, ...] = (28,)
    check_options: Optional[Callable[[dict[str, Any]], None]] = None


@dataclass(frozen=True)
class DatasetInfo:
    """Published facts about one MedMNIST subset (``INFO[flag]`` of the ``medmnist`` package)
    at one image size: ``size`` is the side of the square images (28, 64, 128 or 224), and
    ``url``/``md5`` are those of that size's file."""

    flag: str
    task: str
    n_channels: int
    n_classes: int
    labels: dict[str, str]
    n_samples: dict[str, int]
    url: str = ""
    md5: str = ""
    license: str = ""
    python_class: str = ""
    size: int = 28

    @property
    def n_outputs(self) -> int:
        """Columns of a score array: one per class, or per label for multi-label."""
        return self.n_classes

    @property
    def scale(self) -> int:
        """Total images over train, val and test: what the budgets' scale tiers count."""
        return sum(self.n_samples.values())

    @property
    def n_bytes(self) -> int:
        """Bytes of its six arrays (uint8 images and labels of every split), uncompressed."""
        labels = self.n_classes if self.task == MULTI_LABEL else 1
        return self.scale * (self.size * self.size * self.n_channels + labels)


@dataclass(frozen=True)
class Budget:
    """What an adapter may spend on one dataset, resolved from ``budgets.toml``.

    Only the fields the profile sets are filled: ``time_seconds`` for time-budgeted search,
    ``trials``/``epochs`` for trial- or epoch-budgeted training, ``node_hours`` for cloud training.
    ``hard_limit_seconds`` is the wall-clock limit after which the harness kills the task's whole
    process tree; an adapter should finish well before it. ``memory_mb`` is the task's memory cap,
    if any. ``tier`` is the scale tier (0, 1, 2 = small, medium, large) the budget was taken from.
    """

    hard_limit_seconds: float
    time_seconds: Optional[float] = None
    trials: Optional[int] = None
    epochs: Optional[int] = None
    node_hours: Optional[float] = None
    memory_mb: Optional[int] = None
    tier: int = 0

    def describe(self) -> str:
        parts = []
        if self.time_seconds is not None:
            parts.append(f"{self.time_seconds:g}s")
        if self.trials is not None:
            parts.append(f"{self.trials} trials")
        if self.epochs is not None:
            parts.append(f"{self.epochs} epochs")
        if self.node_hours is not None:
            parts.append(f"{self.node_hours:g} node h")
        return " x ".join(parts) or f"limit {self.hard_limit_seconds:g}s"


@dataclass
class Task:
    """Everything an adapter is given for one (dataset, seed). There are no test labels here.

    Images are uint8 arrays shaped (N, S, S) for grey-scale and (N, S, S, 3) for colour sets,
    where S is ``dataset.size`` (28, or 64, 128, 224 for MedMNIST+), memory-mapped read-only:
    copy before modifying, and read large ones in batches (pathmnist's training images are
    about 13 GB at 224). Labels are uint8 (N, 1) integer class ids, or
    (N, 14) zeros and ones for chestmnist.

    ``scratch_dir`` is empty at the start and deleted after the task; ``output_dir`` is kept in the
    run directory (save models, search logs and the like there). ``deadline`` is the
    ``time.time()`` at which the harness will kill the task; ``n_jobs`` the CPU cores given to it;
    ``device`` is ``"cpu"`` or ``"cuda"``.
    """

    dataset: DatasetInfo
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    budget: Budget
    seed: int
    scratch_dir: Path
    output_dir: Path
    device: str = "cpu"
    n_jobs: int = 1
    deadline: float = float("inf")
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Predictions:
    """What an adapter returns: scores, one row per image in the split's order.

    Columns as the MedMNIST evaluator expects them: one per class (the positive class last for
    binary tasks), one per label for multi-label; every value a probability in [0, 1].
    ``train`` is optional (give it where it is cheap: it shows over-fitting). ``info`` is a small
    JSON-able dict recorded in the leaderboard's ``notes`` column, for example
    ``{"trials_run": 7}``.
    """

    val: np.ndarray
    test: np.ndarray
    train: Optional[np.ndarray] = None
    info: dict[str, Any] = field(default_factory=dict)
