"""What sealing a task costs, and how far past ``--memory-mb`` a task gets, sealed or not.

``startup``: the ``noop`` adapter (constant scores, no work) on a real dataset, one task at a
time through ``Runner.run`` in this process, alternating ``--sandbox auto`` (sealed) and
``--sandbox off`` so that both see the same machine load; reports the task's worker time (the
row's ``elapsed_s``: start of the subprocess to the last process gone) and the whole task.

``memory``: the ``noop_hog`` adapter (one allocation of ``--mb`` MB, every page written) under
``--memory-mb CAP``, sealed (kernel memory cgroup) and unsealed (the sampler), each in a fresh
child process whose peak resident size, with every descendant's, comes from ``wait4``
(``ru_maxrss`` of the largest process of the tree: here the task's worker).

Run each under the shared benchmark lock::

    flock /tmp/decathlon-bench.lock .venv/bin/python benchmarks/sandbox_bench.py startup
    flock /tmp/decathlon-bench.lock .venv/bin/python benchmarks/sandbox_bench.py memory
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import noop_adapters  # noqa: E402
from harness_bench import machine, real_data  # noqa: E402

from decathlon import leaderboard, sandbox  # noqa: E402
from decathlon.plugins import make_registry  # noqa: E402
from decathlon.runner import RunConfig, Runner  # noqa: E402

log = logging.getLogger("sandbox_bench")


def one_task(
    work: Path, mode: str, *, adapter: str, flag: str, options: dict[str, Any], **config: Any
) -> tuple[float, dict[str, str]]:
    """(wall seconds of ``Runner.run``, the task's test row) for one task in a fresh run folder."""
    data_dir = real_data(work)
    run_dir = Path(tempfile.mkdtemp(prefix=f"run-{mode}-", dir=work))
    os.environ["DECATHLON_HOME"] = str(work / "home")
    cfg = RunConfig(
        adapter=adapter,
        profile="quick",
        datasets=(flag,),
        data_dir=str(data_dir),
        download=False,
        n_jobs=1,
        options=options,
        sandbox=mode,
        **config,
    )
    started = time.perf_counter()
    path = Runner(cfg, make_registry(extra_plugins=[noop_adapters])).run(run_dir / "run")
    wall = time.perf_counter() - started
    (row,) = [r for r in leaderboard.read(path) if r["dataset"] == flag and r["split"] == "test"]
    return wall, row


def startup(args: argparse.Namespace) -> dict[str, Any]:
    """Sealed against unsealed: the worker's time and the whole task, alternating."""
    if sandbox.bwrap_problem():
        raise SystemExit(f"no sandbox here: {sandbox.bwrap_problem()}")
    one_task(args.work, "auto", adapter="noop", flag=args.dataset, options={})  # warm caches
    one_task(args.work, "off", adapter="noop", flag=args.dataset, options={})
    found: dict[str, dict[str, list[float]]] = {m: {"worker": [], "task": []} for m in MODES}
    for _ in range(args.reps):
        for mode in MODES:
            wall, row = one_task(args.work, mode, adapter="noop", flag=args.dataset, options={})
            assert row["status"] == "ok" and row["sealed"] == str(mode == "auto").lower(), row
            found[mode]["worker"].append(float(row["elapsed_s"]))
            found[mode]["task"].append(wall)
    for what in ("worker", "task"):
        sealed, off = found["auto"][what], found["off"][what]
        log.info(
            "%s s, median (min) over %d: sealed %.3f (%.3f), unsealed %.3f (%.3f);"
            " sealing adds %.3f s, ratio %.2f",
            what,
            args.reps,
            statistics.median(sealed),
            min(sealed),
            statistics.median(off),
            min(off),
            statistics.median(sealed) - statistics.median(off),
            statistics.median(sealed) / statistics.median(off),
        )
    return found


MODES = ("auto", "off")


def memory(args: argparse.Namespace) -> dict[str, Any]:
    """Peak memory of the task tree under ``--memory-mb``, sealed and unsealed."""
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    for _ in range(args.reps):
        for mode in MODES:
            out = args.work / f"hog-{mode}.json"
            cmd = [sys.executable, __file__, "--work", str(args.work), "_hog", mode]
            cmd += ["--cap", str(args.cap), "--mb", str(args.mb), "--out", str(out)]
            child = subprocess.Popen(cmd)
            _, status, usage = os.wait4(child.pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, cmd
            record = json.loads(out.read_text())
            record["peak_mb"] = usage.ru_maxrss / 1024
            record["overshoot_mb"] = record["peak_mb"] - args.cap
            results[mode].append(record)
            log.info("%s: %s", mode, record)
    return results


def _hog(args: argparse.Namespace) -> None:
    wall, row = one_task(
        args.work,
        args.mode,
        adapter="noop_hog",
        flag="breastmnist",
        options={"megabytes": args.mb},
        memory_mb=args.cap,
    )
    args.out.write_text(
        json.dumps(
            {
                "status": row["status"],
                "reason": row["reason"],
                "elapsed_s": float(row["elapsed_s"]),
                "sealed": row["sealed"],
            }
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/decathlon-sandbox-bench"))
    parser.add_argument("--json", type=Path, help="also save the raw numbers here")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("startup", help=startup.__doc__)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--dataset", default="breastmnist")
    p = commands.add_parser("memory", help=memory.__doc__)
    p.add_argument("--cap", type=int, default=1000)
    p.add_argument("--mb", type=int, default=4096)
    p.add_argument("--reps", type=int, default=3)
    p = commands.add_parser("_hog")
    p.add_argument("mode", choices=MODES)
    p.add_argument("--cap", type=int, required=True)
    p.add_argument("--mb", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("decathlon").setLevel(logging.ERROR)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.command == "_hog":
        _hog(args)
        return 0
    facts = machine()
    facts["command"] = " ".join([".venv/bin/python", "benchmarks/sandbox_bench.py", *sys.argv[1:]])
    facts["sandbox"] = sandbox.Policy.resolve("auto").record()
    log.info("%s", "; ".join(f"{k}: {v}" for k, v in facts.items()))
    results = {"startup": startup, "memory": memory}[args.command](args)
    facts["load_average_1min_after"] = os.getloadavg()[0]
    log.info("load average (1 min) after: %.1f", facts["load_average_1min_after"])
    if args.json:
        args.json.write_text(json.dumps({"machine": facts, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
