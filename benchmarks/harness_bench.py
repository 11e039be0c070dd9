"""Benchmarks of the harness itself: overhead per task, peak memory, budget precision, quick run.

Run from the repository root with the harness's environment::

    .venv/bin/python benchmarks/harness_bench.py overhead [--reps 5] [--datasets ...]
    .venv/bin/python benchmarks/harness_bench.py memory [--size 128] [--modes ...]
    .venv/bin/python benchmarks/harness_bench.py budget [--limits 2 5 10] [--reps 2]
    .venv/bin/python benchmarks/harness_bench.py quick

Each prints a markdown table (and the machine, date, commit and command) for
``benchmarks/RESULTS.md``; ``--json FILE`` also saves the raw numbers. Everything is written
under ``--work`` (default ``/tmp/decathlon-bench``): a data folder of symlinks to the real files
in ``../shared/data/medmnist`` (never the shared folder itself), generated pathmnist-size data
(107,180 RGB images, made once and reused), and a private ``DECATHLON_HOME`` per dataset so
that the first ("cold") run pays for the ``.npy`` cache and the MD5 and the later ("warm") ones
do not. The adapters are those of ``noop_adapters.py`` (and the built-in ``baseline``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import noop_adapters
import numpy as np
import psutil

from decathlon import datasets, leaderboard, metrics
from decathlon import runner as runner_module
from decathlon.contract import MULTI_LABEL
from decathlon.enforcement import TAG_VARIABLE
from decathlon.plugins import make_registry
from decathlon.runner import RunConfig, Runner
from decathlon.synthetic import write_catalog

log = logging.getLogger("harness_bench")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "medmnist"
REAL = ("breastmnist", "pneumoniamnist", "retinamnist")
PATHSIZE = "pathmnist-size"  # generated pathmnist with the published split sizes
PATH_SIZES = {"train": 89996, "val": 10004, "test": 7180}


# ---------------------------------------------------------------------------- data and machine


def machine() -> dict[str, Any]:
    """CPU, cores, memory, date, commit (with a ``+dirty`` mark) and the command line."""
    cpu = platform.processor()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no", "decathlon")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        # other work on the machine inflates every time here: check it before comparing
        "load_average_1min": os.getloadavg()[0],
        "commit": git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else ""),
        "command": " ".join([".venv/bin/python", "benchmarks/harness_bench.py", *sys.argv[1:]]),
    }


def real_data(work: Path) -> Path:
    """A data folder of symlinks to the real files (the loader writes sidecars next to them)."""
    folder = work / "real"
    folder.mkdir(parents=True, exist_ok=True)
    for flag in REAL:
        link = folder / f"{flag}.npz"
        if not link.is_symlink():
            link.symlink_to(SHARED / f"{flag}.npz")
    return folder


def pathsize_data(work: Path, size: int = 28) -> tuple[Path, Path]:
    """Generated pathmnist with the published split sizes at ``size`` pixels (made once):
    (data_dir, info.json). Above 28 the members are deflate streams at zlib level 0 (stored
    blocks: the same zip and zlib path as the published files, which are deflated at level 6,
    but made in minutes rather than an hour on two shared cores; inflating them is faster than
    inflating real compressed data, so the harness's seconds above 28 are a lower bound)."""
    root = work / ("pathsize" if size == 28 else f"pathsize-{size}")
    info = root / "info.json"
    if not info.is_file():
        log.info("generating pathmnist-size data at %d (107,180 RGB images; once)...", size)
        started = time.perf_counter()
        write_catalog(
            root, ["pathmnist"], PATH_SIZES, size, compresslevel=None if size == 28 else 0
        )
        log.info("generated in %.0f s", time.perf_counter() - started)
    return root / "data", info


def locate(work: Path, name: str, size: int = 28) -> tuple[str, Path, Path | None]:
    """(flag, data_dir, info_path) for a real flag or ``pathmnist-size``."""
    if name == PATHSIZE:
        data_dir, info = pathsize_data(work, size)
        return "pathmnist", data_dir, info
    if name not in REAL:
        raise SystemExit(f"unknown dataset {name!r}; use {', '.join(REAL)} or {PATHSIZE}")
    return name, real_data(work), None


# ---------------------------------------------------------------------------- timing the runner


@contextlib.contextmanager
def timed_stages(timings: dict[str, float]) -> Iterator[None]:
    """Add the wall time of each harness stage of a task to ``timings`` (seconds, by name)."""
    targets: list[tuple[Any, str, str]] = [
        (datasets, "load", "load"),  # MD5 (cached in a sidecar), read the .npz, validate
        (datasets, "materialize", "materialize"),  # the .npy cache the worker memory-maps
        (runner_module, "run_limited", "worker"),  # worker start, adapter, scores written
        (runner_module, "score", "score"),  # check and score the predictions
        (metrics, "save_evaluator_csv", "evaluator_csv"),  # inside score
        (Runner, "finish_task", "finish"),  # result.json and the leaderboard
    ]
    saved = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in targets]

    def wrap(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                timings[name] = timings.get(name, 0.0) + time.perf_counter() - started

        return timed

    for owner, attr, name in targets:
        setattr(owner, attr, wrap(getattr(owner, attr), name))
    try:
        yield
    finally:
        for owner, attr, fn in saved:
            setattr(owner, attr, fn)


def harness_task(
    flag: str,
    data_dir: Path,
    info_path: Path | None,
    home: Path,
    run_dir: Path,
    *,
    adapter: str = "noop",
    options: dict[str, Any] | None = None,
    scale_factor: float = 1.0,
    kill_grace: float = 5.0,
    size: int = 28,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """One task through the whole runner, in this process; (stage timings, leaderboard rows)."""
    os.environ["DECATHLON_HOME"] = str(home)
    registry = make_registry(extra_plugins=[noop_adapters])
    config = RunConfig(
        adapter=adapter,
        profile="quick",
        datasets=(flag,),
        data_dir=str(data_dir),
        download=False,
        info_path=str(info_path) if info_path else None,
        options=dict(options or {}),
        scale_factor=scale_factor,
        kill_grace=kill_grace,
        size=size,
    )
    timings: dict[str, float] = {}
    with timed_stages(timings):
        started = time.perf_counter()
        path = Runner(config, registry).run(run_dir)
        timings["total"] = time.perf_counter() - started
    rows = [r for r in leaderboard.read(path) if r.get("dataset") == flag]
    return timings, rows


def numpy_baseline(flag: str, data_dir: Path, info_path: Path | None, size: int = 28) -> float:
    """Seconds to load the six arrays with numpy and score constant predictions in-process."""
    info = datasets.Catalog.load(info_path).info(flag, size)
    started = time.perf_counter()
    with np.load(datasets.dataset_file(data_dir, flag, size), allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in datasets.KEYS}
    for split in datasets.SPLITS:
        n, k = len(arrays[f"{split}_images"]), info.n_outputs
        scores = np.full((n, k), 1.0 / k)
        metrics.auc(info.task, arrays[f"{split}_labels"], scores)
        metrics.acc(info.task, arrays[f"{split}_labels"], scores)
    return time.perf_counter() - started


def _stats(values: Sequence[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f} (min {min(values):.3f})"


def _mean(values: Sequence[float]) -> float:
    return statistics.mean(values) if values else float("nan")


# ---------------------------------------------------------------------------- subcommands


def overhead(args: argparse.Namespace) -> dict[str, Any]:
    """Harness seconds per task with the ``noop`` adapter vs numpy load-and-score, per dataset."""
    work: Path = args.work
    stages = ("load", "materialize", "worker", "score", "evaluator_csv", "finish")
    results: dict[str, Any] = {}
    for name in args.datasets:
        flag, data_dir, info_path = locate(work, name)
        home = work / "home" / name
        shutil.rmtree(home, ignore_errors=True)
        (data_dir / f"{flag}.npz.md5ok").unlink(missing_ok=True)  # cold: MD5 and .npy cache
        runs: list[dict[str, float]] = []
        for rep in range(args.reps + 1):
            run_dir = work / "runs" / f"overhead-{name}-{rep}"
            shutil.rmtree(run_dir, ignore_errors=True)
            timings, rows = harness_task(flag, data_dir, info_path, home, run_dir)
            bad = [r for r in rows if r["status"] != "ok"]
            if bad:
                raise SystemExit(f"{name}: noop task failed: {bad[0]['reason']}")
            timings["elapsed_s"] = float(rows[0]["elapsed_s"])
            runs.append(timings)
            shutil.rmtree(run_dir)
        numpy_runs = [numpy_baseline(flag, data_dir, info_path) for _ in range(args.reps)]
        cold, warm = runs[0], runs[1:]
        results[name] = {"cold": cold, "warm": warm, "numpy": numpy_runs}
        log.info(
            "%s: warm %s s, numpy %s s",
            name,
            _stats([w["total"] for w in warm]),
            _stats(numpy_runs),
        )
    lines = [
        "| dataset | images | cold run s | warm run s | numpy s | overhead s | ratio |"
        + "".join(f" {s} |" for s in stages),
        "|---" * (7 + len(stages)) + "|",
    ]
    for name, res in results.items():
        warm_totals = [w["total"] for w in res["warm"]]
        n_images = sum(PATH_SIZES.values()) if name == PATHSIZE else None
        if n_images is None:
            n_images = sum(datasets.Catalog.load().info(name).n_samples.values())
        mean_numpy = _mean(res["numpy"])
        lines.append(
            f"| {name} | {n_images:,} | {res['cold']['total']:.3f} | {_stats(warm_totals)} |"
            f" {_stats(res['numpy'])} | {_mean(warm_totals) - mean_numpy:.3f} |"
            f" {_mean(warm_totals) / mean_numpy:.1f} |"
            + "".join(f" {_mean([w.get(s, 0.0) for w in res['warm']]):.3f} |" for s in stages)
        )
    cold_lines = ["| dataset (cold) |" + "".join(f" {s} |" for s in stages), "|---" * 7 + "|"]
    for name, res in results.items():
        cold_lines.append(
            f"| {name} |" + "".join(f" {res['cold'].get(s, 0.0):.3f} |" for s in stages)
        )
    floor = [_interpreter_start() for _ in range(args.reps)]
    results["interpreter_start"] = floor
    log.info(
        "\n%s\n\n%s\n\nworker floor, python -c 'import numpy, pluggy': %s s",
        "\n".join(lines),
        "\n".join(cold_lines),
        _stats(floor),
    )
    return results


def _interpreter_start() -> float:
    """Seconds to start the harness's Python and import what every worker imports."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import numpy, pluggy"], check=True)
    return time.perf_counter() - started


def vm_hwm_mb(pid: int | str = "self") -> float:
    """Peak resident memory of one process (``VmHWM``), in MiB.

    Not ``ru_maxrss``: on Linux that keeps the parent's high-water mark across fork and exec,
    so a worker started by a large harness would seem as large as the harness.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class ChildPeaks(threading.Thread):
    """Samples the peak memory of every worker below this process every 10 ms."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peaks: dict[int, float] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        while not self.stopped.wait(0.01):
            for child in me.children(recursive=True):
                try:
                    # Between fork and exec a child still shows the harness's memory: count
                    # a sample only when the child was the worker before and after it.
                    before = Path(f"/proc/{child.pid}/cmdline").read_bytes()
                    peak = vm_hwm_mb(child.pid)
                    after = Path(f"/proc/{child.pid}/cmdline").read_bytes()
                except (OSError, ValueError):
                    continue
                if b"worker.py" in before and b"worker.py" in after:
                    self.peaks[child.pid] = max(self.peaks.get(child.pid, 0.0), peak)


def _memory_child(args: argparse.Namespace) -> dict[str, Any]:
    """In a fresh process: one harness task or the numpy baseline; its and its children's peaks."""
    flag, data_dir, info_path = locate(args.work, args.dataset, args.size)
    out: dict[str, Any] = {"mode": args.mode}
    sampler = ChildPeaks()
    sampler.start()
    if args.mode == "numpy":
        out["seconds"] = numpy_baseline(flag, data_dir, info_path, args.size)
    else:
        home = args.work / "home" / "memory"  # cold empties it; warm and touch reuse it
        if args.mode == "harness-cold":
            shutil.rmtree(home, ignore_errors=True)
            sidecar = datasets.dataset_file(data_dir, flag, args.size)
            sidecar.with_name(sidecar.name + ".md5ok").unlink(missing_ok=True)
        run_dir = args.work / "runs" / f"memory-{args.mode}"
        shutil.rmtree(run_dir, ignore_errors=True)
        options = {"touch": True} if args.mode == "harness-touch" else {}
        timings, rows = harness_task(
            flag, data_dir, info_path, home, run_dir, options=options, size=args.size
        )
        out["seconds"] = timings["total"]
        out["stages"] = timings
        out["status"] = rows[0]["status"]
    sampler.stopped.set()
    sampler.join()
    out["self_peak_mb"] = vm_hwm_mb()
    out["children_peak_mb"] = max(sampler.peaks.values(), default=0.0)
    Path(args.out).write_text(json.dumps(out))
    return out


def memory(args: argparse.Namespace) -> dict[str, Any]:
    """Peak RSS of the harness process and of its worker (largest child) vs the arrays' size."""
    flag, data_dir, info_path = locate(args.work, args.dataset, args.size)
    info = datasets.Catalog.load(info_path).info(flag, args.size)
    labels = info.n_classes if info.task == MULTI_LABEL else 1
    raw_mb = info.scale * (args.size * args.size * info.n_channels + labels) / 2**20
    baseline_mb = _python_baseline_mb()
    results: dict[str, Any] = {"raw_arrays_mb": raw_mb, "interpreter_with_imports_mb": baseline_mb}
    # harness-warm runs after harness-cold, so it finds the .npy cache made there
    for mode in args.modes:
        out = args.work / f"memory-{mode}.json"
        cmd = [
            sys.executable,
            __file__,
            "--work",
            str(args.work),
            "_memory-child",
            mode,
            "--dataset",
            args.dataset,
            "--size",
            str(args.size),
            "--out",
            str(out),
        ]
        subprocess.run(cmd, check=True)
        results[mode] = json.loads(out.read_text())
    lines = [
        f"raw size of the six arrays: {raw_mb:.0f} MiB;"
        f" python + numpy + scikit-learn + decathlon imported: {baseline_mb:.0f} MiB",
        "",
        "| mode | seconds | harness peak MiB | worker peak MiB |",
        "|---|---|---|---|",
    ]
    for mode in args.modes:
        r = results[mode]
        worker = f"{r['children_peak_mb']:.0f}" if mode != "numpy" else "-"
        lines.append(f"| {mode} | {r['seconds']:.2f} | {r['self_peak_mb']:.0f} | {worker} |")
    log.info("\n%s", "\n".join(lines))
    return results


def _python_baseline_mb() -> float:
    code = (
        "import numpy, sklearn.metrics, decathlon.runner, pathlib;"
        "print(pathlib.Path('/proc/self/status').read_text())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def _leftovers(run_dir: Path, flag: str) -> int:
    """Live processes still carrying the task's tag after the runner returned."""
    task = json.loads((run_dir / "tasks" / flag / "seed0" / "task.json").read_text())
    count = 0
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(TAG_VARIABLE) == task["tag"] and proc.status() != "zombie":
                count += 1
        except (psutil.Error, OSError):
            continue
    return count


def budget(args: argparse.Namespace) -> dict[str, Any]:
    """How long past its hard limit a task that ignores its budget keeps running."""
    flag, data_dir, info_path = locate(args.work, "breastmnist")
    home = args.work / "home" / "budget"
    cases = [("noop_sleeper", 5.0), ("noop_stubborn", 5.0), ("noop_stubborn", 1.0)]
    results: list[dict[str, Any]] = []
    lines = [
        "| adapter | kill_grace s | hard limit s | stopped after s | past the limit s"
        " | row elapsed_s | status | processes left |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for adapter, grace in cases:
        for limit in args.limits:
            past: list[float] = []
            stopped: list[float] = []
            for rep in range(args.reps):
                run_dir = args.work / "runs" / f"budget-{adapter}-{grace}-{limit}-{rep}"
                shutil.rmtree(run_dir, ignore_errors=True)
                timings, rows = harness_task(
                    flag,
                    data_dir,
                    info_path,
                    home,
                    run_dir,
                    adapter=adapter,
                    scale_factor=limit,
                    kill_grace=grace,
                )
                left = _leftovers(run_dir, flag)
                record = {
                    "adapter": adapter,
                    "kill_grace": grace,
                    "limit": limit,
                    "stopped_s": timings["worker"],
                    "status": rows[0]["status"],
                    "elapsed_s": float(rows[0]["elapsed_s"]),
                    "left": left,
                }
                results.append(record)
                stopped.append(timings["worker"])
                past.append(timings["worker"] - limit)
                shutil.rmtree(run_dir)
            same = [
                r
                for r in results
                if (r["adapter"], r["kill_grace"], r["limit"]) == (adapter, grace, limit)
            ]
            lines.append(
                f"| {adapter} | {grace:g} | {limit:g} | {_stats(stopped)} | {_stats(past)} |"
                f" {_stats([r['elapsed_s'] for r in same])} |"
                f" {','.join(sorted({r['status'] for r in same}))} |"
                f" {sum(r['left'] for r in same)} |"
            )
    log.info("\n%s", "\n".join(lines))
    return {"runs": results}


def quick(args: argparse.Namespace) -> dict[str, Any]:
    """The built-in ``baseline`` adapter, quick profile, three real subsets, through the CLI."""
    data_dir = real_data(args.work)
    run_dir = args.work / "runs" / "quick-baseline"
    shutil.rmtree(run_dir, ignore_errors=True)
    env = dict(os.environ, DECATHLON_HOME=str(args.work / "home" / "quick"))
    cmd = [
        sys.executable,
        "-m",
        "decathlon",
        "run",
        "--adapter",
        "baseline",
        "--profile",
        "quick",
        "--datasets",
        ",".join(REAL),
        "--data-dir",
        str(data_dir),
        "--no-download",
        "--run-dir",
        str(run_dir),
        "--no-progress",
    ]
    log.info("running: %s", " ".join(cmd))
    started = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - started
    rows = leaderboard.read(run_dir / "leaderboard.csv")
    lines = [
        f"wall time of the whole command: {wall:.1f} s",
        "",
        "| dataset | task s | val AUC | val ACC | test AUC | test ACC | status |",
        "|---|---|---|---|---|---|---|",
    ]
    for flag in REAL:
        by_split = {r["split"]: r for r in rows if r["dataset"] == flag}
        val, test = by_split["val"], by_split["test"]
        lines.append(
            f"| {flag} | {float(test['elapsed_s']):.1f} | {float(val['auc']):.3f} |"
            f" {float(val['acc']):.3f} | {float(test['auc']):.3f} | {float(test['acc']):.3f} |"
            f" {test['status']} |"
        )
    log.info("\n%s", "\n".join(lines))
    return {"wall_s": wall, "rows": rows}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/decathlon-bench"))
    parser.add_argument("--json", type=Path, help="also save the raw numbers here")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("overhead", help=overhead.__doc__)
    p.add_argument("--reps", type=int, default=5, help="warm repetitions (after one cold run)")
    p.add_argument("--datasets", nargs="+", default=[*REAL, PATHSIZE])
    modes = ["numpy", "harness-cold", "harness-warm", "harness-touch"]
    p = commands.add_parser("memory", help=memory.__doc__)
    p.add_argument("--dataset", default=PATHSIZE)
    p.add_argument("--size", type=int, default=28, choices=datasets.SIZES, help="image size")
    p.add_argument("--modes", nargs="+", default=modes, choices=modes, help="what to measure")
    p = commands.add_parser("_memory-child")
    p.add_argument("mode", choices=modes)
    p.add_argument("--dataset", default=PATHSIZE)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--out", required=True)
    p = commands.add_parser("budget", help=budget.__doc__)
    p.add_argument("--limits", type=float, nargs="+", default=[2.0, 5.0, 10.0])
    p.add_argument("--reps", type=int, default=2)
    commands.add_parser("quick", help=quick.__doc__)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("decathlon").setLevel(logging.ERROR)  # expected timeouts, no noise
    args.work.mkdir(parents=True, exist_ok=True)
    if args.command == "_memory-child":
        _memory_child(args)
        return 0
    facts = machine()
    log.info("%s", "; ".join(f"{k}: {v}" for k, v in facts.items()))
    handler = {"overhead": overhead, "memory": memory, "budget": budget, "quick": quick}
    results = handler[args.command](args)
    facts["load_average_1min_after"] = os.getloadavg()[0]
    log.info("load average (1 min) after: %.1f", facts["load_average_1min_after"])
    if args.json:
        args.json.write_text(
            json.dumps({"machine": facts, "results": results}, indent=2, default=str)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
