"""The runner with adapters that misbehave on purpose: statuses, reasons, no surviving process.

Every task ends as rows (one per split) whatever the adapter does, other datasets are never
affected, and after a task no process of its tree is left, grandchildren included.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import misbehaving
import numpy as np
import psutil
import pytest
from helpers import PLUGIN_FILE, TinyData

from decathlon import cgroups, datasets, enforcement, environments, leaderboard, metrics, rundir
from decathlon.datasets import file_md5
from decathlon.plugins import make_registry
from decathlon.runner import RunConfig, Runner
from decathlon.synthetic import make_medmnist_npz

KILL_GRACE = 1.0


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the memory-mapped array copies out of the user's cache."""
    monkeypatch.setenv("DECATHLON_HOME", str(tmp_path / "home"))


def run(
    adapter: str,
    data: TinyData,
    run_dir: Path,
    datasets: tuple[str, ...] = ("breastmnist",),
    *,
    data_dir: Path | None = None,
    info_path: Path | None = None,
    registry: Any = None,
    **config: Any,
) -> list[dict[str, str]]:
    """Run one misbehaving adapter in-process (or one of ``registry``); return the leaderboard's
    rows."""
    registry = registry or make_registry(extra_plugins=[misbehaving])
    cfg = RunConfig(
        adapter=adapter,
        profile="quick",
        datasets=datasets,
        seeds=config.pop("seeds", (0,)),
        data_dir=str(data_dir or data.data_dir),
        download=False,
        info_path=str(info_path or data.info_path),
        n_jobs=1,
        kill_grace=KILL_GRACE,
        **config,
    )
    path = Runner(cfg, registry).run(run_dir)
    assert path == run_dir / "leaderboard.csv"
    return leaderboard.read(path)


def task_rows(rows: list[dict[str, str]], dataset: str) -> dict[str, dict[str, str]]:
    """The rows of one dataset (seed 0), by split; fails on a missing or duplicated split."""
    found = [r for r in rows if r["dataset"] == dataset and r["seed"] == "0"]
    by_split = {r["split"]: r for r in found}
    assert sorted(r["split"] for r in found) == ["test", "train", "val"], found
    return by_split


def assert_each_row_once(rows: list[dict[str, str]], datasets: tuple[str, ...], seeds=(0,)):
    counts = Counter(
        (r["dataset"], r["seed"], r["split"]) for r in rows if r["dataset"] != "decathlon"
    )
    expected = {(d, str(s), sp) for d in datasets for s in seeds for sp in leaderboard.SPLITS}
    assert set(counts) == expected
    assert set(counts.values()) == {1}


def assert_tree_gone(task_dir: Path) -> None:
    """No process carries the task's tag, and every pid the adapter recorded is gone."""
    tag = misbehaving.task_tag(task_dir)
    assert misbehaving.tagged_processes(tag) == []
    assert misbehaving.live_pids(misbehaving.recorded_pids(task_dir)) == []


def all_status(split_rows: dict[str, dict[str, str]], status: str) -> None:
    assert {r["status"] for r in split_rows.values()} == {status}, split_rows


# ---------------------------------------------------------------------------- budgets enforced


@pytest.mark.parametrize("ignore_sigterm", [False, True])
def test_sleeper_is_stopped_at_its_hard_limit(
    tiny_catalog: TinyData, tmp_path: Path, ignore_sigterm: bool
) -> None:
    started = time.monotonic()
    rows = run(
        "mis_sleeper", tiny_catalog, tmp_path / "run", options={"ignore_sigterm": ignore_sigterm}
    )
    wall = time.monotonic() - started
    split_rows = task_rows(rows, "breastmnist")
    all_status(split_rows, "timeout")
    test = split_rows["test"]
    assert "hard limit of 3 s" in test["reason"]
    elapsed = float(test["elapsed_s"])
    # Generous bounds: stopped at the limit, not long after it (no tight timing in tests).
    assert misbehaving.SHORT_LIMIT <= elapsed < misbehaving.SHORT_LIMIT + 20
    assert wall < 60
    task_dir = tmp_path / "run" / "tasks" / "breastmnist" / "seed0"
    assert "killed at the hard limit" in (task_dir / "log.txt").read_text()
    assert_tree_gone(task_dir)


@pytest.mark.parametrize("mode", ["sleep", "setsid", "daemon"])
def test_grandchildren_are_killed_at_the_hard_limit(
    tiny_catalog: TinyData, tmp_path: Path, mode: str
) -> None:
    """A grandchild that sleeps, one that leaves the process group and ignores SIGTERM, and one
    that double-forks away from the worker: none survives the task."""
    rows = run("mis_spawner", tiny_catalog, tmp_path / "run", options={"mode": mode})
    all_status(task_rows(rows, "breastmnist"), "timeout")
    task_dir = tmp_path / "run" / "tasks" / "breastmnist" / "seed0"
    pids = misbehaving.recorded_pids(task_dir)
    assert len(pids) >= 3, "the grandchild never started"
    assert_tree_gone(task_dir)


def test_grandchild_left_by_a_finished_adapter_is_killed(
    tiny_catalog: TinyData, tmp_path: Path
) -> None:
    rows = run("mis_spawner", tiny_catalog, tmp_path / "run", options={"mode": "return"})
    all_status(task_rows(rows, "breastmnist"), "ok")
    task_dir = tmp_path / "run" / "tasks" / "breastmnist" / "seed0"
    assert len(misbehaving.recorded_pids(task_dir)) >= 3
    assert_tree_gone(task_dir)
    assert "process(es) terminated" in (task_dir / "log.txt").read_text()


@pytest.mark.skipif(
    cgroups.cgroup_problem() is not None, reason=f"no cgroup here: {cgroups.cgroup_problem()}"
)
@pytest.mark.parametrize("mode", ["vanish", "vanish_return"])
def test_a_grandchild_out_of_the_group_the_tree_and_the_tag_is_killed_unsealed(
    tiny_catalog: TinyData, tmp_path: Path, mode: str
) -> None:
    """Unsealed (no namespace to empty), a grandchild that double-forks, calls setsid and execs
    itself with an empty environment is out of all three of the sweep's ways to find a task's
    processes; before the task's tracking cgroup it outlived the run, at the hard limit
    (``vanish``) and after valid scores (``vanish_return``) alike."""
    rows = run("mis_spawner", tiny_catalog, tmp_path / "run", sandbox="off", options={"mode": mode})
    test = task_rows(rows, "breastmnist")["test"]
    assert test["sealed"] == "false"
    assert test["status"] == ("timeout" if mode == "vanish" else "ok")
    task_dir = tmp_path / "run" / "tasks" / "breastmnist" / "seed0"
    pids = misbehaving.recorded_pids(task_dir)
    assert len(pids) >= 3, "the grandchild never started"
    assert misbehaving.tagged_processes(misbehaving.task_tag(task_dir)) == []
    assert misbehaving.live_pids(pids) == []
    assert "process(es) terminated" in (task_dir / "log.txt").read_text()


def _next_pid_is(pid: int) -> bool:
    """Ask the kernel to hand out ``pid`` next (root only); False where it cannot be asked."""
    try:
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        return True
    except OSError:
        return False


def test_a_process_given_the_workers_pid_after_it_ended_is_spared() -> None:
    """The sweep after a worker is reaped looked its pid up again: had the kernel given that pid
    to another process meanwhile (a group leader with a child here, made so on purpose), the
    sweep would have killed that process's group and its children. The worker is now known by
    its start time too."""
    # psutil tells processes apart by pid and start time, the latter in the kernel's clock ticks
    # (10 ms): a real worker lives far longer than one.
    worker = subprocess.Popen(["sleep", "0.1"], start_new_session=True)
    root = psutil.Process(worker.pid)
    worker.wait()
    for _ in range(50):
        if not _next_pid_is(worker.pid):
            pytest.skip("cannot choose the next pid here (needs root and ns_last_pid)")
        other = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], start_new_session=True)
        if other.pid == worker.pid:
            break
        other.kill()
        other.wait()
    else:
        pytest.skip("another process took the pid first, every time")
    try:
        deadline = time.monotonic() + 10
        while not psutil.Process(other.pid).children() and time.monotonic() < deadline:
            time.sleep(0.05)
        children = psutil.Process(other.pid).children()
        assert children, "the other process's child never started"
        assert enforcement.task_processes(root, "a-tag-nobody-has") == []
        assert enforcement.kill_tree(root, "a-tag-nobody-has", grace=1) == 0
        assert other.poll() is None
        assert all(child.is_running() for child in children)
    finally:
        os.killpg(other.pid, signal.SIGKILL)
        other.wait()


def test_memory_cap(tiny_catalog: TinyData, tmp_path: Path) -> None:
    rows = run(
        "mis_memory_hog",
        tiny_catalog,
        tmp_path / "run",
        memory_mb=300,
        options={"megabytes": 1024},
    )
    split_rows = task_rows(rows, "breastmnist")
    all_status(split_rows, "error")
    assert "memory cap of 300 MB" in split_rows["test"]["reason"]
    assert float(split_rows["test"]["elapsed_s"]) < misbehaving.LONG_LIMIT
    assert_tree_gone(tmp_path / "run" / "tasks" / "breastmnist" / "seed0")


# ---------------------------------------------------------------------------- temporary files


def _temp_of(run_dir: Path, seed: int = 0) -> dict[str, str]:
    task_dir = run_dir / "tasks" / "breastmnist" / f"seed{seed}"
    return json.loads((task_dir / "output" / "temp.json").read_text())


def test_each_unsealed_task_has_a_short_private_tmpdir_removed_after_it(
    tiny_catalog: TinyData, tmp_path: Path
) -> None:
    """TMPDIR, TEMP and TMP name a folder of the task's own, short enough for forkserver's
    socket path, and it goes with what the task left there (read-only folders included)."""
    rows = run("mis_temp_writer", tiny_catalog, tmp_path / "run", sandbox="off", seeds=(0, 1))
    assert {r["status"] for r in rows if r["dataset"] == "breastmnist"} == {"ok"}
    found = [_temp_of(tmp_path / "run", seed) for seed in (0, 1)]
    for temp in found:
        assert temp["TMPDIR"] == temp["TEMP"] == temp["TMP"] == temp["gettempdir"]
        assert len(temp["TMPDIR"]) < 40, temp
        assert os.path.realpath(temp["TMPDIR"]) != os.path.realpath(tempfile.gettempdir())
        assert temp["nested"].startswith(temp["TMPDIR"] + "/")
        assert not os.path.lexists(temp["TMPDIR"])
    assert found[0]["TMPDIR"] != found[1]["TMPDIR"]


def test_a_task_killed_at_its_hard_limit_leaves_no_temporary_files(
    tiny_catalog: TinyData, tmp_path: Path
) -> None:
    rows = run("mis_temp_sleeper", tiny_catalog, tmp_path / "run", sandbox="off")
    all_status(task_rows(rows, "breastmnist"), "timeout")
    temp = _temp_of(tmp_path / "run")
    assert len(temp["TMPDIR"]) < 40
    assert os.path.realpath(temp["TMPDIR"]) != os.path.realpath(tempfile.gettempdir())
    assert not os.path.lexists(temp["TMPDIR"])


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="no bwrap to seal the task")
def test_a_sealed_task_writes_its_temporary_files_in_its_private_tmp(
    tiny_catalog: TinyData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The harness's TMPDIR (here a folder the sandbox hides) does not reach the task: its
    TMPDIR, TEMP and TMP say /tmp, the sandbox's own."""
    hidden = tmp_path / "harness-tmp"
    hidden.mkdir()
    for name in ("TMPDIR", "TEMP", "TMP"):
        monkeypatch.setenv(name, str(hidden))
    rows = run("mis_temp_writer", tiny_catalog, tmp_path / "run", sandbox="required")
    assert {r["status"] for r in task_rows(rows, "breastmnist").values()} == {"ok"}, rows
    temp = _temp_of(tmp_path / "run")
    assert temp["TMPDIR"] == temp["TEMP"] == temp["TMP"] == "/tmp", temp
    assert os.path.realpath(temp["gettempdir"]) == "/tmp"
    assert not os.path.lexists(temp["nested"])  # the sandbox's /tmp, not the harness's


# ---------------------------------------------------------------------------- crashes


def test_exception_becomes_an_error_row(tiny_catalog: TinyData, tmp_path: Path) -> None:
    rows = run("mis_raiser", tiny_catalog, tmp_path / "run")
    split_rows = task_rows(rows, "breastmnist")
    all_status(split_rows, "error")
    assert split_rows["test"]["reason"] == f"ValueError: {misbehaving.ERROR_MESSAGE}"
    log_text = (tmp_path / "run" / "tasks" / "breastmnist" / "seed0" / "log.txt").read_text()
    assert "Traceback" in log_text and misbehaving.ERROR_MESSAGE in log_text


def test_an_unprintable_message_becomes_one_printable_line(
    tiny_catalog: TinyData, tmp_path: Path
) -> None:
    """An exception that holds an undecodable file name (a lone surrogate, which no UTF-8 file
    can hold: the leaderboard could never be written, resume or not) and terminal escapes (which
    would clear the user's screen and print a false status) becomes a reason of printable
    characters; the run writes its leaderboard and the next dataset runs."""
    rows = run(
        "mis_shouter", tiny_catalog, tmp_path / "run", datasets=("breastmnist", "retinamnist")
    )
    for flag in ("breastmnist", "retinamnist"):
        reason = task_rows(rows, flag)["test"]["reason"]
        assert reason.startswith("RuntimeError: cannot read img_\\udcff.png"), reason
        assert reason.isprintable() and "all tasks ok" in reason and "second line" in reason
    reason.encode("utf-8")


def test_long_notes_leave_the_leaderboard_readable(tiny_catalog: TinyData, tmp_path: Path) -> None:
    """Notes longer than Python's csv field limit (128 KiB: an adapter listing every trial) made
    the finished run's leaderboard unreadable to the run itself, to ``show`` and to ``compare``."""
    rows = run("mis_good", tiny_catalog, tmp_path / "run", options={"notes_kib": 300})
    test = task_rows(rows, "breastmnist")["test"]
    assert test["status"] == "ok"
    assert len(test["notes"]) > 2**17 and len(json.loads(test["notes"])["trials"]) == 12_000
    board = leaderboard.read_leaderboard(tmp_path / "run" / "leaderboard.csv")
    assert sorted(board.rows["split"]) == ["test", "train", "val"]


def test_nonfinite_notes_leave_every_json_file_strict(
    tiny_catalog: TinyData, tmp_path: Path
) -> None:
    """An adapter's notes holding NaN or infinities (a float, nested, a numpy float) were written
    as bare ``NaN``/``Infinity`` into info.json and the leaderboard's notes, which strict JSON
    readers (``jq``, JavaScript's ``JSON.parse``) refuse; they are now ``null``."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    run_dir = tmp_path / "run"
    rows = run("mis_good", tiny_catalog, run_dir, options={"nonfinite_notes": True})
    test = task_rows(rows, "breastmnist")["test"]
    assert test["status"] == "ok"
    notes = json.loads(test["notes"], parse_constant=refuse)
    assert (notes["nan"], notes["inf"], notes["minus_inf"]) == (None, None, None)
    assert notes["nested"] == {"trials": [{"score": None}, {"score": None}]}
    assert notes["array"] == [0.5, None]
    written = sorted(run_dir.rglob("*.json"))
    assert any(path.name == "info.json" for path in written), written
    for path in written:
        json.loads(path.read_text(), parse_constant=refuse)
    # The finished run reads back: resuming it finds every task done and writes the same board.
    config = RunConfig.from_json(json.loads((run_dir / "config.json").read_text())["config"])
    board = Runner(config, make_registry(extra_plugins=[misbehaving])).run(run_dir, resume=True)
    assert task_rows(leaderboard.read(board), "breastmnist")["test"]["notes"] == test["notes"]


@pytest.mark.parametrize(
    ("name", "first_line", "reason"),
    [
        (
            "plugin_missing_pkg",
            "import nonexistent_pkg",
            "ModuleNotFoundError: No module named 'nonexistent_pkg'"
            " while importing plugin_missing_pkg.py",
        ),
        (
            "plugin_bad_syntax",
            "def broken(:",
            "SyntaxError: invalid syntax (plugin_bad_syntax.py, line 1)"
            " while importing plugin_bad_syntax.py",
        ),
    ],
    ids=["missing-package", "syntax-error"],
)
def test_a_plugin_file_that_fails_to_import_in_the_task_is_named_with_its_error(
    tiny_catalog: TinyData,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    first_line: str,
    reason: str,
) -> None:
    """A single-file plugin that the harness imported but the task cannot (here it is changed
    after the harness imported it; in an adapter's own environment, a package that environment
    lacks or syntax its older Python does not know does the same) read "worker exited 1"."""
    folder = tmp_path / "plugin"
    folder.mkdir()
    path = folder / f"{name}.py"
    path.write_text(PLUGIN_FILE.format(name=name))
    monkeypatch.syspath_prepend(str(folder))
    try:
        module = importlib.import_module(name)
        path.write_text(first_line + "\n" + PLUGIN_FILE.format(name=name))
        registry = make_registry([module])
        rows = run(name, tiny_catalog, tmp_path / "run", registry=registry)
    finally:
        sys.modules.pop(name, None)
    split_rows = task_rows(rows, "breastmnist")
    all_status(split_rows, "error")
    assert split_rows["test"]["reason"] == reason
    log_text = (tmp_path / "run" / "tasks" / "breastmnist" / "seed0" / "log.txt").read_text()
    assert "Traceback" in log_text and str(path) in log_text


def test_an_adapter_ending_its_own_forked_child_lives_on(
    tiny_catalog: TinyData, tmp_path: Path
) -> None:
    """The worker's SIGTERM handler (pass it on to the task's group) was inherited by a child
    the adapter forked, so terminating that child killed the whole task ('worker died from
    SIGTERM': auto-sklearn, ending a forked helper, on a retinamnist without class 4 in train).
    """
    # Unsealed, as where the sandbox cannot be had (sealed, the signal took another path).
    rows = run("mis_fork_ender", tiny_catalog, tmp_path / "run", sandbox="off")
    split_rows = task_rows(rows, "breastmnist")
    assert split_rows["test"]["status"] == "ok", split_rows["test"]["reason"]
    assert json.loads(split_rows["test"]["notes"])["child_exit"] == -signal.SIGTERM
    assert_tree_gone(tmp_path / "run" / "tasks" / "breastmnist" / "seed0")


@pytest.mark.parametrize("how", ["kill", "ctypes"])
def test_segfault_becomes_an_error_row(tiny_catalog: TinyData, tmp_path: Path, how: str) -> None:
    rows = run("mis_segfault", tiny_catalog, tmp_path / "run", options={"how": how})
    split_rows = task_rows(rows, "breastmnist")
    all_status(split_rows, "error")
    assert "died from SIGSEGV" in split_rows["test"]["reason"]
    assert "log.txt" in split_rows["test"]["reason"]
    assert_tree_gone(tmp_path / "run" / "tasks" / "breastmnist" / "seed0")


# ---------------------------------------------------------------------------- invalid scores


@pytest.mark.parametrize(
    ("mode", "status", "fragment"),
    [
        ("nan", "invalid", "test 1 scores are NaN or infinite"),
        ("inf", "invalid", "val 1 scores are NaN or infinite"),
        ("columns", "invalid", "test scores have shape (30, 1); expected (30, 2)"),
        ("rows", "invalid", "test scores have shape (29, 2); expected (30, 2)"),
        ("range", "invalid", "expected probabilities in [0, 1]"),
        ("strings", "invalid", "test scores have dtype <U3; expected floats"),
        ("no_val", "invalid", "no val scores returned"),
        ("object", "error", "Object arrays cannot be saved"),
    ],
)
def test_garbage_scores(
    tiny_catalog: TinyData, tmp_path: Path, mode: str, status: str, fragment: str
) -> None:
    rows = run("mis_garbage", tiny_catalog, tmp_path / "run", options={"mode": mode})
    split_rows = task_rows(rows, "breastmnist")
    all_status(split_rows, status)
    assert fragment in split_rows["test"]["reason"]
    for row in split_rows.values():
        assert row["auc"] == "" and row["acc"] == ""
    assert not (tmp_path / "run" / "tasks" / "breastmnist" / "seed0" / "evaluator").exists()


def test_not_predictions(tiny_catalog: TinyData, tmp_path: Path) -> None:
    rows = run("mis_not_predictions", tiny_catalog, tmp_path / "run")
    split_rows = task_rows(rows, "breastmnist")
    all_status(split_rows, "error")
    reason = split_rows["test"]["reason"]
    assert reason.startswith("TypeError: ") and "not decathlon.contract.Predictions" in reason


# ---------------------------------------------------------------------------- isolation of failures


def test_one_failure_never_stops_the_other_datasets(tiny_catalog: TinyData, tmp_path: Path) -> None:
    datasets = ("breastmnist", "pneumoniamnist", "retinamnist")
    rows = run(
        "mis_good",
        tiny_catalog,
        tmp_path / "run",
        datasets,
        seeds=(0, 1),
        options={"fail_on": ["breastmnist"]},
    )
    assert_each_row_once(rows, datasets, seeds=(0, 1))
    for row in rows:
        if row["dataset"] == "breastmnist":
            assert row["status"] == "error"
            assert row["reason"] == "RuntimeError: failing on breastmnist as asked"
        elif row["dataset"] != "decathlon":
            assert row["status"] == "ok" and 0.0 <= float(row["auc"]) <= 1.0
    summary = [r for r in rows if r["dataset"] == "decathlon"]
    assert sorted(r["seed"] for r in summary) == ["0", "1"]
    for row in summary:
        assert row["status"] == "incomplete"
        assert row["auc"] == "" and row["acc"] == ""
        assert row["reason"].startswith("2/10 datasets ok")
        assert "breastmnist (error)" in row["reason"] and "pathmnist (not run)" in row["reason"]
    header = (tmp_path / "run" / "leaderboard.csv").read_text().splitlines()[0]
    assert tuple(header.split(",")) == leaderboard.COLUMNS


@pytest.mark.parametrize("error", [RuntimeError, SystemExit], ids=["raises", "exits"])
def test_hooks_hear_every_task_and_a_failing_hook_stops_nothing(
    tiny_catalog: TinyData, tmp_path: Path, error: type[BaseException]
) -> None:
    """A hook that called ``sys.exit()`` ended the run after the first task (exit 0 from
    ``sys.exit(0)``: a run that looked finished, its other tasks never started)."""
    from decathlon.hookspecs import hookimpl

    heard: list[tuple[str, Any]] = []

    class Tracker:
        @hookimpl
        def decathlon_task_finished(self, rows: list[dict[str, Any]], task_dir: Path) -> None:
            heard.append(("task", (rows[0]["dataset"], [r["status"] for r in rows], task_dir)))
            raise error("a tracker plugin that breaks")

        @hookimpl
        def decathlon_run_finished(self, run_dir: Path, leaderboard: Path) -> None:
            heard.append(("run", (run_dir, leaderboard)))

    registry = make_registry(extra_plugins=[misbehaving, Tracker()])
    cfg = RunConfig(
        adapter="mis_good",
        profile="quick",
        datasets=("breastmnist", "octmnist"),
        data_dir=str(tiny_catalog.data_dir),
        download=False,
        info_path=str(tiny_catalog.info_path),
        options={"fail_on": ["octmnist"]},
        kill_grace=KILL_GRACE,
    )
    run_dir = tmp_path / "run"
    path = Runner(cfg, registry).run(run_dir)
    assert [h[0] for h in heard] == ["task", "task", "run"]
    assert heard[0][1][0] == "breastmnist" and heard[0][1][1] == ["ok"] * 3
    assert heard[1][1][0] == "octmnist" and heard[1][1][1] == ["error"] * 3
    assert heard[0][1][2] == run_dir / "tasks" / "breastmnist" / "seed0"
    assert heard[2][1] == (run_dir, path)
    assert_each_row_once(leaderboard.read(path), ("breastmnist", "octmnist"))


def test_a_log_made_as_long_as_the_file_system_allows_stops_nothing(
    tiny_catalog: TinyData, tmp_path: Path
) -> None:
    """A task can lengthen its log (its stdout) to the most its file system takes: the harness's
    closing line then failed with EFBIG, and that OSError ended the whole run, the task's rows
    and every later task's never written. Now the line is left out, with a warning."""
    rows = run("mis_log_filler", tiny_catalog, tmp_path / "run", ("breastmnist", "octmnist"))
    assert_each_row_once(rows, ("breastmnist", "octmnist"))
    for flag in ("breastmnist", "octmnist"):
        test = task_rows(rows, flag)["test"]
        assert test["status"] == "ok", test["reason"]
        log = tmp_path / "run" / "tasks" / flag / "seed0" / "log.txt"
        assert log.stat().st_size == json.loads(test["notes"])["log_length"]


def test_no_train_scores_is_a_status_of_its_own(tiny_catalog: TinyData, tmp_path: Path) -> None:
    """Train scores are optional: without them the train row says ``not_given`` and holds no
    scores, val and test stay ``ok``, and the task counts as ok everywhere."""
    run_dir = tmp_path / "run"
    rows = run("mis_good", tiny_catalog, run_dir, options={"train_scores": False})
    split_rows = task_rows(rows, "breastmnist")
    train = split_rows["train"]
    assert train["status"] == leaderboard.NOT_GIVEN
    assert train["auc"] == "" and train["acc"] == ""
    assert train["reason"] == "the adapter gave no train scores"
    assert {split_rows[s]["status"] for s in ("val", "test")} == {"ok"}
    evaluator = run_dir / "tasks" / "breastmnist" / "seed0" / "evaluator"
    assert sorted(p.name.split("_")[1] for p in evaluator.iterdir()) == ["test", "val"]
    # The leaderboard reader and compare accept it.
    from decathlon import compare

    board = compare.read_leaderboard(run_dir)
    assert set(board.rows["status"]) == {"ok", leaderboard.NOT_GIVEN}


def test_test_labels_never_reach_the_adapter(tiny_catalog: TinyData, tmp_path: Path) -> None:
    rows = run("mis_peeker", tiny_catalog, tmp_path / "run", ("breastmnist", "chestmnist"))
    for flag in ("breastmnist", "chestmnist"):
        split_rows = task_rows(rows, flag)
        all_status(split_rows, "ok")  # the adapter raises if it finds test labels anywhere
        assert json.loads(split_rows["test"]["notes"]) == {"peeked": "nothing found"}
        spec = json.loads((tmp_path / "run" / "tasks" / flag / "seed0" / "task.json").read_text())
        assert "y_test" not in spec["arrays"]
        assert not any(path.endswith("test_labels.npy") for path in spec["arrays"].values())


# ---------------------------------------------------------------------------- scores re-checkable


def independent_auc(task: str, y: np.ndarray, s: np.ndarray) -> float:
    """Pairwise AUC (ties count half), as the MedMNIST rules ask, without scikit-learn."""

    def binary(truth: np.ndarray, score: np.ndarray) -> float:
        pos, neg = score[truth == 1], score[truth == 0]
        greater = (pos[:, None] > neg[None, :]).sum()
        ties = (pos[:, None] == neg[None, :]).sum()
        return float((greater + 0.5 * ties) / (len(pos) * len(neg)))

    if task == "binary-class":
        return binary(y[:, 0], s[:, -1])
    if task == "multi-label, binary-class":
        return float(np.mean([binary(y[:, j], s[:, j]) for j in range(s.shape[1])]))
    return float(np.mean([binary((y[:, 0] == c).astype(int), s[:, c]) for c in range(s.shape[1])]))


def independent_acc(task: str, y: np.ndarray, s: np.ndarray) -> float:
    if task == "binary-class":
        return float(np.mean((s[:, -1] > 0.5).astype(int) == y[:, 0]))
    if task == "multi-label, binary-class":
        return float(np.mean((s > 0.5).astype(int) == y))
    return float(np.mean(s.argmax(axis=1) == y[:, 0]))


def test_all_ten_ok_gives_the_decathlon_mean_and_every_score_rechecks(
    tiny_catalog: TinyData, tmp_path: Path
) -> None:
    flags = tiny_catalog.catalog.flags
    assert len(flags) == 10
    run_dir = tmp_path / "run"
    rows = run("mis_good", tiny_catalog, run_dir, tuple(flags))
    assert_each_row_once(rows, tuple(flags))
    tests = []
    for flag in flags:
        info = tiny_catalog.catalog.info(flag)
        arrays = np.load(tiny_catalog.data_dir / f"{flag}.npz")
        for split, row in task_rows(rows, flag).items():
            # Generated files: their MD5 is the tiny info.json's, not the published one.
            assert row["status"] == "ok" and row["data_verified"] == "false"
            assert row["task"] == info.task and row["adapter_version"] == "0-test"
            # The evaluator CSV the runner wrote, re-read, scored independently.
            (csv_path,) = (run_dir / "tasks" / flag / "seed0" / "evaluator").glob(
                f"{flag}_{split}_*.csv"
            )
            # medmnist's format: row number, then one column per class; no header, no BOM.
            with open(csv_path, encoding="utf-8", newline="") as handle:
                table = list(csv.reader(handle))
            assert [line[0] for line in table] == [str(i) for i in range(len(table))]
            assert {len(line) for line in table} == {1 + info.n_classes}
            scores = np.array([[float(v) for v in line[1:]] for line in table])
            saved = np.load(run_dir / "tasks" / flag / "seed0" / "predictions" / f"{split}.npy")
            np.testing.assert_array_equal(scores, saved)
            labels = arrays[f"{split}_labels"]
            auc = independent_auc(info.task, labels, scores)
            acc = independent_acc(info.task, labels, scores)
            assert float(row["auc"]) == pytest.approx(auc, abs=1e-6)
            assert float(row["acc"]) == pytest.approx(acc, abs=1e-6)
            assert csv_path.name == metrics.evaluator_filename(flag, split, auc, acc, "run")
            if split == "test":
                tests.append((auc, acc))
    (summary,) = [r for r in rows if r["dataset"] == "decathlon"]
    assert summary["status"] == "ok" and summary["reason"] == "mean of 10 datasets"
    assert float(summary["auc"]) == pytest.approx(np.mean([t[0] for t in tests]), abs=1e-6)
    assert float(summary["acc"]) == pytest.approx(np.mean([t[1] for t in tests]), abs=1e-6)
    record = json.loads((run_dir / "config.json").read_text())
    assert record["config"]["adapter"] == "mis_good" and record["adapter"]["plugin"]
    assert record["budgets_file"]["sha256"] and record["host"]["cpu_count"]


# ---------------------------------------------------------------------------- data faults


def _catalog_copy(data: TinyData, root: Path, flags: tuple[str, ...]) -> tuple[Path, Path, dict]:
    """A writable copy of some tiny datasets and of the info.json describing them."""
    data_dir = root / "data"
    data_dir.mkdir(parents=True)
    for flag in flags:
        shutil.copyfile(data.data_dir / f"{flag}.npz", data_dir / f"{flag}.npz")
    meta = json.loads(data.info_path.read_text())
    return data_dir, root / "info.json", meta


def _truncate(path: Path) -> None:
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])


def _corrupt(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    middle = len(blob) // 2
    blob[middle : middle + 64] = bytes(b ^ 0xFF for b in blob[middle : middle + 64])
    path.write_bytes(bytes(blob))


class _Payload:
    """Unpickling this creates a file: proof that pickled code would have run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def _object_array_npz(path: Path, marker: Path) -> None:
    arrays = dict(np.load(path))
    payload = np.empty(len(arrays["train_labels"]), dtype=object)
    payload[:] = [_Payload(marker)] * len(payload)
    arrays["train_labels"] = payload
    np.savez(path, **arrays)  # np.savez pickles object arrays
    assert pickle.dumps(_Payload(marker))  # the payload is a real pickle


def test_damaged_files_end_as_error_rows_and_spare_the_rest(
    tiny_catalog: TinyData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flags = ("breastmnist", "pneumoniamnist", "retinamnist", "dermamnist", "octmnist")
    data_dir, info_path, meta = _catalog_copy(tiny_catalog, tmp_path, flags)
    marker = tmp_path / "pickle-executed"
    _truncate(data_dir / "breastmnist.npz")
    _corrupt(data_dir / "pneumoniamnist.npz")
    _object_array_npz(data_dir / "retinamnist.npz", marker)
    entry = meta["datasets"]["dermamnist"]
    make_medmnist_npz(  # a valid file, but not the published one: wrong checksum
        data_dir / "dermamnist.npz", "dermamnist", entry["task"], 3, 7, entry["n_samples"], 7
    )
    assert file_md5(data_dir / "dermamnist.npz") != entry["MD5"]
    info_path.write_text(json.dumps(meta))
    # The tiny files' MD5s taken as the published ones, so that octmnist's file is verified.
    monkeypatch.setattr(datasets, "BUNDLED_INFO", tiny_catalog.info_path)

    # Without --allow-unverified every changed file is refused on its checksum.
    rows = run(
        "mis_good", tiny_catalog, tmp_path / "strict", flags, data_dir=data_dir, info_path=info_path
    )
    assert_each_row_once(rows, flags)
    for flag in flags[:4]:
        split_rows = task_rows(rows, flag)
        all_status(split_rows, "error")
        reason = split_rows["test"]["reason"]
        assert reason.startswith(f"data: {flag}.npz: MD5 ") and "--allow-unverified" in reason
        task_dir = tmp_path / "strict" / "tasks" / flag / "seed0"
        assert not (task_dir / "task.json").exists()  # no worker started
    all_status(task_rows(rows, "octmnist"), "ok")

    # With it, the loader's own checks still refuse what cannot be read safely.
    rows = run(
        "mis_good",
        tiny_catalog,
        tmp_path / "lenient",
        flags,
        data_dir=data_dir,
        info_path=info_path,
        allow_unverified=True,
    )
    assert_each_row_once(rows, flags)
    expected = {
        "breastmnist": "is not a readable .npz (truncated or corrupt?)",
        "pneumoniamnist": "is not a readable .npz (truncated or corrupt?)",
        "retinamnist": "train_labels is an object array (pickled Python objects); refusing",
    }
    for flag, fragment in expected.items():
        split_rows = task_rows(rows, flag)
        all_status(split_rows, "error")
        assert split_rows["test"]["reason"].startswith(f"data: {flag}.npz: ")
        assert fragment in split_rows["test"]["reason"]
    assert not marker.exists(), "the pickled payload was executed"
    derma = task_rows(rows, "dermamnist")
    all_status(derma, "ok")
    assert {r["data_verified"] for r in derma.values()} == {"false"}
    oct_rows = task_rows(rows, "octmnist")
    all_status(oct_rows, "ok")
    assert {r["data_verified"] for r in oct_rows.values()} == {"true"}
    (summary,) = [r for r in rows if r["dataset"] == "decathlon"]
    assert summary["status"] == "incomplete" and summary["data_verified"] == "false"


def test_single_class_split_is_a_row_not_a_crash(tiny_catalog: TinyData, tmp_path: Path) -> None:
    """A (custom) file whose val labels hold one class: AUC is undefined there, the run goes on."""
    flags = ("breastmnist", "octmnist")
    data_dir, info_path, meta = _catalog_copy(tiny_catalog, tmp_path, flags)
    arrays = dict(np.load(data_dir / "breastmnist.npz"))
    arrays["val_labels"] = np.zeros_like(arrays["val_labels"])
    np.savez_compressed(data_dir / "breastmnist.npz", **arrays)
    meta["datasets"]["breastmnist"]["MD5"] = file_md5(data_dir / "breastmnist.npz")
    info_path.write_text(json.dumps(meta))
    rows = run(
        "mis_good", tiny_catalog, tmp_path / "run", flags, data_dir=data_dir, info_path=info_path
    )
    assert_each_row_once(rows, flags)
    breast = task_rows(rows, "breastmnist")
    all_status(breast, "error")
    assert breast["test"]["reason"].startswith("val AUC is undefined")
    all_status(task_rows(rows, "octmnist"), "ok")


def test_an_undefined_train_auc_keeps_the_task(tiny_catalog: TinyData, tmp_path: Path) -> None:
    """A train split whose AUC is undefined (a chestmnist label all 0 in train) failed the
    whole task, val and test scores lost; the train row now keeps its ACC and says why, and a
    multi-class val split missing one class is named so, not 'a single class'."""
    flags = ("chestmnist", "octmnist")
    data_dir, info_path, meta = _catalog_copy(tiny_catalog, tmp_path, flags)
    arrays = dict(np.load(data_dir / "chestmnist.npz"))
    arrays["train_labels"][:, 4] = 0
    np.savez_compressed(data_dir / "chestmnist.npz", **arrays)
    arrays = dict(np.load(data_dir / "octmnist.npz"))
    arrays["val_labels"][arrays["val_labels"] == 2] = 1
    np.savez_compressed(data_dir / "octmnist.npz", **arrays)
    for flag in flags:
        meta["datasets"][flag]["MD5"] = file_md5(data_dir / f"{flag}.npz")
    info_path.write_text(json.dumps(meta))
    rows = run(
        "mis_good", tiny_catalog, tmp_path / "run", flags, data_dir=data_dir, info_path=info_path
    )
    chest = task_rows(rows, "chestmnist")
    all_status(chest, "ok")
    assert chest["train"]["auc"] == "" and chest["train"]["acc"] != ""
    assert chest["train"]["reason"] == (
        "train AUC is undefined: the train labels hold a single value in label 4"
    )
    assert chest["val"]["auc"] != "" and chest["test"]["auc"] != ""
    oct_rows = task_rows(rows, "octmnist")
    all_status(oct_rows, "error")
    assert oct_rows["test"]["reason"] == (
        "val AUC is undefined: the val labels hold no image of class 2"
    )


def test_a_metadata_file_of_fewer_datasets_gives_no_decathlon_mean(
    tiny_catalog: TinyData, tmp_path: Path
) -> None:
    """A metadata file (DECATHLON_INFO) holding only breastmnist gave a ``decathlon`` row with
    status ok, "mean of 1 datasets": the mean was taken over the datasets the file named, not
    over the ten."""
    record = json.loads(tiny_catalog.info_path.read_text())
    record["datasets"] = {"breastmnist": record["datasets"]["breastmnist"]}
    info_path = tmp_path / "info1.json"
    info_path.write_text(json.dumps(record))
    budgets = tmp_path / "budgets.toml"
    budgets.write_text("[profiles.quick]\n\n[quick.mis_good]\nhard_limit_seconds = 60\n")
    rows = run(
        "mis_good", tiny_catalog, tmp_path / "run", info_path=info_path, budgets_path=str(budgets)
    )
    (summary,) = [r for r in rows if r["dataset"] == "decathlon"]
    assert summary["status"] == "incomplete" and summary["auc"] == ""
    assert summary["reason"].startswith("1/10 datasets ok; missing: pathmnist (not run)")


def test_an_arrays_cache_that_takes_no_label_file_is_a_row(
    tiny_catalog: TinyData, tmp_path: Path
) -> None:
    """Writing a task's label files into $DECATHLON_HOME/arrays (full, read-only, or a folder
    where the file goes) raised a bare OSError out of the runner: a traceback that ended the
    whole run, every later task not run. It is now the task's error row, and the run goes on."""
    md5 = datasets.file_md5(datasets.dataset_file(tiny_catalog.data_dir, "breastmnist"))
    folder = tmp_path / "home" / "arrays" / f"breastmnist-{md5[:12]}"
    (folder / "train_labels.npy").mkdir(parents=True)  # os.replace over it: EISDIR
    rows = run("mis_good", tiny_catalog, tmp_path / "run", ("breastmnist", "retinamnist"))
    by = {(r["dataset"], r["split"]): r for r in rows}
    assert by["breastmnist", "test"]["status"] == "error"
    reason = by["breastmnist", "test"]["reason"]
    assert reason.startswith(f"data: {folder}: cannot write train_labels.npy: "), reason
    assert by["retinamnist", "test"]["status"] == "ok"


def test_a_link_in_a_loop_among_the_data_files_does_not_stop_the_run(
    tiny_catalog: TinyData, tmp_path: Path
) -> None:
    """The sandbox's list of folders to hide resolved every .npz of the data folder: one link
    in a loop there (pathmnist.npz -> pathmnist.npz, not even a dataset of the run) ended every
    run on that folder with Path.resolve's RuntimeError traceback before any task ran."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for flag in ("breastmnist", "retinamnist"):
        (data_dir / f"{flag}.npz").symlink_to(datasets.dataset_file(tiny_catalog.data_dir, flag))
    (data_dir / "pathmnist.npz").symlink_to("pathmnist.npz")
    rows = run("mis_good", tiny_catalog, tmp_path / "run", data_dir=data_dir)
    assert {r["status"] for r in rows if r["dataset"] == "breastmnist"} == {"ok"}, rows


def test_a_default_data_folder_in_a_loop_of_links_does_not_stop_a_run_given_another(
    tiny_catalog: TinyData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --data-dir naming the data, a DECATHLON_DATA_DIR left pointing at a link in a loop
    still ended every run with Path.resolve's RuntimeError traceback, from the sandbox's list
    of folders to hide, before any task ran."""
    loop = tmp_path / "loop"
    loop.symlink_to("loop")
    monkeypatch.setenv("DECATHLON_DATA_DIR", str(loop))
    rows = run("mis_good", tiny_catalog, tmp_path / "run")
    assert {r["status"] for r in rows if r["dataset"] == "breastmnist"} == {"ok"}, rows


def test_the_private_tmpdir_goes_when_the_task_cannot_be_started(
    tiny_catalog: TinyData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task's /tmp/dcl-* folder was made before task.json was written and the worker's
    interpreter found, outside the block that removes it: a failure there left it for good."""
    made: list[Path] = []

    def private_tmp() -> Path:
        made.append(Path(tempfile.mkdtemp(prefix=rundir.TMP_PREFIX)))
        return made[-1]

    def interpreter(adapter: Any, root: Any = None) -> Path:
        raise OSError("no interpreter today")

    monkeypatch.setattr(rundir, "private_tmp", private_tmp)
    monkeypatch.setattr(environments, "interpreter", interpreter)
    with contextlib.suppress(OSError):
        run("mis_good", tiny_catalog, tmp_path / "run", sandbox="off")
    assert len(made) == 1
    assert not os.path.lexists(made[0])
    assert not (tmp_path / "run" / "tasks" / "breastmnist" / "seed0" / "scratch").exists()
