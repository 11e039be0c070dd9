"""AutoGluon and FLAML beside auto-sklearn and the baseline, and how closely each keeps its budget.

Two measurements, through the real harness (each adapter in its own environment and worker
subprocess, hard limit enforced):

``compare OUT``: the four adapters (``baseline``, ``autosklearn``, ``autogluon``, ``flaml``) on
the three real subsets with the quick profile (the same budgets: 120 s each for the three
time-budgeted ones, a hard limit only for the baseline), one run directory per adapter under
``OUT/runs/``, tasks interleaved dataset by dataset so that the four see the same machine; then
``python -m decathlon compare`` over the four leaderboards (``OUT/comparison/``).

``budget OUT``: ``autogluon`` and ``flaml`` on the real breastmnist with soft budgets of 60, 120
and 300 s (hard limit = budget + 120 s): the task's wall time, the overshoot against the budget,
the search time the adapter gave the library and what the library reported.

Every task runs holding ``flock(2)`` on ``/tmp/decathlon-bench.lock`` (the lock that
``flock /tmp/decathlon-bench.lock CMD`` takes), so it never overlaps another engineer's measured
task; ``uptime`` is recorded before and after each task::

    .venv/bin/python benchmarks/automl_bench.py compare OUT [--data-dir ../shared/data/medmnist]
    .venv/bin/python benchmarks/automl_bench.py budget OUT [--budgets 60 120 300]

Each writes ``OUT/summary.json`` and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from decathlon import environments, leaderboard  # noqa: E402
from decathlon.plugins import make_registry  # noqa: E402
from decathlon.runner import PlannedTask, RunConfig, Runner  # noqa: E402

log = logging.getLogger("automl_bench")

LOCK = Path("/tmp/decathlon-bench.lock")
ADAPTERS = ("baseline", "autosklearn", "autogluon", "flaml")
DATASETS = ("breastmnist", "pneumoniamnist", "retinamnist")
GRACE_SECONDS = 120


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def commit() -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    )
    return out.stdout.strip()


@contextlib.contextmanager
def bench_lock() -> Iterator[float]:
    """Hold the shared measurement lock; yields the seconds spent waiting for it."""
    started = time.monotonic()
    with open(LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield time.monotonic() - started
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class LockedTasks:
    """An executor running only ``flag``'s tasks, each inside :func:`bench_lock`."""

    def __init__(self, flag: str, record: list[dict[str, Any]]) -> None:
        self.flag = flag
        self.record = record

    def run(self, runner: Runner, run_dir: Path, tasks: Sequence[PlannedTask]) -> None:
        for task in tasks:
            if task.dataset.flag != self.flag:
                continue
            with bench_lock() as waited:
                before = uptime()
                started = time.monotonic()
                rows = runner.execute(run_dir, task)
                wall = time.monotonic() - started
                after = uptime()
            runner.finish_task(run_dir, task, rows)
            self.record.append(
                {
                    "adapter": runner.adapter.name,
                    "dataset": task.dataset.flag,
                    "lock_wait_s": round(waited, 1),
                    "execute_s": round(wall, 1),
                    "uptime_before": before,
                    "uptime_after": after,
                }
            )
            log.info("%s", json.dumps(self.record[-1]))


def _data_links(out: Path, data_dir: Path, flags: Sequence[str]) -> Path:
    links = out / "data"
    links.mkdir(parents=True, exist_ok=True)
    for flag in flags:
        link = links / f"{flag}.npz"
        if not link.exists():
            link.symlink_to(data_dir.resolve() / f"{flag}.npz")
    return links


def _test_rows(path: Path) -> list[dict[str, Any]]:
    return [
        r
        for r in leaderboard.read(path)
        if r["split"] == "test" and r["dataset"] != leaderboard.SUMMARY_DATASET
    ]


def compare(out: Path, data_dir: Path, n_jobs: int) -> dict[str, Any]:
    registry = make_registry()
    links = _data_links(out, data_dir, DATASETS)
    runners = {
        name: Runner(
            RunConfig(
                adapter=name,
                profile="quick",
                datasets=DATASETS,
                data_dir=str(links),
                download=False,
                n_jobs=n_jobs,
            ),
            registry,
        )
        for name in ADAPTERS
    }
    for runner in runners.values():
        environments.build(runner.adapter)
    record: list[dict[str, Any]] = []
    run_dirs = {name: out / "runs" / f"{name}-quick" for name in ADAPTERS}
    for i, flag in enumerate(DATASETS):
        for name, runner in runners.items():
            runner.run(run_dirs[name], resume=i > 0, executor=LockedTasks(flag, record))
    rows = []
    for name in ADAPTERS:
        for r in _test_rows(run_dirs[name] / "leaderboard.csv"):
            rows.append(
                {
                    "adapter": name,
                    "dataset": r["dataset"],
                    "status": r["status"],
                    "budget": r["budget"],
                    "hard_limit_s": r["hard_limit_s"],
                    "elapsed_s": float(r["elapsed_s"]),
                    "auc": float(r["auc"]) if r.get("auc") else None,
                    "acc": float(r["acc"]) if r.get("acc") else None,
                    "reason": r["reason"],
                    "notes": json.loads(r["notes"]) if r.get("notes") else {},
                }
            )
    comparison = out / "comparison"
    cmd = [
        sys.executable,
        "-m",
        "decathlon",
        "compare",
        *[str(run_dirs[n]) for n in ADAPTERS],
        "--datasets",
        ",".join(DATASETS),
        "--format",
        "md",
        "--format",
        "csv",
        "--out",
        str(comparison),
    ]
    shown = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    (out / "compare.txt").write_text(shown.stdout + shown.stderr)
    return {"tasks": record, "results": rows, "compare_command": " ".join(cmd[1:])}


def _budgets_file(path: Path, adapter: str, seconds: float) -> Path:
    path.write_text(
        "[profiles.bench]\nseeds = [0]\n"
        f"[bench.{adapter}]\ntime_seconds = {seconds}\ngrace_seconds = {GRACE_SECONDS}\n"
    )
    return path


def budget(
    out: Path, data_dir: Path, n_jobs: int, budgets: Sequence[float], adapters: Sequence[str]
) -> dict[str, Any]:
    registry = make_registry()
    links = _data_links(out, data_dir, ("breastmnist",))
    results: list[dict[str, Any]] = []
    for seconds in budgets:
        for name in adapters:
            work = out / f"{name}-{seconds:g}"
            work.mkdir(parents=True)
            config = RunConfig(
                adapter=name,
                profile="bench",
                datasets=("breastmnist",),
                data_dir=str(links),
                download=False,
                budgets_path=str(_budgets_file(work / "budgets.toml", name, seconds)),
                n_jobs=n_jobs,
            )
            runner = Runner(config, registry)
            environments.build(runner.adapter)
            record: list[dict[str, Any]] = []
            path = runner.run(work / "run", executor=LockedTasks("breastmnist", record))
            test = _test_rows(path)[0]
            notes = json.loads(test["notes"]) if test.get("notes") else {}
            elapsed = float(test["elapsed_s"])
            results.append(
                {
                    "adapter": name,
                    "budget_s": seconds,
                    "status": test["status"],
                    "reason": test["reason"],
                    "elapsed_s": elapsed,
                    "overshoot_s": round(elapsed - seconds, 2),
                    "search_s": notes.get("time_limit", notes.get("time_budget")),
                    "fit_s": notes.get("fit_s"),
                    "adapter_s": notes.get("adapter_s"),
                    "models": notes.get("models_trained", notes.get("trials")),
                    "chosen": notes.get("best_model", notes.get("best_estimator")),
                    "test_auc": float(test["auc"]) if test.get("auc") else None,
                    **record[0],
                }
            )
            log.info("%s", json.dumps(results[-1]))
    return {"results": results}


def compare_table(summary: dict[str, Any]) -> str:
    lines = [
        "| adapter | dataset | budget | task wall s | status | test AUC | test ACC | chosen |",
        "|" + " --- |" * 8,
    ]
    for r in summary["results"]:
        notes = r["notes"]
        chosen = notes.get("best_model") or notes.get("best_estimator") or ""
        if r["adapter"] == "autosklearn" and notes:
            chosen = f"ensemble of {notes.get('ensemble_size')}"
        auc = f"{r['auc']:.3f}" if r["auc"] is not None else "-"
        acc = f"{r['acc']:.3f}" if r["acc"] is not None else "-"
        lines.append(
            f"| {r['adapter']} | {r['dataset']} | {r['budget']} | {r['elapsed_s']:.1f}"
            f" | {r['status']} | {auc} | {acc} | {chosen} |"
        )
    return "\n".join(lines)


def budget_table(summary: dict[str, Any]) -> str:
    lines = [
        "| adapter | budget s | search s | fit s | task wall s | overshoot s | models"
        " | chosen | test AUC | status | uptime before |",
        "|" + " --- |" * 11,
    ]
    for r in summary["results"]:
        auc = f"{r['test_auc']:.3f}" if r["test_auc"] is not None else "-"
        load = r["uptime_before"].split("load average:")[-1].strip()
        lines.append(
            f"| {r['adapter']} | {r['budget_s']:g} | {r['search_s']} | {r['fit_s']}"
            f" | {r['elapsed_s']:.1f} | {r['overshoot_s']:+.1f} | {r['models']} | {r['chosen']}"
            f" | {auc} | {r['status']} | {load} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["compare", "budget"])
    parser.add_argument("out", type=Path, help="a new folder for the runs")
    parser.add_argument(
        "--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "medmnist"
    )
    parser.add_argument("--n-jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--budgets", type=float, nargs="+", default=[60, 120, 300])
    parser.add_argument("--adapters", nargs="+", default=["autogluon", "flaml"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    if args.what == "compare":
        summary = compare(args.out, args.data_dir, args.n_jobs)
        table = compare_table(summary)
    else:
        summary = budget(args.out, args.data_dir, args.n_jobs, args.budgets, args.adapters)
        table = budget_table(summary)
    summary.update(
        {
            "commit": commit(),
            "started": started,
            "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "cpu_count": os.cpu_count(),
            "n_jobs": args.n_jobs,
            "command": " ".join(sys.argv),
        }
    )
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    sys.stdout.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
