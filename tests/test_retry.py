"""``run --resume RUN_DIR --retry-failed``: failed tasks rerun, earlier attempts kept, ok ones not.

Real runs on the three real MedMNIST subsets, through the command line in this process: the
built-in baseline with a data file that is missing at first, and the misbehaving ``mis_good``
adapter that crashes (a real worker process with a real traceback in its log) while a file
exists.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import misbehaving
import pytest
from helpers import REAL_FLAGS

from decathlon import cli, leaderboard, rundir
from decathlon.plugins import make_registry


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DECATHLON_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(cli, "make_registry", lambda: make_registry([misbehaving]))
    monkeypatch.setattr(cli.console, "width", 200)


def board_rows(run_dir: Path) -> dict[str, dict[str, str]]:
    return {
        r["dataset"]: r
        for r in leaderboard.read(run_dir / "leaderboard.csv")
        if r["split"] == "test" and r["dataset"] != leaderboard.SUMMARY_DATASET
    }


def run(*args: str) -> int:
    return cli.main(["run", "--no-progress", *args])


def test_retry_after_a_missing_data_file(
    real_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for flag in ("breastmnist", "pneumoniamnist"):  # retinamnist is not there yet
        (data / f"{flag}.npz").symlink_to(real_data_dir / f"{flag}.npz")
    run_dir = tmp_path / "run"
    code = run(
        "--adapter", "baseline", "--profile", "quick", "--datasets", ",".join(REAL_FLAGS),
        "--seeds", "0", "--data-dir", str(data), "--no-download", "--jobs", "1",
        "--option", "max_iter=10", "--run-dir", str(run_dir),
    )  # fmt: skip
    assert code == 1  # finished, with a task that is not ok
    first = board_rows(run_dir)
    assert first["retinamnist"]["status"] == "error"
    assert first["retinamnist"]["reason"].startswith("data:")
    assert first["breastmnist"]["status"] == first["pneumoniamnist"]["status"] == "ok"
    capsys.readouterr()

    # Plain --resume leaves a finished task alone, failed or not.
    assert run("--resume", str(run_dir)) == 1
    assert board_rows(run_dir)["retinamnist"]["status"] == "error"
    capsys.readouterr()

    (data / "retinamnist.npz").symlink_to(real_data_dir / "retinamnist.npz")
    assert run("--resume", str(run_dir), "--retry-failed") == 0
    out = capsys.readouterr().out
    assert "retrying 1 failed task (1 error); earlier attempts kept in" in out
    second = board_rows(run_dir)
    assert all(r["status"] == "ok" for r in second.values())
    for flag in ("breastmnist", "pneumoniamnist"):  # not rerun
        assert second[flag]["finished_at"] == first[flag]["finished_at"]
    task_dir = run_dir / "tasks" / "retinamnist" / "seed0"
    earlier = json.loads((task_dir / "attempts" / "1" / "result.json").read_text())["rows"]
    assert {r["status"] for r in earlier} == {"error"}
    assert earlier[0]["reason"] == first["retinamnist"]["reason"]
    assert (task_dir / "result.json").is_file() and (
        task_dir / "predictions" / "test.npy"
    ).is_file()
    # Nothing failed any more: a further retry says so and reruns nothing.
    assert run("--resume", str(run_dir), "--retry-failed") == 0
    assert "no error, timeout or invalid tasks to retry" in capsys.readouterr().out
    assert board_rows(run_dir)["retinamnist"]["finished_at"] == second["retinamnist"]["finished_at"]


def test_retry_keeps_each_attempts_log_and_reason(
    real_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken"
    broken.touch()
    run_dir = tmp_path / "run"
    code = run(
        "--adapter", "mis_good", "--profile", "quick", "--datasets", ",".join(REAL_FLAGS),
        "--seeds", "0,1", "--data-dir", str(real_data_dir), "--no-download", "--jobs", "1",
        "--option", 'fail_on=["pneumoniamnist"]', "--option", f"fail_while={broken}",
        "--run-dir", str(run_dir),
    )  # fmt: skip
    assert code == 1
    rows = board_rows(run_dir)
    assert rows["pneumoniamnist"]["status"] == "error"
    assert "failing on pneumoniamnist as asked" in rows["pneumoniamnist"]["reason"]
    capsys.readouterr()

    # Still broken: both seeds fail again; the first attempt is kept as attempts/1.
    assert run("--resume", str(run_dir), "--retry-failed") == 1
    assert "retrying 2 failed tasks (2 error)" in capsys.readouterr().out

    broken.unlink()
    assert run("--resume", str(run_dir), "--retry-failed") == 0
    assert "retrying 2 failed tasks (2 error)" in capsys.readouterr().out
    board = [
        r for r in leaderboard.read(run_dir / "leaderboard.csv") if r["dataset"] != "decathlon"
    ]
    assert len(board) == 3 * 2 * 3 and all(r["status"] == "ok" for r in board)
    for seed in (0, 1):
        attempts = run_dir / "tasks" / "pneumoniamnist" / f"seed{seed}" / "attempts"
        assert sorted(p.name for p in attempts.iterdir()) == ["1", "2"]
        for k in ("1", "2"):
            log = (attempts / k / "log.txt").read_text()
            assert "RuntimeError: failing on pneumoniamnist as asked" in log
            result = json.loads((attempts / k / "result.json").read_text())
            assert {r["status"] for r in result["rows"]} == {"error"}
        # The leaderboard reads the current attempt only.
        assert not list((run_dir / "tasks" / "breastmnist" / f"seed{seed}").glob("attempts"))


def test_retry_failed_needs_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run("--adapter", "baseline", "--retry-failed", "--run-dir", str(tmp_path / "r"))
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --retry-failed needs --resume RUN_DIR (the run whose failures to rerun)"
    assert not (tmp_path / "r").exists()


def test_retry_failed_on_a_local_dask_cluster(
    real_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken"
    broken.touch()
    run_dir = tmp_path / "run"
    code = run(
        "--adapter", "mis_good", "--profile", "quick", "--datasets", "breastmnist,retinamnist",
        "--seeds", "0", "--data-dir", str(real_data_dir), "--no-download", "--jobs", "1",
        "--option", 'fail_on=["retinamnist"]', "--option", f"fail_while={broken}",
        "--run-dir", str(run_dir),
    )  # fmt: skip
    assert code == 1 and board_rows(run_dir)["retinamnist"]["status"] == "error"
    broken.unlink()
    capsys.readouterr()
    assert run("--resume", str(run_dir), "--retry-failed", "--workers", "1") == 0
    assert "retrying 1 failed task (1 error)" in capsys.readouterr().out
    assert {r["status"] for r in board_rows(run_dir).values()} == {"ok"}
    attempt = run_dir / "tasks" / "retinamnist" / "seed0" / "attempts" / "1"
    assert "failing on retinamnist as asked" in (attempt / "log.txt").read_text()


def test_an_archive_cut_off_half_way_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A harness killed while it moved a failed task's files to ``attempts/K`` left the task
    without its ``result.json`` but with some of its files: the next resume took it for an
    unfinished task and deleted them. Now ``result.json`` moves last, into a folder that takes
    its number only when all are there, so the next retry finishes the same attempt."""
    task = tmp_path / "tasks" / "breastmnist" / "seed0"
    (task / "predictions").mkdir(parents=True)
    files = {"log.txt": "the log", "task.json": "{}", "predictions/test.npy": "scores"}
    row = {"dataset": "breastmnist", "seed": 0, "status": "error"}
    rows = [dict(row, split=split) for split in leaderboard.SPLITS]
    files[rundir.RESULT] = json.dumps({"rows": rows})
    for name, text in files.items():
        (task / name).write_text(text)
    real_move = shutil.move
    moved: list[str] = []

    def killed_after_one(src: str, dst: str) -> str:
        if moved:
            raise KeyboardInterrupt  # as the harness dies here
        moved.append(src)
        return real_move(src, dst)

    monkeypatch.setattr(rundir.shutil, "move", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        rundir.archive_attempt(task)
    monkeypatch.setattr(rundir.shutil, "move", real_move)
    assert rundir.is_finished(task)  # still finished: a resume keeps it for --retry-failed
    assert rundir.archive_attempt(task) == task / "attempts" / "1"
    assert sorted(p.name for p in task.iterdir()) == ["attempts"]
    assert sorted(p.name for p in (task / "attempts").iterdir()) == ["1"]
    for name, text in files.items():
        assert (task / "attempts" / "1" / name).read_text() == text


LOCKED_FOLDERS = """
import io, os, sys, zipfile
from pathlib import Path
from decathlon import distributed, rundir

task = Path(sys.argv[1])
outside = Path(sys.argv[2])


def lay_out():
    for name in ("predictions", "output/model", "scratch/deep/er"):
        (task / name).mkdir(parents=True)
    (task / rundir.RESULT).write_text("{}")
    (task / "predictions" / "test.npy").write_text("scores")
    (task / "output" / "model" / "weights").write_text("w")
    (task / "scratch" / "deep" / "er" / "tmp").write_text("t")
    (task / "output" / "outside").symlink_to(outside)  # a link out: never followed
    (task / "output" / "notes.txt").write_text("n")
    (task / "output" / "secret").write_text("s")
    os.chmod(task / "output" / "secret", 0)
    for name in ("scratch/deep/er", "scratch/deep", "scratch", "output/model", "output",
                 "predictions"):
        os.chmod(task / name, 0)


class Runner:
    def task_dir(self, where, task_):
        return task


lay_out()
rundir.remove_tree(task / "scratch")
print("scratch", (task / "scratch").exists())
print("archived", rundir.archive_attempt(task).name)
print("attempt", sorted(p.relative_to(task).as_posix() for p in task.rglob("*")))
lay_out()
rundir.clear_task_dir(task)
print("cleared", sorted(p.name for p in task.iterdir()))
lay_out()
shipped = distributed._result([], Runner(), task, None, shared=False)
names = zipfile.ZipFile(io.BytesIO(shipped["archive"])).namelist()
print("shipped", task.exists(), shipped["kept_on"], [n for n in sorted(names) if n[0] != "a"])
"""


def test_folders_a_task_locked_are_archived_cleared_and_removed(tmp_path: Path) -> None:
    """A task runs as the harness's user, so it may ``chmod 000`` its folders. For a user
    without root's override that made ``--retry-failed`` and a resume stop with a
    PermissionError and left scratch folders behind. Run here without that override (as an
    ordinary user, or as root with every capability dropped), in a process of its own."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("needs setpriv (util-linux) to drop root's capabilities")
        prefix = ["setpriv", "--inh-caps=-all", "--bounding-set=-all"]
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o500)
    task = tmp_path / "tasks" / "breastmnist" / "seed0"
    task.mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=str(Path(rundir.__file__).parents[1]))
    done = subprocess.run(
        [*prefix, sys.executable, "-c", LOCKED_FOLDERS, str(task), str(outside)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    attempt = [
        "attempts",
        "attempts/1",
        "attempts/1/output",
        "attempts/1/output/model",
        "attempts/1/output/model/weights",
        "attempts/1/output/notes.txt",
        "attempts/1/output/outside",
        "attempts/1/output/secret",
        "attempts/1/predictions",
        "attempts/1/predictions/test.npy",
        "attempts/1/result.json",
    ]
    assert done.stdout.splitlines() == [
        "scratch False",
        "archived 1",
        f"attempt {attempt}",
        "cleared ['attempts']",
        "shipped False None ['output/', 'output/model/', 'output/model/weights',"
        " 'output/notes.txt', 'predictions/', 'predictions/test.npy', 'result.json',"
        " 'scratch/', 'scratch/deep/', 'scratch/deep/er/', 'scratch/deep/er/tmp']",
    ]
    assert stat.S_IMODE(outside.stat().st_mode) == 0o500  # the link's target kept its mode


def test_a_retry_killed_before_its_first_task_ends_shows_no_archived_rows(
    tiny_catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failed task's files move to ``attempts/1`` before it reruns; a harness killed right
    then (SIGKILL: no handler runs) left a leaderboard that still showed the archived attempt's
    rows while the task had no ``result.json``. The leaderboard is rewritten right after the
    archiving, so it never shows an archived attempt."""
    from decathlon.runner import RunConfig, Runner

    config = RunConfig(
        adapter="mis_good",
        profile="quick",
        datasets=("breastmnist", "retinamnist"),
        data_dir=str(tiny_catalog.data_dir),
        download=False,
        info_path=str(tiny_catalog.info_path),
        options={"fail_on": ["retinamnist"]},
        n_jobs=1,
        kill_grace=1.0,
    )
    run_dir = tmp_path / "run"
    Runner(config, make_registry([misbehaving])).run(run_dir)
    assert board_rows(run_dir)["retinamnist"]["status"] == "error"

    def killed(*args: object) -> None:
        raise KeyboardInterrupt  # as SIGKILL ends the harness here: nothing after runs

    monkeypatch.setattr(Runner, "execute", killed)
    with pytest.raises(KeyboardInterrupt):
        Runner(config, make_registry([misbehaving])).run(run_dir, resume=True, retry_failed=True)
    task = run_dir / "tasks" / "retinamnist" / "seed0"
    assert not (task / rundir.RESULT).exists()
    assert (task / "attempts" / "1" / rundir.RESULT).exists()
    rows = leaderboard.read(run_dir / "leaderboard.csv")
    assert not [r for r in rows if r["dataset"] == "retinamnist"]
    assert board_rows(run_dir)["breastmnist"]["status"] == "ok"
