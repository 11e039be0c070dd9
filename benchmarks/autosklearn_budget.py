"""How closely auto-sklearn keeps to its time budget, through the real harness.

Runs the ``autosklearn`` adapter on the real breastmnist once per soft budget (default 30, 60
and 120 s), each as its own harness run (worker subprocess in the adapter's Python 3.9
environment, hard limit = budget + 120 s), and reports per budget: the task's wall time as the
harness measured it (``elapsed_s`` of the leaderboard: worker start, data loading, auto-sklearn's
fit, prediction), the part spent in ``fit``, the overshoot against the budget, and the test AUC.
It also records the machine's load average, since auto-sklearn's pace depends on free cores::

    .venv/bin/python benchmarks/autosklearn_budget.py OUT_DIR [--budgets 30 60 120]
        [--data-dir ../shared/data/medmnist] [--n-jobs 2]

Writes OUT_DIR/summary.json and prints a Markdown table. Builds the environment on first use.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from decathlon import leaderboard  # noqa: E402
from decathlon.plugins import make_registry  # noqa: E402
from decathlon.runner import RunConfig, Runner  # noqa: E402

log = logging.getLogger("autosklearn_budget")
GRACE_SECONDS = 120


def _budgets_file(path: Path, seconds: float) -> Path:
    path.write_text(
        "[profiles.bench]\nseeds = [0]\n"
        f"[bench.autosklearn]\ntime_seconds = {seconds}\ngrace_seconds = {GRACE_SECONDS}\n"
    )
    return path


def measure(out: Path, data_dir: Path, seconds: float, n_jobs: int) -> dict[str, Any]:
    """One harness run of the adapter on breastmnist with a soft budget of ``seconds``."""
    work = out / f"budget{seconds:g}"
    work.mkdir(parents=True)
    links = work / "data"
    links.mkdir()
    (links / "breastmnist.npz").symlink_to(data_dir.resolve() / "breastmnist.npz")
    config = RunConfig(
        adapter="autosklearn",
        profile="bench",
        datasets=("breastmnist",),
        data_dir=str(links),
        download=False,
        budgets_path=str(_budgets_file(work / "budgets.toml", seconds)),
        n_jobs=n_jobs,
    )
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    path = Runner(config, make_registry()).run(work / "run")
    wall = time.monotonic() - started
    test = next(r for r in leaderboard.read(path) if r["split"] == "test")
    notes = json.loads(test["notes"]) if test.get("notes") else {}
    elapsed = float(test["elapsed_s"])
    return {
        "budget_s": seconds,
        "status": test["status"],
        "reason": test["reason"],
        "elapsed_s": elapsed,
        "overshoot_s": round(elapsed - seconds, 2),
        "fit_s": notes.get("fit_s"),
        "adapter_s": notes.get("adapter_s"),
        "time_left_for_this_task": notes.get("time_left_for_this_task"),
        "per_run_time_limit": notes.get("per_run_time_limit"),
        "models_evaluated": notes.get("models_evaluated"),
        "models_succeeded": notes.get("models_succeeded"),
        "ensemble_size": notes.get("ensemble_size"),
        "test_auc": float(test["auc"]) if test.get("auc") else None,
        "harness_wall_s": round(wall, 2),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| budget s | search s | per model s | task wall s | fit s | overshoot s | models ok/run"
        " | ensemble | test AUC | status | load 1 min |"
    )
    lines = [head, "|" + " --- |" * 11]
    for r in results:
        auc = f"{r['test_auc']:.3f}" if r["test_auc"] is not None else "-"
        lines.append(
            f"| {r['budget_s']:g} | {r['time_left_for_this_task']} | {r['per_run_time_limit']}"
            f" | {r['elapsed_s']:.1f} | {r['fit_s']} | {r['overshoot_s']:+.1f}"
            f" | {r['models_succeeded']}/{r['models_evaluated']} | {r['ensemble_size']}"
            f" | {auc} | {r['status']} | {r['load_before']:.1f} -> {r['load_after']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="an empty or new folder for the runs")
    parser.add_argument("--budgets", type=float, nargs="+", default=[30, 60, 120])
    parser.add_argument(
        "--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "medmnist"
    )
    parser.add_argument("--n-jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for seconds in args.budgets:
        result = measure(args.out, args.data_dir, seconds, args.n_jobs)
        log.info("%s", json.dumps(result))
        results.append(result)
    summary = {
        "results": results,
        "cpu_count": os.cpu_count(),
        "n_jobs": args.n_jobs,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    sys.stdout.write(table(results) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
