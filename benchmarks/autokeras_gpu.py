"""AutoKeras on a GPU: the ``autokeras`` adapter through the harness, 2 trials x 2 epochs.

Runs the real harness (environment, worker subprocess, hard limit, scoring) on the real
breastmnist with ``device`` cuda and prints the wall-clock time, what Keras' backend saw
(TensorFlow's GPUs, or torch's / jax's) and the leaderboard rows. Everything it writes goes
under OUT_DIR (run directory, budgets file, data links, ``summary.json``)::

    python benchmarks/autokeras_gpu.py OUT_DIR [--data-dir DIR] [--device cuda|cpu]

Two ways to get the adapter's environment:

* Normal GPU machine with pip access: the GPU build of TensorFlow. This script sets
  ``DECATHLON_TF_PACKAGE=tensorflow[and-cuda]`` (unless already set) before the adapter is
  registered, so the harness builds that environment (``tensorflow[and-cuda]==2.21.0``,
  keras 3.12, AutoKeras 3.0) in ``$DECATHLON_HOME/envs`` on first use (several minutes,
  about 3 GB).
* A machine that cannot fetch packages but has a Python with a GPU framework (the lent H100:
  Python 3.12 with PyTorch and JAX, no TensorFlow): ``--adopt-python python3 --wheels DIR
  --keras-backend torch`` makes that Python the adapter's environment (a venv with its system
  packages, plus the pure-Python wheels in DIR: keras, keras-tuner, kt-legacy, autokeras,
  namex, optree, dm-tree) under OUT_DIR/home, and Keras trains with torch.

Needs only the standard library and the harness (importable from this checkout, installed or
not); ``--device cpu`` runs the same check on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TF_PACKAGE_VARIABLE = "DECATHLON_TF_PACKAGE"  # read by adapters/autokeras.py
PROFILE = "gpucheck"
PROBE = """
import json, os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
backend = keras.backend.backend()
found = {"backend": backend, "keras": keras.__version__}
if backend == "tensorflow":
    import tensorflow as tf
    found["framework"] = "tensorflow " + tf.__version__
    found["built_with_cuda"] = tf.test.is_built_with_cuda()
    found["gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
elif backend == "torch":
    import torch
    found["framework"] = "torch " + torch.__version__
    found["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
else:
    import jax
    found["framework"] = "jax " + jax.__version__
    found["gpus"] = [str(d) for d in jax.devices() if d.platform == "gpu"]
print("PROBE " + json.dumps(found))
"""

log = logging.getLogger("autokeras_gpu")


def _harness() -> tuple[Any, ...]:
    """Import the harness from this checkout; the adapters folder as ``decathlon_adapters``."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    try:
        import decathlon_adapters  # noqa: F401  (installed with `pip install -e .`)
    except ImportError:
        import importlib.util

        spec = importlib.util.spec_from_file_location(
            "decathlon_adapters",
            REPO / "adapters" / "__init__.py",
            submodule_search_locations=[str(REPO / "adapters")],
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["decathlon_adapters"] = module
        spec.loader.exec_module(module)
    from decathlon_adapters import autokeras

    from decathlon import environments, leaderboard
    from decathlon.plugins import make_registry
    from decathlon.runner import RunConfig, Runner, gpu_names

    return environments, leaderboard, make_registry, Runner, RunConfig, gpu_names, autokeras


def _find_data(explicit: str | None) -> Path:
    candidates = [Path(explicit)] if explicit else []
    candidates += [
        REPO / "shared" / "data" / "medmnist",
        REPO.parent / "shared" / "data" / "medmnist",
    ]
    candidates += [REPO / ".bench_data"]
    for folder in candidates:
        if (folder / "breastmnist.npz").is_file():
            return folder.resolve()
    looked = ", ".join(str(c) for c in candidates)
    raise SystemExit(f"breastmnist.npz not found (looked in {looked}); pass --data-dir")


def _adopt(environments: Any, adapter: Any, python: str, wheels: Path | None, backend: str) -> Path:
    """Make ``python`` (with its own packages, plus the wheels in ``wheels`` installed into a
    folder beside it) the adapter's ready environment, through ``environments.adopt``."""
    directory = environments.env_dir(adapter)
    if environments.is_ready(adapter):
        return directory
    site = directory.parent / f"{directory.name}-site"
    site.mkdir(parents=True, exist_ok=True)
    if wheels is not None:
        found = sorted(str(w) for w in wheels.glob("*.whl"))
        if not found:
            raise SystemExit(f"--wheels {wheels}: no .whl files there")
        subprocess.run(
            [python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
            + ["--target", str(site), *found],
            check=True,
        )
    log.info(
        "adopting %s (Keras backend %s) as the environment of %s", python, backend, adapter.name
    )
    environments.adopt(adapter, python, extra_paths=(site,))
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="everything the check writes goes here")
    parser.add_argument("--data-dir", help="folder holding breastmnist.npz")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--hard-limit", type=float, default=900.0, help="seconds (default 900)")
    parser.add_argument("--adopt-python", help="use this Python as the adapter's environment")
    parser.add_argument("--wheels", help="with --adopt-python: install these wheels (no index)")
    parser.add_argument(
        "--keras-backend",
        default=os.environ.get("KERAS_BACKEND", "tensorflow"),
        choices=("tensorflow", "torch", "jax"),
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    out = Path(args.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault(TF_PACKAGE_VARIABLE, "tensorflow[and-cuda]")
    os.environ["KERAS_BACKEND"] = args.keras_backend  # the worker inherits it
    if args.adopt_python:  # a private cache: the adopted folder is not a real build of the spec
        os.environ["DECATHLON_HOME"] = str(out / "home")
    environments, leaderboard, make_registry, Runner, RunConfig, gpu_names, ak = _harness()

    registry = make_registry()
    if "autokeras" not in registry.adapters:  # the harness is not installed: register directly
        registry = make_registry([ak], entry_points=False)
    adapter = registry.get("autokeras")
    if args.adopt_python:
        _adopt(
            environments,
            adapter,
            args.adopt_python,
            Path(args.wheels).resolve() if args.wheels else None,
            args.keras_backend,
        )
    setup_started = time.monotonic()
    python = environments.build(adapter, on_step=print)
    setup_s = time.monotonic() - setup_started

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    probe_out = subprocess.run(
        [str(python), "-c", PROBE], capture_output=True, text=True, env=env, timeout=300
    )
    probe = {"error": probe_out.stderr.strip().splitlines()[-1:]}
    for line in probe_out.stdout.splitlines():
        if line.startswith("PROBE "):
            probe = json.loads(line[6:])
    print(f"environment: {python} ({environments.env_dir(adapter).name})")
    print(f"backend probe: {json.dumps(probe)}")

    data = out / "data"
    data.mkdir(exist_ok=True)
    link = data / "breastmnist.npz"
    if not link.exists():
        link.symlink_to(_find_data(args.data_dir) / "breastmnist.npz")
    budgets = out / "budgets.toml"
    budgets.write_text(
        f'[profiles.{PROFILE}]\ndescription = "AutoKeras GPU check"\nseeds = [0]\n\n'
        f"[{PROFILE}.autokeras]\ntrials = {args.trials}\nepochs = {args.epochs}\n"
        f"hard_limit_seconds = {args.hard_limit}\n"
    )
    run_dir = out / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    config = RunConfig(
        adapter="autokeras",
        profile=PROFILE,
        datasets=("breastmnist",),
        data_dir=str(data),
        download=False,
        device=args.device,
        n_jobs=os.cpu_count() or 1,
        budgets_path=str(budgets),
    )
    started = time.monotonic()
    path = Runner(config, registry).run(run_dir)
    elapsed = time.monotonic() - started

    rows = [r for r in leaderboard.read(path) if r["dataset"] == "breastmnist"]
    notes = json.loads(rows[0]["notes"]) if rows and rows[0].get("notes") else {}
    summary = {
        "device": args.device,
        "nvidia_smi_gpus": gpu_names(),
        "keras_backend": args.keras_backend,
        "tensorflow_package": os.environ[TF_PACKAGE_VARIABLE],
        "environment_setup_s": round(setup_s, 1),
        "backend_probe": probe,
        "backend_saw_gpu": bool(probe.get("gpus")),
        "adapter_used_gpus": notes.get("gpus"),
        "budget": f"{args.trials} trials x {args.epochs} epochs",
        "elapsed_s": round(elapsed, 1),
        "task_elapsed_s": rows[0].get("elapsed_s") if rows else None,
        "rows": [{k: r.get(k) for k in ("split", "status", "auc", "acc", "reason")} for r in rows],
        "notes": notes,
        "run_dir": str(run_dir),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"GPU seen by {args.keras_backend}: {summary['backend_saw_gpu']} {probe.get('gpus')}")
    print(f"GPUs the adapter trained on: {notes.get('gpus')}")
    print(f"elapsed: {elapsed:.1f} s (task {summary['task_elapsed_s']} s; setup {setup_s:.1f} s)")
    for row in summary["rows"]:
        print(
            f"  {row['split']:5s} {row['status']:8s} auc={row['auc']} acc={row['acc']}"
            f" {row['reason'] or ''}"
        )
    print(f"notes: {json.dumps(notes, sort_keys=True)}")
    print(f"summary: {out / 'summary.json'}; task log: {run_dir}/tasks/breastmnist/seed0/log.txt")
    ok = bool(rows) and all(r["status"] == "ok" for r in rows if r["split"] in ("val", "test"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
