"""A test plugin for the Dask executor: an adapter that writes a marker, then sleeps.

The marker (``{marker_dir}/{flag}-seed{seed}-{tag}.json``) carries the task's enforcement tag, by
which the test finds the process that started the task's subprocess (on a Dask cluster, the Dask
worker itself: the test kills it mid-task). In a sealed task, pids are those of the task's own PID
namespace, so the tag is what identifies the task outside. The scores are constant (valid,
uninformative) so the task ends ``ok`` when it lives.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from decathlon.contract import Adapter, Predictions, Task
from decathlon.hookspecs import hookimpl

SLOW = Adapter(
    name="dask_test_slow",
    run="distributed_plugin:run",
    description="test only: writes a marker, sleeps, returns constant scores",
    default_budgets={"quick": {"hard_limit_seconds": 120}},
    options={"sleep_s": 5.0, "marker_dir": ""},
)

#: The same, declaring that it uses a GPU: on a cluster it asks for a worker with ``GPU=1``.
GPU = Adapter(
    name="dask_test_gpu",
    run="distributed_plugin:run",
    description="test only: as dask_test_slow, on a GPU worker",
    default_budgets={"quick": {"hard_limit_seconds": 120}},
    options={"sleep_s": 1.0, "marker_dir": ""},
    uses_gpu=True,
)


@hookimpl
def decathlon_register_adapters(register) -> None:
    register(SLOW)
    register(GPU)


def run(task: Task) -> Predictions:
    marker_dir = task.options["marker_dir"]
    if marker_dir:
        marker = {
            "pid": os.getpid(),
            "parent": os.getppid(),
            "seed": task.seed,
            "tag": os.environ.get("DECATHLON_TASK_TAG", ""),
        }
        attempt = marker["tag"] or os.getpid()  # pids repeat from one namespace to the next
        name = f"{task.dataset.flag}-seed{task.seed}-{attempt}.json"
        tmp = Path(marker_dir) / (name + ".tmp")
        tmp.write_text(json.dumps(marker))
        os.replace(tmp, Path(marker_dir) / name)
    time.sleep(float(task.options["sleep_s"]))
    n_classes = task.dataset.n_classes

    def constant(x: np.ndarray) -> np.ndarray:
        return np.full((len(x), n_classes), 1.0 / n_classes)

    return Predictions(
        train=constant(task.x_train), val=constant(task.x_val), test=constant(task.x_test)
    )
