"""The worker: runs one adapter on one dataset inside the adapter's environment.

Started by the runner as ``PYTHON /path/to/decathlon/worker.py TASK.json`` in a new process
session; :mod:`decathlon.launcher` is its harness-side half (command line, mounts, environment,
failure reasons), as the AutoML Benchmark's ``caller.py`` / ``callee.py``. It runs on Python
3.9+ with the standard library, numpy and pluggy only, and imports the harness and the adapter's
package from their folders (listed in the task file under ``mounts``) so that nothing else from
the harness's environment leaks into the adapter's.

It reads the arrays memory-mapped, calls the adapter's ``run(task)``, and writes the scores as
``.npy`` files to ``predictions_dir`` (each written to a temporary name, then renamed). On an
exception it writes ``error.json`` (type and message) and exits 1. It never sees test labels.
In a sealed task (``"sealed": true`` in the task file; see :mod:`decathlon.sandbox`) it is the
second process of its own PID namespace, and before it exits it kills what the adapter left
running there, saying so in the log.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import random
import sys
import traceback
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
# Run as a script, Python puts this folder first on sys.path: drop it so that modules such as
# `datasets` here cannot shadow third-party packages of the same name.
if sys.path and Path(sys.path[0] or ".").resolve() == _HERE:
    sys.path.pop(0)


def mount(name: str, location: str) -> None:
    """Make ``name`` importable from ``location``: a package's folder or a module's file."""
    if name in sys.modules:
        return
    path = Path(location)
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        found = None
    if found is not None and found.origin:
        origin = Path(found.origin).resolve()
        if origin == path.resolve() or origin.parent == path.resolve():
            return  # importable as it is (the harness's own environment)
    if path.is_dir():
        spec = importlib.util.spec_from_file_location(
            name, str(path / "__init__.py"), submodule_search_locations=[str(path)]
        )
    else:
        spec = importlib.util.spec_from_file_location(name, str(path))
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot mount {name!r} from {location}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)  # as the import system does: no half-run module is kept
        raise


def import_adapter(mounts: dict[str, str], module: str) -> dict[str, str] | None:
    """Mount every package of the task file's ``mounts``, then import the adapter's ``module``;
    ``None``, or the first failure as ``error.json`` words it: its type, and its message naming
    the file that raised (a plugin module that fails to import here, in the task, though the
    harness imported it: a package its environment lacks, syntax its Python does not know). The
    traceback goes to stderr (the task's log)."""
    for name, location in mounts.items():
        try:
            mount(name, location)
        except BaseException as exc:
            path = Path(location)
            return _import_failure(exc, f"{path.name}/__init__.py" if path.is_dir() else path.name)
    try:
        importlib.import_module(module)
    except BaseException as exc:
        return _import_failure(exc, _file_of(module))
    return None


def _import_failure(exc: BaseException, where: str) -> dict[str, str]:
    traceback.print_exc()
    message = " ".join(str(exc).split())[:400]
    return {"type": type(exc).__name__, "message": f"{message} while importing {where}"}


def _file_of(module: str) -> str:
    """The file of ``module``, as ``name.py`` or ``package/__init__.py``; else its name."""
    try:
        found = importlib.util.find_spec(module)
    except BaseException:
        found = None
    if found is None or not found.has_location or not found.origin:
        return module
    path = Path(found.origin)
    return f"{path.parent.name}/{path.name}" if path.name == "__init__.py" else path.name


def _save(directory: Path, name: str, array: Any) -> None:
    import numpy as np

    tmp = directory / (name + ".tmp.npy")
    np.save(tmp, np.asarray(array), allow_pickle=False)
    os.replace(tmp, directory / (name + ".npy"))


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_error(path: Path, failed: dict[str, str]) -> None:
    # Plain json: it may have to be written when the harness's package could not be mounted;
    # its values are strings, never a float JSON has no word for.
    _write_text(path, json.dumps(failed, indent=2))


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the harness dies, and pass a SIGTERM on to the whole process
    group, so that a killed harness leaves neither this worker nor its children behind."""
    import signal

    worker = os.getpid()

    def forward(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if os.getpid() != worker:
            # A child the adapter forked inherits this handler: when its parent terminates it
            # (a helper of auto-sklearn's, a multiprocessing pool), only that child ends.
            os.kill(os.getpid(), signal.SIGTERM)
            return
        try:
            os.killpg(os.getpgrp(), signal.SIGTERM)  # the group includes this process
        except OSError:
            os._exit(128 + signum)

    signal.signal(signal.SIGTERM, forward)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _end_namespace() -> None:
    """In a sealed task (its own PID namespace, where /proc lists only the task's processes):
    kill what the adapter left running and say so in the log. The kernel would kill them anyway
    when the sandbox's init exits right after this process; this makes it visible."""
    import signal

    me = os.getpid()
    left = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in (1, me):
            try:
                os.kill(int(entry), signal.SIGKILL)
                left.append(int(entry))
            except OSError:
                pass
    if left:
        print(
            "[decathlon] {} process(es) terminated: the adapter left them running"
            " (pids in the task's namespace: {})".format(len(left), ", ".join(map(str, left))),
            file=sys.stderr,
            flush=True,
        )


def main(task_file: str) -> int:
    _die_with_parent()
    spec = json.loads(Path(task_file).read_text())
    code = _run(spec)
    if spec.get("sealed"):
        _end_namespace()
    return code


def _run(spec: Any) -> int:
    out = Path(spec["predictions_dir"])
    out.mkdir(parents=True, exist_ok=True)
    module_name, _, attribute = spec["adapter"]["run"].partition(":")
    failed = import_adapter(spec["mounts"], module_name)
    if failed is not None:  # the runner turns this into an `error` row
        print("[decathlon] {}: {}".format(failed["type"], failed["message"]), file=sys.stderr)
        sys.stderr.flush()
        _write_error(out / "error.json", failed)
        return 1

    import numpy as np

    from decathlon.contract import Budget, DatasetInfo, Predictions, Task
    from decathlon.files import json_text

    try:
        run = getattr(importlib.import_module(module_name), attribute)
        arrays = {
            key: np.load(path, mmap_mode="r", allow_pickle=False)
            for key, path in spec["arrays"].items()
        }
        task = Task(
            dataset=DatasetInfo(**spec["dataset"]),
            budget=Budget(**spec["budget"]),
            seed=int(spec["seed"]),
            scratch_dir=Path(spec["scratch_dir"]),
            output_dir=Path(spec["output_dir"]),
            device=spec["device"],
            n_jobs=int(spec["n_jobs"]),
            deadline=float(spec["deadline"]),
            options=dict(spec["options"]),
            **arrays,
        )
        random.seed(task.seed)
        np.random.seed(task.seed)
        result = run(task)
        if not isinstance(result, Predictions):
            raise TypeError(
                "{} returned {}, not decathlon.contract.Predictions".format(
                    spec["adapter"]["run"], type(result).__name__
                )
            )
        for split in ("train", "val", "test"):
            scores = getattr(result, split)
            if scores is not None:
                _save(out, split, scores)
        # Strict JSON (an adapter's notes may hold NaN): the harness's one writer of JSON text.
        _write_text(out / "info.json", json_text(dict(result.info), indent=2))
    except BaseException as exc:  # the runner turns this into an `error` row
        traceback.print_exc()
        sys.stderr.flush()
        _write_error(out / "error.json", {"type": type(exc).__name__, "message": str(exc)[:500]})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
