"""The command line: ``python -m decathlon run | setup | list | plan | show | compare | generate``.

Exit codes: 0 when everything asked for ended well (for ``run``: every task ``ok``); 1 when a
``run`` finished with tasks that are not ``ok`` (or a ``check`` failed); 2 for expected problems
(typed :class:`~decathlon.errors.DecathlonError`, usage mistakes), one line; 130 on Ctrl-C and
143 on SIGTERM. Anything else is a bug and keeps its traceback.

Plugins add their own commands through the ``decathlon_add_commands`` hook; what a run shows
while it goes is in :mod:`decathlon.reporters`. Longer than 600 lines: the argument definitions
of every built-in command and their short handlers, kept together so that the whole command
line reads in one place.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from decathlon import budgets as budgets_module
from decathlon import datasets, environments, leaderboard, rundir, sandbox
from decathlon.errors import DataError, DecathlonError
from decathlon.plugins import Registry, add_commands, make_registry
from decathlon.reporters import PlainReporter, RichReporter, results_table
from decathlon.reporters import format_duration as _duration
from decathlon.runner import RunConfig, Runner, UnknownSettingsError

console = Console()
err_console = Console(stderr=True)


def _say(text: str) -> None:
    """Print a line that holds paths, names or reasons: text, not rich markup (a run folder
    named ``x[/b]`` made the line a MarkupError)."""
    console.print(text, markup=False)


def _csv_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _seed_list(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(part) for part in _csv_list(text))
    except ValueError:
        seeds = ()
    if not seeds or not all(budgets_module.is_seed(seed) for seed in seeds):
        raise argparse.ArgumentTypeError(
            f"seeds must be whole numbers from 0 to {budgets_module.MAX_SEED}, got '{text}'"
        )
    return seeds


def _dataset_list(text: str) -> tuple[str, ...]:
    names = _csv_list(text)
    if not names:
        raise argparse.ArgumentTypeError(
            f"no dataset named in '{text}' (leave --datasets out for all ten)"
        )
    return names


def _process_cap(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= sandbox.MOST_PROCESSES:
        raise argparse.ArgumentTypeError(
            f"expected a whole number from 0 (no cap) to {sandbox.MOST_PROCESSES} (the most the"
            f" kernel takes), got '{text}'"
        )
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got '{text}'")
    return value


def _option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"options are KEY=VALUE, got '{text}'")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _options(pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """The ``--option KEY=VALUE`` pairs as a dict; a key given twice is refused (which value was
    meant is not for the harness to guess)."""
    options: dict[str, Any] = {}
    for key, value in pairs:
        if key in options:
            raise DecathlonError(
                f"--option {key} is given twice ({options[key]!r}, then {value!r}); give it once"
            )
        options[key] = value
    return options


def _count(number: int, noun: str) -> str:
    """``1 dataset``, ``2 datasets``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value not in datasets.SIZES:
        choices = ", ".join(str(s) for s in datasets.SIZES)
        raise argparse.ArgumentTypeError(f"image size must be one of {choices}, got '{text}'")
    return value


def add_size_arg(parser: argparse.ArgumentParser, *, default: int | None = 28) -> None:
    """``--size 28|64|128|224``: the image side (MedMNIST+ publishes all four)."""
    if default is None:
        help_text = "only rows of this image size (28, 64, 128, 224)"
    else:
        help_text = f"image size: 28, 64, 128 or 224 (MedMNIST+; default {default})"
    parser.add_argument("--size", type=_size, default=default, metavar="PIXELS", help=help_text)


def _add_budget_args(parser: argparse.ArgumentParser, several: str) -> None:
    parser.add_argument(
        "--adapter", help=f"adapter name (see `list`); several comma-separated, or 'all', {several}"
    )
    add_size_arg(parser)
    parser.add_argument("--profile", default="paper", help="budget profile (default: paper)")
    parser.add_argument(
        "--datasets", type=_dataset_list, help="comma-separated subset (default: all ten)"
    )
    parser.add_argument(
        "--seeds", type=_seed_list, help="comma-separated seeds (default: the profile's)"
    )
    parser.add_argument(
        "--scale-factor", type=float, default=1.0, help="multiply every time budget"
    )
    parser.add_argument("--budgets", type=Path, help="budgets file (default: ./budgets.toml)")
    parser.add_argument(
        "--memory-mb", type=_positive_int, help="memory cap of each task's process tree"
    )
    parser.add_argument(
        "--max-processes",
        type=_process_cap,
        default=sandbox.DEFAULT_MAX_PROCESSES,
        metavar="N",
        help="cap on each task's processes and threads, by the kernel where it can"
        f" (default {sandbox.DEFAULT_MAX_PROCESSES}; 0: none)",
    )
    parser.add_argument(
        "--option",
        type=_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="adapter option (repeatable); the same for every dataset",
    )


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are expected problems too: one line, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def build_parser(registry: Registry | None = None) -> argparse.ArgumentParser:
    """The command line: the built-in commands, then each plugin's (``decathlon_add_commands``;
    ``registry`` defaults to every installed plugin)."""
    parser = _Parser(
        prog="python -m decathlon",
        description="MedMNIST Classification Decathlon: run AutoML adapters on the ten MedMNIST "
        "datasets under the published budgets and score them as the MedMNIST papers do.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run an adapter on the datasets and write a leaderboard")
    _add_budget_args(run, several="each into its own run directory")
    run.add_argument(
        "--data-dir", type=Path, help="MedMNIST files (default: $DECATHLON_DATA_DIR or ~/.medmnist)"
    )
    run.add_argument(
        "--mirror",
        help="base URL to download <flag>.npz (<flag>_<size>.npz above 28) from instead of Zenodo"
        " (config.json keeps it without credentials or query: give it again with --resume)",
    )
    download = run.add_mutually_exclusive_group()
    download.add_argument(
        "--no-download", action="store_true", help="never download; fail if a file is missing"
    )
    download.add_argument(
        "--redownload",
        action="store_true",
        help="download each dataset file of the run again; it replaces the file once checked",
    )
    run.add_argument(
        "--allow-unverified",
        action="store_true",
        help="use files whose MD5 differs from the published one (recorded in the leaderboard)",
    )
    run.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    run.add_argument(
        "--jobs", type=_positive_int, help="CPU cores given to each task (default: all)"
    )
    run.add_argument(
        "--run-dir",
        type=Path,
        help="where to write (default: runs/ADAPTER-PROFILE-SIZE-TIME); with several adapters,"
        " the folder that gets their ADAPTER-PROFILE-SIZE-TIME run directories",
    )
    run.add_argument("--resume", type=Path, metavar="RUN_DIR", help="finish an interrupted run")
    run.add_argument(
        "--retry-failed",
        action="store_true",
        help="with --resume: also rerun the error, timeout and invalid tasks (earlier attempts"
        " are kept under each task's attempts/ folder)",
    )
    run.add_argument(
        "--sandbox",
        choices=["auto", "required", "off"],
        default="auto",
        help="seal each task (own PID namespace, no access to the data or the run folder):"
        " auto (default) runs unsealed where that is impossible and says so, required refuses"
        " to, off never seals",
    )
    run.add_argument(
        "--network",
        choices=["on", "off"],
        default="on",
        help="off: no network inside the tasks (needs the sandbox)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress display")
    run.add_argument(
        "--model-dir",
        type=Path,
        help="automl_vision: score exported models offline (the option model_dir)",
    )
    cluster = run.add_mutually_exclusive_group()
    cluster.add_argument(
        "--scheduler", metavar="tcp://HOST:PORT", help="run the tasks on this Dask scheduler"
    )
    cluster.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="run the tasks on a local Dask cluster of N worker processes",
    )
    run.add_argument(
        "--retries",
        type=int,
        default=0,
        metavar="N",
        help="with --scheduler/--workers: rerun a task whose Dask worker died up to N times"
        " (default 0: a row with reason 'worker died')",
    )

    setup = commands.add_parser("setup", help="build an adapter's environment")
    setup.add_argument("adapters", nargs="+", help="adapter names, or 'all'")
    setup.add_argument("--python", help="interpreter to build the environment from")
    setup.add_argument("--force", action="store_true", help="rebuild even if ready")
    setup.add_argument(
        "--adopt",
        metavar="PYTHON",
        help="use this existing interpreter and its packages instead of building (offline GPU"
        " images, cluster modules); its packages are not checked",
    )
    setup.add_argument(
        "--installer",
        choices=list(environments.INSTALLERS),
        help="build with uv (the default) or pip (default: $DECATHLON_INSTALLER, else uv)",
    )

    lock = commands.add_parser(
        "lock",
        help="compile the lock of each adapter environment (uv pip compile, Linux x86-64)",
    )
    lock.add_argument(
        "adapters", nargs="*", default=["all"], help="adapter names, or 'all' (the default)"
    )

    commands.add_parser(
        "list", help="adapters (environment ready or not) and datasets (cached or not)"
    )

    plan = commands.add_parser("plan", help="each dataset's budget and the worst-case total")
    _add_budget_args(plan, several="one table each")

    check = commands.add_parser(
        "check", help="conformance check of an adapter on tiny generated data"
    )
    check.add_argument("adapter")
    add_size_arg(check)
    check.add_argument("--workdir", type=Path, help="where to write (default: a temporary folder)")
    check.add_argument("--scale-factor", type=float, default=1.0, help="multiply the quick budgets")
    check.add_argument("--budgets", type=Path, help="budgets file (default: ./budgets.toml)")
    check.add_argument("--option", type=_option, action="append", default=[], metavar="KEY=VALUE")

    generate = commands.add_parser(
        "generate",
        help="write generated MedMNIST-format files and their info.json (no real data needed)",
    )
    generate.add_argument("root", type=Path, help="writes ROOT/data/*.npz and ROOT/info.json")
    generate.add_argument(
        "--datasets", type=_dataset_list, help="comma-separated subset (default: all ten)"
    )
    generate.add_argument(
        "--published",
        action="store_true",
        help="each dataset's published numbers of images per split (default: 60 / 30 / 30)",
    )
    add_size_arg(generate)

    show = commands.add_parser("show", help="print one run's results")
    show.add_argument("run", type=Path, help="a run directory or leaderboard.csv")
    add_size_arg(show, default=None)

    compare = commands.add_parser(
        "compare", help="compare leaderboards with each other and with the published tables"
    )
    compare.add_argument("paths", nargs="*", type=Path, help="leaderboard CSVs or run directories")
    compare.add_argument(
        "--reference",
        choices=["v1", "v2", "plus"],
        help="add a published table (plus: MedMNIST+ at 28, 64, 128 and 224)",
    )
    add_size_arg(compare, default=None)
    compare.add_argument(
        "--datasets",
        type=_dataset_list,
        help="compare on these datasets only (table, means, ranks, statistics, reference rows)",
    )
    compare.add_argument("--out", type=Path, help="folder for files (default: ./comparison)")
    compare.add_argument(
        "--format",
        dest="formats",
        action="append",
        default=[],
        choices=["md", "markdown", "html", "csv"],
        help="also write the table as this (repeatable)",
    )
    compare.add_argument("--plots", action="store_true", help="write PNG plots")
    compare.add_argument(
        "--report",
        type=Path,
        metavar="FILE.html",
        help="write one self-contained HTML page: table, plots, statistics, provenance",
    )
    compare.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap resamples of test AUC; 0 = off"
    )
    add_commands(registry or make_registry(), commands)
    return parser


class Terminated(BaseException):
    """SIGTERM to the harness: unwinds like Ctrl-C, so the running task's tree is taken down."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
    except DecathlonError as exc:  # a plugin that cannot add its commands
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 2
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    previous = {}
    if threading.current_thread() is threading.main_thread():
        # Also when started in the background, where SIGINT arrives ignored.
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        handler = getattr(args, "handler", None) or COMMANDS[args.command]
        return handler(args)
    except DecathlonError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except (KeyboardInterrupt, Terminated) as exc:
        # Only a run has tasks to keep and a --resume (generate, compare, setup ... do not).
        err_console.print(
            "interrupted: finished tasks are kept; finish with"
            f" `run --resume {getattr(args, 'started_run', None) or 'RUN_DIR'}`"
            if args.command == "run"
            else f"interrupted: {args.command} stopped before it finished",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# ---------------------------------------------------------------------------- commands


def adapter_names(text: str | None, registry: Any) -> list[str]:
    """The adapters ``--adapter`` names: one, several comma-separated, or ``all`` (sorted).

    Every name is checked before anything runs (an unknown one is a one-line error with a
    "did you mean").
    """
    if not text:
        raise DecathlonError("--adapter is required (see `python -m decathlon list`)")
    names = _csv_list(text)
    if names == ("all",):
        return sorted(registry.adapters)
    for name in names:
        registry.get(name)
    return list(dict.fromkeys(names))


def _config(args: argparse.Namespace, adapter: str | None = None) -> RunConfig:
    if not args.adapter:
        raise DecathlonError("--adapter is required (see `python -m decathlon list`)")
    config = RunConfig(
        adapter=adapter or args.adapter,
        profile=args.profile,
        size=args.size,
        datasets=args.datasets,
        seeds=args.seeds,
        scale_factor=args.scale_factor,
        budgets_path=str(Path(args.budgets).expanduser().resolve()) if args.budgets else None,
        memory_mb=args.memory_mb,
        max_processes=args.max_processes,
        options=_options(args.option),
    )
    if getattr(args, "model_dir", None):
        config.options["model_dir"] = str(args.model_dir.resolve())
    if getattr(args, "data_dir", None) is not None:  # by its full name, as run_dir: see resume
        config.data_dir = str(datasets.full_data_dir(args.data_dir))
    if getattr(args, "mirror", None) is not None:
        config.mirror = str(args.mirror)
    if getattr(args, "no_download", False):
        config.download = False
    if getattr(args, "redownload", False):
        config.redownload = True
    if getattr(args, "allow_unverified", False):
        config.allow_unverified = True
    if getattr(args, "device", None):
        config.device = args.device
    if getattr(args, "jobs", None):
        cores = os.cpu_count() or 1
        if args.jobs > cores and not getattr(args, "scheduler", None):
            # Libraries told to start that many threads fail in the task (joblib, OpenMP).
            raise DecathlonError(
                f"--jobs {args.jobs}: this machine has {cores} CPU cores (more are for a Dask"
                " scheduler's bigger workers, with --scheduler)"
            )
        config.n_jobs = args.jobs
    config.sandbox = getattr(args, "sandbox", config.sandbox)
    config.network = getattr(args, "network", config.network)
    return config


def cmd_run(args: argparse.Namespace) -> int:
    registry = make_registry()
    if args.retry_failed and not args.resume:
        raise DecathlonError(
            "--retry-failed needs --resume RUN_DIR (the run whose failures to rerun)"
        )
    if args.resume:
        _refuse_changes_on_resume(args)
        config = _read_config(args.resume)
        if config.adapter not in registry.adapters:  # not a name the user typed: no "did you mean"
            raise DecathlonError(
                f"{rundir.config_path(args.resume)}: the run's adapter '{config.adapter}' is not"
                " registered now (its plugin uninstalled?); install it again to finish the run"
                " (`python -m decathlon list` shows what is registered)"
            )
        config.redownload = args.redownload  # a request of this invocation, not of the run
        if args.mirror is not None:  # config.json keeps it without credentials or query
            config.mirror, config.mirror_withheld = str(args.mirror), False
        run_dir, resume = args.resume, True
    else:
        names = adapter_names(args.adapter, registry)
        if len(names) > 1:
            return _run_several(args, registry, names)
        config = _config(args, names[0])
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = f"{config.adapter}-{config.profile}-{config.size}-{stamp}"
        run_dir = args.run_dir or Path("runs") / name
        resume = False
    reporter = None if args.no_progress or not console.is_terminal else RichReporter(console)
    executor = _dask_executor(args, config)
    if executor is not None and args.workers and not args.resume and not args.jobs:
        from decathlon.distributed import local_jobs

        config.n_jobs = local_jobs(args.workers)
    run_dir = run_dir.resolve()  # the worker runs in another folder
    args.started_run = run_dir  # what Ctrl-C's line tells to resume
    runner = Runner(config, registry, reporter=reporter or PlainReporter(console))
    path = runner.run(run_dir, resume=resume, executor=executor, retry_failed=args.retry_failed)
    rows = leaderboard.read(path)
    console.print(results_table(rows, title=escape(str(path))))
    for row in rows:
        if row["dataset"] == leaderboard.SUMMARY_DATASET:
            if row["status"] == "ok":
                _say(
                    f"decathlon mean ({row['adapter']}, seed {row['seed']}): "
                    f"AUC {float(row['auc']):.3f}  ACC {float(row['acc']):.3f}"
                )
            else:
                _say(
                    f"decathlon mean ({row['adapter']}, seed {row['seed']}): "
                    f"incomplete, {row['reason']}"
                )
    _say(f"leaderboard: {path}")
    return _say_not_ok([path])


def _dask_executor(args: argparse.Namespace, config: RunConfig) -> Any:
    """The Dask executor that ``--scheduler`` or ``--workers`` asks for (None without them), once
    what cannot go with it is refused in one line, before anything is written."""
    if not (args.scheduler or args.workers is not None):
        return None
    from decathlon.distributed import DaskExecutor

    if args.scheduler and not args.scheduler.startswith("tls://"):
        if config.sandbox != "off" and config.network == "on":
            # Its workers run what they are sent unsealed, with the harness's view.
            raise DecathlonError(
                f"--scheduler {args.scheduler}: a task with the network on could reach a"
                " plain-TCP scheduler and run code on its workers outside the sandbox; use"
                " a tls:// scheduler (Dask's distributed.comm.tls settings) or --network off"
            )
    if args.redownload:
        raise DecathlonError(
            "--redownload replaces files where the run starts, not on Dask workers; run"
            " without --scheduler/--workers, or delete the files on the workers"
        )
    return DaskExecutor(args.scheduler, workers=args.workers, retries=args.retries)


def _say_not_ok(paths: Sequence[Path]) -> int:
    """0 when every task of these leaderboards ended ``ok``; else 1, after a last line (on
    stderr) that says how many did not and where their reasons are."""
    tests = 0
    failed: Counter[str] = Counter()
    for path in paths:
        for row in leaderboard.read(path):
            if row["split"] == "test" and row["dataset"] != leaderboard.SUMMARY_DATASET:
                tests += 1
                if row["status"] != "ok":
                    failed[row["status"]] += 1
    if not failed:
        return 0
    statuses = ", ".join(f"{n} {status}" for status, n in sorted(failed.items()))
    where = (
        f"of {paths[0]} (`python -m decathlon show {paths[0].parent}`)"
        if len(paths) == 1
        else "of each run's leaderboard.csv (`python -m decathlon show RUN_DIR`)"
    )
    err_console.print(
        f"{sum(failed.values())} of {_count(tests, 'task')} did not end ok ({statuses}); the"
        f" reasons are in the reason column {where}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return 1


def _run_several(args: argparse.Namespace, registry: Any, names: list[str]) -> int:
    """``run --adapter a,b,c``: each adapter into its own run directory, one after another,
    in one progress display; then the comparison table of the runs.

    Everything is checked (adapters, budgets, options, free run directories) before the first
    task starts. An adapter that stops with an expected problem (its environment will not
    build, say) is reported in one line and the others still run; the exit code is then 2,
    else 1 when a task is not ``ok`` (as for one adapter), else 0.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    parent = args.run_dir or Path("runs")
    live = not args.no_progress and console.is_terminal
    progress = RichReporter.make_progress(console) if live else None
    # Once for all the adapters (their sandbox and network are the same flags): a bad
    # --scheduler is one line, said once, before anything is written.
    executor = _dask_executor(args, _config(args, names[0]))
    planned: list[tuple[Runner, Path]] = []
    for name in names:
        config = _config(args, name)
        if args.workers and not args.jobs:
            from decathlon.distributed import local_jobs

            config.n_jobs = local_jobs(args.workers)
        run_dir = (parent / f"{name}-{config.profile}-{config.size}-{stamp}").resolve()
        if rundir.config_path(run_dir).exists():
            raise DecathlonError(f"{run_dir} already holds a run; choose another --run-dir")
        reporter = (
            RichReporter(console, progress=progress, label=name)
            if progress is not None
            else PlainReporter(console, prefix=f"{name} ")
        )
        runner = Runner(config, registry, reporter=reporter)
        runner.plan()  # budgets resolve for every dataset, or a one-line error now
        planned.append((runner, run_dir))
    _say(
        f"{len(names)} adapters, one run directory each: "
        + ", ".join(str(run_dir) for _, run_dir in planned)
    )
    finished: list[Path] = []
    failed = False
    if progress is not None:
        progress.start()
    try:
        for runner, run_dir in planned:
            try:
                args.started_run = run_dir
                runner.run(run_dir, executor=executor)
            except DecathlonError as exc:
                failed = True
                err_console.print(
                    f"error: {runner.adapter.name}: {exc}",
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )
                continue
            finished.append(run_dir)
    finally:
        if progress is not None:
            progress.stop()
    if finished:
        from decathlon.compare import compare_command

        flags = planned[0][0].flags()
        print(
            compare_command(
                finished,
                bootstrap=0,
                color=console.is_terminal,
                width=console.width,
                datasets=flags if len(flags) < len(datasets.DECATHLON_FLAGS) else None,
            ),
            end="",
        )
    for run_dir in finished:
        _say(f"leaderboard: {rundir.leaderboard_path(run_dir)}")
    not_ok = _say_not_ok([rundir.leaderboard_path(run_dir) for run_dir in finished])
    return 2 if failed else not_ok


#: What ``run --resume`` may be told: how to carry on, not what the run is.
RESUME_FLAGS = frozenset(
    {"command", "verbose", "func", "resume", "retry_failed", "redownload", "no_progress"}
    | {"scheduler", "workers", "retries", "mirror"}
)


def _refuse_changes_on_resume(args: argparse.Namespace) -> None:
    """``--resume`` finishes the run its ``config.json`` describes: a flag that would change it
    (``--sandbox required``, ``--jobs``, ``--option`` ...) is refused in one line rather than
    silently ignored."""
    defaults = vars(build_parser().parse_args(["run"]))
    changed = sorted(
        name
        for name, value in vars(args).items()
        if name not in RESUME_FLAGS and name in defaults and value != defaults[name]
    )
    if changed:
        flags = ", ".join("--" + name.replace("_", "-") for name in changed)
        raise DecathlonError(
            f"--resume finishes the run as {args.resume}/config.json describes it; {flags} would"
            " change it: leave it out, or start a new run"
        )


def _read_config(run_dir: Path) -> RunConfig:
    """The configuration of the run to resume, or one line on why there is none."""
    path = rundir.config_path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise DecathlonError(f"{run_dir} is a file, not a run folder; pass the run's folder")
    try:
        record = rundir.config_record(json.loads(path.read_text()))
    except FileNotFoundError:
        raise DecathlonError(f"{run_dir} holds no run to resume (no config.json)") from None
    except OSError as exc:  # a folder by that name, no permission: not a question of JSON
        raise DecathlonError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except (ValueError, RecursionError) as exc:
        raise DecathlonError(f"{path}: not valid JSON ({exc})") from None
    try:
        if record is None:
            raise ValueError("no 'config' record")
        return RunConfig.from_json(record["config"])
    except UnknownSettingsError as exc:
        raise DecathlonError(f"{path}: {exc}; resume it with that version") from None
    except (TypeError, ValueError) as exc:
        raise DecathlonError(f"{path}: not a run's configuration ({exc})") from None


def cmd_setup(args: argparse.Namespace) -> int:
    registry = make_registry()
    names = sorted(registry.adapters) if args.adapters == ["all"] else args.adapters
    for name in names:
        adapter = registry.get(name)
        if adapter.environment is None:
            _say(f"{name}: runs in the harness's environment; nothing to build")
            continue
        if args.adopt:
            python = environments.adopt(adapter, args.adopt)
        else:
            python = environments.build(
                adapter,
                python=args.python,
                force=args.force,
                installer=args.installer,
                on_step=_say,
            )
        _say(f"{name}: ready ({python})")
    return 0


def cmd_lock(args: argparse.Namespace) -> int:
    registry = make_registry()
    names = sorted(registry.adapters) if args.adapters in ([], ["all"]) else args.adapters
    adapters = [registry.get(name) for name in names]
    for adapter in adapters:
        if adapter.environment is None:
            _say(f"{adapter.name}: runs in the harness's environment; nothing to lock")
    if all(adapter.environment is None for adapter in adapters):
        return 0
    written = environments.lock(adapters, on_step=_say)
    changed = sum(1 for _, was_changed in written if was_changed)
    console.print(f"{len(written)} lock(s), {changed} changed")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    registry = make_registry()
    table = Table(title="Adapters")
    for column in ("adapter", "environment", "plugin", "description"):
        table.add_column(column)
    for name in sorted(registry.adapters):
        adapter = registry.adapters[name]
        cells = (name, environments.describe(adapter), registry.origin[name], adapter.description)
        table.add_row(*(escape(cell) for cell in cells))
    console.print(table)
    catalog = datasets.Catalog.load()
    data_dir = datasets.default_data_dir()
    table = Table(title=escape(f"Datasets in {data_dir}"))
    for column in ("dataset", "task", "channels", "classes", "images", "cached"):
        table.add_column(column)
    for flag in catalog.flags:
        info = catalog.info(flag)
        cached = "yes" if datasets.is_cached(catalog, flag, data_dir) else "no"
        table.add_row(
            flag, info.task, str(info.n_channels), str(info.n_classes), f"{info.scale:,}", cached
        )
    console.print(table)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    registry = make_registry()
    for name in adapter_names(args.adapter, registry):
        _plan(Runner(_config(args, name), registry))
    return 0


def _plan(runner: Runner) -> None:
    """One adapter's table of budgets and its worst-case total."""
    tasks = runner.plan()
    table = Table(
        title=escape(
            f"{runner.adapter.name}, profile '{runner.config.profile}',"
            f" {runner.config.size}x{runner.config.size} images"
            f" (scale factor {runner.config.scale_factor:g}) from {runner.budgets.path}"
        )
    )
    for column in ("dataset", "seed", "images", "tier", "budget", "hard limit"):
        table.add_column(column, justify="right" if column in ("images", "tier") else "left")
    for task in tasks:
        table.add_row(
            task.dataset.flag,
            str(task.seed),
            f"{task.dataset.scale:,}",
            ("small", "medium", "large")[task.budget.tier],
            task.budget.describe(),
            _duration(task.budget.hard_limit_seconds),
        )
    console.print(table)
    worst = budgets_module.worst_case_seconds(t.budget for t in tasks)
    tasks_text = _count(len(tasks), "task")
    console.print(f"{tasks_text}; worst case (every task at its hard limit): {_duration(worst)}")


def cmd_generate(args: argparse.Namespace) -> int:
    """Generated files with a learnable signal (:mod:`decathlon.synthetic`); run on them with
    ``DECATHLON_INFO=ROOT/info.json --data-dir ROOT/data``."""
    from decathlon import synthetic

    catalog = datasets.Catalog.load(datasets.BUNDLED_INFO)
    flags = list(dict.fromkeys(catalog.resolve(name) for name in args.datasets or catalog.flags))
    found = [args.root] if args.root.exists() and not args.root.is_dir() else []
    if args.root.is_dir():
        # A generate killed (SIGKILL) while writing left its hidden half-written file, and with
        # it an otherwise empty data folder: neither makes the folder one to refuse.
        synthetic.remove_stale_temporaries(args.root)
        data = args.root / "data"
        empty_data = data.is_dir() and not any(data.iterdir())
        found = [p for p in args.root.iterdir() if not (p == data and empty_data)]
    if found:
        # Never over real files: generate writes into a new or empty folder only.
        raise DataError(f"{args.root} is not an empty folder: generate writes only into a new one")
    sizes = synthetic.PUBLISHED if args.published else None
    try:
        data_dir, info = synthetic.write_catalog(args.root, flags, sizes, args.size)
    except OSError as exc:
        # What it wrote makes the folder one generate refuses: say so, rather than leave the
        # next try to find it out.
        left = args.root.is_dir() and any(args.root.iterdir())
        hint = f"; what was written is left in {args.root}: delete it to generate again"
        raise DataError(
            f"cannot write into {args.root}: {exc.strerror or exc}" + (hint if left else "")
        ) from None
    print(f"{_count(len(flags), 'dataset')} in {data_dir}; run with DECATHLON_INFO={info}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from decathlon.compare import show_command

    print(show_command(args.run, color=console.is_terminal, size=args.size), end="")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from decathlon.compare import compare_command

    text = compare_command(
        args.paths,
        args.reference,
        args.out,
        args.formats,
        args.plots,
        bootstrap=args.bootstrap,
        color=console.is_terminal,
        datasets=args.datasets,
        report=args.report,
        size=args.size,
    )
    print(text, end="")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    import tempfile

    from decathlon.conformance import check_adapter

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix=f"decathlon-check-{args.adapter}-"))
    checks = check_adapter(
        args.adapter,
        workdir,
        scale_factor=args.scale_factor,
        options=_options(args.option),
        budgets_path=args.budgets,
        size=args.size,
    )
    for check in checks:
        mark = "[green]pass[/green]" if check.passed else "[red]FAIL[/red]"
        console.print(f"{mark} {escape(check.name)}: {escape(check.detail)}")
    failed = sum(not c.passed for c in checks)
    _say(f"{len(checks) - failed} passed, {failed} failed (files in {workdir})")
    return 1 if failed else 0


COMMANDS = {
    "run": cmd_run,
    "setup": cmd_setup,
    "lock": cmd_lock,
    "list": cmd_list,
    "plan": cmd_plan,
    "show": cmd_show,
    "generate": cmd_generate,
    "check": cmd_check,
    "compare": cmd_compare,
}
