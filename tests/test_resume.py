"""The harness killed with SIGKILL mid-run, then ``--resume``: nothing lost, nothing twice.

The harness runs as a real ``python -m decathlon run`` subprocess; the misbehaving plugin reaches
it through the ``decathlon`` entry-point group, as a third-party package would.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import misbehaving
import pytest
from helpers import TinyData

from decathlon import leaderboard, rundir
from decathlon.errors import DecathlonError
from decathlon.plugins import make_registry
from decathlon.runner import RunConfig, Runner, UnknownSettingsError

FLAGS = ("breastmnist", "pneumoniamnist", "retinamnist")
SEEDS = (0, 1)


def harness(tmp_path: Path, data: TinyData, *args: str) -> tuple[list[str], dict[str, str]]:
    env = misbehaving.install_entry_point(tmp_path / "site")
    env["DECATHLON_INFO"] = str(data.info_path)
    env["DECATHLON_HOME"] = str(tmp_path / "home")
    env.pop("DECATHLON_TASK_TAG", None)
    return [sys.executable, "-m", "decathlon", "run", "--no-progress", *args], env


def start_run(
    tmp_path: Path,
    data: TinyData,
    adapter: str,
    *extra: str,
    flags: tuple[str, ...] = FLAGS,
    seeds: tuple[int, ...] = SEEDS,
) -> subprocess.Popen:
    cmd, env = harness(
        tmp_path,
        data,
        "--adapter",
        adapter,
        "--profile",
        "quick",
        "--datasets",
        ",".join(flags),
        "--seeds",
        ",".join(map(str, seeds)),
        "--data-dir",
        str(data.data_dir),
        "--no-download",
        "--jobs",
        "1",
        "--run-dir",
        str(tmp_path / "run"),
        *extra,
    )
    out = open(tmp_path / "harness-1.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)


def resume(tmp_path: Path, data: TinyData) -> subprocess.CompletedProcess:
    cmd, env = harness(tmp_path, data, "--resume", str(tmp_path / "run"))
    return subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)


def wait_for(condition, what: str, proc: subprocess.Popen, tmp_path: Path, limit: float = 120):
    deadline = time.monotonic() + limit
    while True:
        found = condition()
        if found:
            return found
        if proc.poll() is not None:
            log_text = (tmp_path / "harness-1.log").read_text(errors="replace")
            pytest.fail(f"the harness ended (exit {proc.returncode}) before {what}:\n{log_text}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def task_dirs(run_dir: Path) -> list[Path]:
    return sorted(p.parent for p in run_dir.glob("tasks/*/seed*/task.json"))


def unfinished_running(run_dir: Path) -> list[Path]:
    """Task folders whose worker is running now (tagged processes alive, no result yet)."""
    return [
        d
        for d in task_dirs(run_dir)
        if not (d / "result.json").exists()
        and misbehaving.tagged_processes(misbehaving.task_tag(d))
    ]


def kill_harness(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def wait_gone(tag: str, limit: float = 30.0) -> list[object]:
    deadline = time.monotonic() + limit
    while misbehaving.tagged_processes(tag) and time.monotonic() < deadline:
        time.sleep(0.1)
    return misbehaving.tagged_processes(tag)


def read_valid_csv(path: Path) -> list[dict[str, str]]:
    """The leaderboard parses as a whole CSV with the fixed header and full rows."""
    with open(path, newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    assert tuple(table[0]) == leaderboard.COLUMNS
    assert all(len(line) == len(leaderboard.COLUMNS) for line in table[1:])
    return leaderboard.read(path)


def assert_each_row_once(
    rows: list[dict[str, str]],
    status: str,
    flags: tuple[str, ...] = FLAGS,
    seeds: tuple[int, ...] = SEEDS,
) -> None:
    counts = Counter(
        (r["dataset"], r["seed"], r["split"]) for r in rows if r["dataset"] != "decathlon"
    )
    expected = {(d, str(s), sp) for d in flags for s in seeds for sp in leaderboard.SPLITS}
    assert set(counts) == expected and set(counts.values()) == {1}
    assert {r["status"] for r in rows if r["dataset"] != "decathlon"} == {status}
    summary = [r for r in rows if r["dataset"] == "decathlon"]
    assert sorted(r["seed"] for r in summary) == [str(s) for s in seeds]
    assert {r["status"] for r in summary} == {"incomplete"}


def test_sigkill_mid_run_then_resume(tiny_catalog: TinyData, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = start_run(tmp_path, tiny_catalog, "mis_good", "--option", "sleep_seconds=1.0")
    try:

        def two_done_and_one_running() -> list[Path]:
            done = list(run_dir.glob("tasks/*/seed*/result.json"))
            return unfinished_running(run_dir) if len(done) >= 2 else []

        (interrupted,) = wait_for(two_done_and_one_running, "a third task started", proc, tmp_path)
        kill_harness(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    old_tag = misbehaving.task_tag(interrupted)
    assert (interrupted / "scratch").is_dir()  # SIGKILL leaves it; the resume removes it
    finished = {
        d: (d / "result.json").stat().st_mtime_ns
        for d in task_dirs(run_dir)
        if (d / "result.json").exists()
    }
    assert len(finished) >= 2

    # What was written survives whole: the leaderboard is a complete CSV of the finished tasks.
    rows = read_valid_csv(run_dir / "leaderboard.csv")
    task_rows = [r for r in rows if r["dataset"] != "decathlon"]
    assert len(task_rows) in (3 * len(finished), 3 * (len(finished) - 1))
    assert {r["status"] for r in task_rows} == {"ok"}
    # The worker dies with its harness (PR_SET_PDEATHSIG): no process keeps the task's tag.
    assert wait_gone(old_tag) == []

    done = resume(tmp_path, tiny_catalog)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(FLAGS) * len(SEEDS)} tasks, {len(finished)} already done" in done.stdout
    rows = read_valid_csv(run_dir / "leaderboard.csv")
    assert_each_row_once(rows, "ok")
    # Finished tasks were not redone; the interrupted one was run again from scratch.
    for task_dir, stamp in finished.items():
        assert (task_dir / "result.json").stat().st_mtime_ns == stamp
    assert misbehaving.task_tag(interrupted) != old_tag
    for task_dir in task_dirs(run_dir):
        assert misbehaving.tagged_processes(misbehaving.task_tag(task_dir)) == []
    assert not list(run_dir.glob("tasks/*/seed*/scratch"))


def test_resume_sweeps_grandchildren_of_a_killed_run(
    tiny_catalog: TinyData, tmp_path: Path
) -> None:
    """A grandchild outlives the killed harness and its worker; ``--resume`` kills it before it
    reruns the task, and every task still ends exactly once."""
    run_dir = tmp_path / "run"
    flags, seeds = FLAGS[:1], (0,)
    proc = start_run(
        tmp_path, tiny_catalog, "mis_spawner", "--option", "mode=sleep", flags=flags, seeds=seeds
    )
    try:

        def grandchild_up() -> list[Path]:
            return [
                d
                for d in task_dirs(run_dir)
                if len(misbehaving.recorded_pids(d)) >= 3 and not (d / "result.json").exists()
            ]

        (interrupted,) = wait_for(grandchild_up, "a grandchild started", proc, tmp_path)
        kill_harness(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    old_tag = misbehaving.task_tag(interrupted)
    worker_pid, *descendants = misbehaving.recorded_pids(interrupted)
    deadline = time.monotonic() + 30
    while misbehaving.live_pids([worker_pid]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert misbehaving.live_pids([worker_pid]) == [], "the worker outlived its harness"

    done = resume(tmp_path, tiny_catalog)
    # Finished, with a task that is not ok: exit 1, and the last line says where the reason is.
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.splitlines()[-1].startswith("1 of 1 task did not end ok (1 timeout)")
    assert misbehaving.live_pids(descendants) == []
    assert misbehaving.tagged_processes(old_tag) == []
    assert_each_row_once(read_valid_csv(run_dir / "leaderboard.csv"), "timeout", flags, seeds)
    for task_dir in task_dirs(run_dir):
        assert misbehaving.tagged_processes(misbehaving.task_tag(task_dir)) == []


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_stops_the_task_tree_then_resume(
    tiny_catalog: TinyData, tmp_path: Path, signum: int, code: int
) -> None:
    """SIGINT (Ctrl-C) or SIGTERM to the harness: it takes the running task down, says how to
    resume and exits 130 / 143; ``--resume`` then finishes the run."""
    run_dir = tmp_path / "run"
    flags, seeds = FLAGS[:2], (0,)
    proc = start_run(
        tmp_path,
        tiny_catalog,
        "mis_good",
        "--option",
        "sleep_seconds=3.0",
        flags=flags,
        seeds=seeds,
    )
    try:
        (running,) = wait_for(lambda: unfinished_running(run_dir), "a task started", proc, tmp_path)
        os.kill(proc.pid, signum)
        assert proc.wait(timeout=60) == code
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "--resume" in (tmp_path / "harness-1.log").read_text()
    assert misbehaving.tagged_processes(misbehaving.task_tag(running)) == []
    assert not (running / "result.json").exists()
    assert (running / "task.json").is_file() and not (running / "scratch").exists()

    done = resume(tmp_path, tiny_catalog)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_each_row_once(read_valid_csv(run_dir / "leaderboard.csv"), "ok", flags, seeds)


def test_a_run_folder_renamed_then_resumed_is_one_run(
    tiny_catalog: TinyData, tmp_path: Path
) -> None:
    """A run folder moved (``mv runs/a runs/b``, or copied off a cluster) and resumed: the
    earlier tasks' rows kept the old folder's name as run_id and the new ones took the new
    name, so the leaderboard held two runs and two incomplete decathlon rows for one seed."""
    config = RunConfig(
        adapter="mis_good",
        profile="quick",
        datasets=("breastmnist", "retinamnist"),
        seeds=(0,),
        data_dir=str(tiny_catalog.data_dir),
        info_path=str(tiny_catalog.info_path),
        download=False,
        n_jobs=1,
    )
    registry = make_registry([misbehaving])
    Runner(config, registry).run(tmp_path / "first")
    os.rename(tmp_path / "first", tmp_path / "moved")
    moved = tmp_path / "moved"
    os.remove(moved / "tasks" / "retinamnist" / "seed0" / "result.json")
    resumed = RunConfig.from_json(json.loads((moved / "config.json").read_text())["config"])
    path = Runner(resumed, make_registry([misbehaving])).run(moved, resume=True)
    rows = read_valid_csv(path)
    assert {r["run_id"] for r in rows} == {"moved"}
    summary = [r for r in rows if r["dataset"] == "decathlon"]
    assert len(summary) == 1 and summary[0]["reason"].startswith("2/10 datasets ok")


def test_a_killed_runs_private_tmpdir_is_removed_by_the_resume(
    tiny_catalog: TinyData, tmp_path: Path
) -> None:
    """`kill -9` of the harness mid-task leaves the unsealed task's ``/tmp/dcl-*`` folder;
    its ``task.json`` names it and ``--resume`` removes it, as it removes ``scratch/``."""
    run_dir = tmp_path / "run"
    task_dir = run_dir / "tasks" / "breastmnist" / "seed0"
    proc = start_run(
        tmp_path,
        tiny_catalog,
        "mis_temp_sleeper",
        "--sandbox",
        "off",
        "--scale-factor",
        "5",  # a hard limit of 15 s, not 3: the harness is killed before it
        flags=("breastmnist",),
        seeds=(0,),
    )
    try:
        wait_for(lambda: (task_dir / "output" / "temp.json").exists(), "temp.json", proc, tmp_path)
        kill_harness(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    left = Path(json.loads((task_dir / "output" / "temp.json").read_text())["TMPDIR"])
    assert json.loads((task_dir / "task.json").read_text())["tmp_dir"] == str(left)
    assert wait_gone(misbehaving.task_tag(task_dir)) == []
    assert (left / "left.txt").exists()  # SIGKILL leaves it; the resume removes it
    done = resume(tmp_path, tiny_catalog)
    assert "1 tasks, 0 already done" in done.stdout, done.stdout + done.stderr
    assert not os.path.lexists(left)
    assert (task_dir / "result.json").exists()
    again = Path(json.loads((task_dir / "task.json").read_text())["tmp_dir"])
    assert again != left and not os.path.lexists(again)


def test_only_a_private_tmpdir_is_removed_whatever_task_json_says(tmp_path: Path) -> None:
    """The task's folder is writable by the task: a ``tmp_dir`` it rewrote to name another
    folder (not ``dcl-*`` directly under the temporary folder, a link, another host's) is
    left alone."""
    task_dir = tmp_path / "task"
    task_dir.mkdir()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("the user's")
    link = Path(tempfile.gettempdir()) / f"dcl-{os.getpid() % 10**8:08d}"
    planted = rundir.private_tmp()
    try:
        link.symlink_to(precious)
        for named, host in (
            (precious, None),
            (link, None),
            (planted, "another-host"),
            (Path(tempfile.gettempdir()) / ".." / precious.name, None),
        ):
            record = rundir.tmp_record(named)
            if host:
                record["tmp_host"] = host
            rundir.write_json(task_dir / rundir.TASK_SPEC, {"tag": "", **record})
            rundir.remove_recorded_tmp(task_dir)
            assert (precious / "keep.txt").exists() and link.is_symlink() and planted.is_dir()
        rundir.write_json(task_dir / rundir.TASK_SPEC, {"tag": "", **rundir.tmp_record(planted)})
        rundir.remove_recorded_tmp(task_dir)
        assert not os.path.lexists(planted)
    finally:
        link.unlink(missing_ok=True)
        rundir.remove_tree(planted)


@pytest.mark.parametrize("garbage", ["[1]", '"task"', "7", '{"tag": 5, "tmp_dir": ["x"]}'])
def test_a_task_json_of_another_shape_does_not_stop_the_resume(
    tiny_catalog: TinyData, tmp_path: Path, garbage: str
) -> None:
    """A task's ``task.json`` is in a folder the task could write in: JSON that is no record
    (a list, a string, a number, fields of other types) left in an unfinished task's folder is
    cleared like any stale file, and the resume runs the task again."""
    run_dir = tmp_path / "run"
    proc = start_run(tmp_path, tiny_catalog, "mis_good", flags=("breastmnist",), seeds=(0,))
    assert proc.wait(timeout=240) == 0, (tmp_path / "harness-1.log").read_text()
    task_dir = run_dir / "tasks" / "breastmnist" / "seed0"
    (task_dir / "result.json").unlink()
    (task_dir / "task.json").write_text(garbage)
    done = resume(tmp_path, tiny_catalog)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "1 tasks, 0 already done" in done.stdout
    rows = read_valid_csv(run_dir / "leaderboard.csv")
    assert_each_row_once(rows, "ok", flags=("breastmnist",), seeds=(0,))


def test_a_library_resume_of_a_run_a_newer_harness_started_is_refused(
    tiny_catalog: TinyData, tmp_path: Path
) -> None:
    """``Runner(...).run(resume=True)`` and a Dask worker's ``RunConfig.from_json`` went on
    without the settings a newer harness wrote; only the command line refused them."""
    config = RunConfig(
        adapter="mis_good",
        profile="quick",
        datasets=("breastmnist",),
        seeds=(0,),
        data_dir=str(tiny_catalog.data_dir),
        info_path=str(tiny_catalog.info_path),
        download=False,
        n_jobs=1,
    )
    run_dir = Runner(config, make_registry([misbehaving])).run(tmp_path / "run").parent
    record = json.loads((run_dir / "config.json").read_text())
    record["config"]["zz_future"] = 1
    (run_dir / "config.json").write_text(json.dumps(record))
    os.remove(run_dir / "tasks" / "breastmnist" / "seed0" / "result.json")
    with pytest.raises(DecathlonError, match="unknown settings zz_future; resume it with"):
        Runner(config, make_registry([misbehaving])).run(run_dir, resume=True)
    assert not (run_dir / "tasks" / "breastmnist" / "seed0" / "result.json").exists()
    with pytest.raises(UnknownSettingsError, match="newer decathlon: unknown settings zz_future"):
        RunConfig.from_json(record["config"])
