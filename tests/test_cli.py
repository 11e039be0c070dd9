"""The command line: expected problems print one line and exit 2, and lose nothing written."""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import misbehaving
import pytest
from helpers import PLUGIN_FILE, TinyData, copy_dataset

from decathlon import cli, datasets, leaderboard, resources, rundir
from decathlon.errors import PluginError
from decathlon.hookspecs import hookimpl
from decathlon.plugins import make_registry
from decathlon.runner import RunConfig, Runner

BAD_BUDGETS = {
    "unknown key": (
        "[profiles.paper]\n[profiles.quick]\n[quick.baseline]\nhard_limit_second = 300\n",
        "unknown key 'hard_limit_second'. Did you mean 'hard_limit_seconds'?",
    ),
    "unknown adapter": (
        "[profiles.paper]\n[profiles.quick]\n[quick.baselin]\nhard_limit_seconds = 300\n",
        "unknown adapter 'baselin' in [quick.baselin]. Did you mean 'baseline'?",
    ),
    "negative": (
        "[profiles.paper]\n[profiles.quick]\n[quick.baseline]\nhard_limit_seconds = -300\n",
        "hard_limit_seconds must be positive, got -300",
    ),
    "wrong length": (
        "[profiles.paper]\n[profiles.quick]\n[quick.baseline]\nhard_limit_seconds = [1, 2]\n",
        "must be one number or three (one per scale tier)",
    ),
    "bad toml": ("[profiles.paper\n", "not valid TOML"),
    # Written with surrogateescape: a lone byte 0xE9, "é" in Latin-1.
    "not utf-8": ("[profiles.paper]\n# caf\udce9 in Latin-1\n", "not UTF-8 text"),
    "unknown dataset": (
        '[profiles.paper]\n[profiles.quick]\ndatasets = ["pathmnst"]\n',
        "unknown dataset 'pathmnst'. Did you mean 'pathmnist'?",
    ),
    "unknown option": (
        "[profiles.paper]\n[profiles.quick]\n[quick.baseline]\nhard_limit_seconds = 300\n"
        "[quick.baseline.options]\nmax_iters = 3\n",
        "has no option 'max_iters'. Did you mean 'max_iter'?",
    ),
    "no hard limit": (
        "[profiles.paper]\n[profiles.quick]\n[quick.baseline]\ntrials = 3\n",
        "needs hard_limit_seconds",
    ),
    # Each of these ran before: into a folder `seedTrue`, past NumPy's seeds, nothing at all.
    "seed true": ("[profiles.paper]\n[profiles.quick]\nseeds = [true]\n", "from 0 to 4294967295"),
    "seed too large": (
        "[profiles.paper]\n[profiles.quick]\nseeds = [4294967296]\n",
        "seeds must be a list of whole numbers from 0 to 4294967295",
    ),
    "no seeds": ("[profiles.paper]\n[profiles.quick]\nseeds = []\n", "seeds must be a list"),
    "no datasets": (
        "[profiles.paper]\n[profiles.quick]\ndatasets = []\n",
        "datasets is empty (leave it out for all ten)",
    ),
    "option nan": (
        "[profiles.paper]\n[profiles.quick]\n[quick.baseline]\nhard_limit_seconds = 300\n"
        "[quick.baseline.options]\nmax_iter = nan\n",
        "option 'max_iter' of adapter 'baseline' takes a number, got nan",
    ),
}


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The harness's cache in a temporary folder; the misbehaving plugin installed beside the
    entry points; a wide console so that tables are not cut."""
    monkeypatch.setenv("DECATHLON_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(cli, "make_registry", lambda: make_registry([misbehaving]))
    monkeypatch.setattr(cli.console, "width", 240)


def main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_baseline(
    capsys: pytest.CaptureFixture[str], data_dir: str, run_dir: str, *extra: str
) -> tuple[int, str, str]:
    """``run`` of the baseline on breastmnist, quick profile, from ``data_dir`` into ``run_dir``."""
    return main(
        capsys,
        "run",
        "--adapter",
        "baseline",
        "--profile",
        "quick",
        "--datasets",
        "breastmnist",
        "--data-dir",
        data_dir,
        "--no-download",
        "--no-progress",
        "--run-dir",
        run_dir,
        *extra,
    )


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``folder``: content hash and modification time."""
    return {
        str(p.relative_to(folder)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def finished_run(tiny_catalog: TinyData, tmp_path: Path) -> Path:
    """A run directory holding one finished task, made by the harness itself."""
    config = RunConfig(
        adapter="mis_good",
        profile="quick",
        datasets=("breastmnist",),
        data_dir=str(tiny_catalog.data_dir),
        download=False,
        info_path=str(tiny_catalog.info_path),
        kill_grace=1.0,
    )
    run_dir = tmp_path / "existing"
    Runner(config, make_registry([misbehaving])).run(run_dir)
    assert (run_dir / "tasks" / "breastmnist" / "seed0" / "result.json").is_file()
    return run_dir


@pytest.mark.parametrize("case", sorted(BAD_BUDGETS))
def test_plan_with_a_bad_budgets_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, case: str
) -> None:
    text, fragment = BAD_BUDGETS[case]
    path = tmp_path / "budgets.toml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    code, _, err = main(
        capsys, "plan", "--adapter", "baseline", "--profile", "quick", "--budgets", str(path)
    )
    assert_one_line_error(code, err, "budgets.toml", fragment)


def test_plan_prints_budgets_and_worst_case(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = main(capsys, "plan", "--adapter", "autosklearn", "--datasets", "dermamnist")
    assert code == 0 and err == ""
    assert "dermamnist" in out and "14400s" in out and "4h15m" in out
    assert "worst case" in out


def test_plan_takes_all_adapters_as_run_does(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "make_registry", make_registry)  # the built-in adapters alone
    code, out, err = main(capsys, "plan", "--adapter", "all", "--datasets", "breastmnist")
    assert code == 0 and err == "", err
    titles = [line.split(",")[0].strip() for line in out.splitlines() if "profile 'paper'" in line]
    assert titles == sorted(make_registry().adapters)
    assert out.count("worst case") == len(titles)


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["plan"], ["--adapter is required"]),
        (
            ["plan", "--adapter", "baselin"],
            ["unknown adapter 'baselin'", "Did you mean 'baseline'"],
        ),
        (["plan", "--adapter", "baseline", "--profile", "quik"], ["unknown profile 'quik'"]),
        (["plan", "--adapter", "baseline", "--datasets", "breastmnit"], ["unknown dataset"]),
        (["plan", "--adapter", "baseline", "--scale-factor", "0"], ["scale factor must be"]),
        (["plan", "--adapter", "baseline", "--scale-factor", "inf"], ["scale factor must be"]),
        (["plan", "--adapter", "baseline", "--scale-factor", "1e308"], ["infinite"]),
        (["plan", "--adapter", "baseline", "--option", "pca=3"], ["has no option 'pca'"]),
        (
            ["plan", "--adapter", "baseline", "--option", "max_iter=lots"],
            ["option 'max_iter' of adapter 'baseline' takes a number, got 'lots'"],
        ),
        (
            ["plan", "--adapter", "portfolio", "--option", "configs=res-geo,vgg-9"],
            ["adapter 'portfolio': option configs: no configuration 'vgg-9'"],
        ),
        (
            ["plan", "--adapter", "portfolio", "--option", "precision=fp16"],
            ["adapter 'portfolio': option precision: 'fp16' is not one of auto, fp32"],
        ),
        (
            ["plan", "--adapter", "baseline", "--option", "max_iter=1", "--option", "max_iter=2"],
            ["--option max_iter is given twice (1, then 2); give it once"],
        ),
        (
            ["check", "baseline", "--option", "max_iter=1", "--option", "max_iter=1"],
            ["--option max_iter is given twice"],
        ),
        (
            ["run", "--adapter", "baseline", "--option", "max_iter=1", "--option", "max_iter=2"],
            ["--option max_iter is given twice"],
        ),
        (["plan", "--adapter", "baseline", "--budgets", "/nonexistent/b.toml"], ["no such"]),
        (["show", "/nonexistent/run"], ["/nonexistent/run"]),
        (["check", "no_such_adapter"], ["unknown adapter 'no_such_adapter'"]),
    ],
)
def test_expected_problems_are_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], fragments: list[str]
) -> None:
    code, _, err = main(capsys, *argv)
    assert_one_line_error(code, err, *fragments)


@pytest.mark.parametrize("case", ["unknown key", "bad toml", "negative"])
def test_bad_budgets_leave_an_existing_run_untouched(
    capsys: pytest.CaptureFixture[str],
    tiny_catalog: TinyData,
    monkeypatch: pytest.MonkeyPatch,
    finished_run: Path,
    tmp_path: Path,
    case: str,
) -> None:
    monkeypatch.setenv("DECATHLON_INFO", str(tiny_catalog.info_path))
    before = snapshot(finished_run)
    text, fragment = BAD_BUDGETS[case]
    bad = tmp_path / "budgets.toml"
    bad.write_text(text, encoding="utf-8", errors="surrogateescape")

    # A new run into the existing folder, with a bad budgets file.
    data_dir = str(tiny_catalog.data_dir)
    code, _, err = run_baseline(capsys, data_dir, str(finished_run), "--budgets", str(bad))
    assert_one_line_error(code, err, fragment)
    assert snapshot(finished_run) == before

    # Resuming after the run's own budgets file was broken.
    config_path = finished_run / "config.json"
    record = json.loads(config_path.read_text())
    record["config"]["budgets_path"] = str(bad)
    config_path.write_text(json.dumps(record))
    before = snapshot(finished_run)
    code, _, err = main(capsys, "run", "--resume", str(finished_run), "--no-progress")
    assert_one_line_error(code, err, fragment)
    assert snapshot(finished_run) == before


def test_existing_run_dir_is_never_overwritten(
    capsys: pytest.CaptureFixture[str], tiny_catalog: TinyData, monkeypatch, finished_run: Path
) -> None:
    monkeypatch.setenv("DECATHLON_INFO", str(tiny_catalog.info_path))
    before = snapshot(finished_run)
    code, _, err = run_baseline(capsys, str(tiny_catalog.data_dir), str(finished_run))
    assert_one_line_error(code, err, "already holds a run", "--resume")
    assert snapshot(finished_run) == before


def test_resume_problems(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = main(capsys, "run", "--resume", str(empty))
    assert_one_line_error(code, err, "holds no run to resume")
    (empty / "config.json").write_text("{half a file")
    code, _, err = main(capsys, "run", "--resume", str(empty))
    assert_one_line_error(code, err, "config.json: not valid JSON")
    # A file, or a config.json that is a folder, is no question of JSON (the line said so).
    (empty / "config.json").unlink()
    (empty / "config.json").mkdir()
    code, _, err = main(capsys, "run", "--resume", str(empty))
    assert_one_line_error(code, err, "config.json: cannot be read (Is a directory)")
    a_file = tmp_path / "a-file"
    a_file.write_text("kept\n")
    code, _, err = main(capsys, "run", "--resume", str(a_file))
    assert_one_line_error(code, err, f"{a_file} is a file, not a run folder")


@pytest.mark.parametrize(
    "content",
    ["{}", "[]", '{"config": {}}', '{"config": "x"}', '{"config": {"datasets": 5}}'],
)
def test_resume_of_a_config_that_is_not_one(
    capsys: pytest.CaptureFixture[str], finished_run: Path, content: str
) -> None:
    (finished_run / "config.json").write_text(content)
    before = snapshot(finished_run)
    code, _, err = main(capsys, "run", "--resume", str(finished_run), "--no-progress")
    assert_one_line_error(code, err, "config.json: not a run's configuration")
    assert snapshot(finished_run) == before


def test_resume_of_a_run_whose_adapter_options_changed_since(
    capsys: pytest.CaptureFixture[str], finished_run: Path
) -> None:
    """An adapter's default options live in its code: after an upgrade that changed one, a
    resume ran the remaining tasks with it, beside rows made with the old one, while the
    budgets-file check passed and config.json still recorded the old value."""
    record = json.loads((finished_run / "config.json").read_text())
    assert record["adapter"]["options"]["sleep_seconds"] == 0.0
    record["adapter"]["options"]["sleep_seconds"] = 2.5  # the value of the run's start
    (finished_run / "config.json").write_text(json.dumps(record))
    before = snapshot(finished_run)
    code, _, err = main(capsys, "run", "--resume", str(finished_run), "--no-progress")
    assert_one_line_error(
        code, err, "config.json: adapter 'mis_good' option 'sleep_seconds' is 0.0 now, 2.5 when"
    )
    assert snapshot(finished_run) == {**before, ".lock": snapshot(finished_run)[".lock"]}


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (lambda options: options.pop("sleep_seconds"), "'sleep_seconds' is 0.0 now, absent when"),
        (lambda options: options.update(aa_gone=1), "'aa_gone' is absent now, 1 when"),
    ],
)
def test_resume_of_a_run_whose_adapter_gained_or_lost_an_option_since(
    capsys: pytest.CaptureFixture[str], finished_run: Path, edit: Any, said: str
) -> None:
    """Options were compared only where both config.json and the adapter had them: an option
    the adapter gained since (an upgrade) gave the remaining tasks its default silently, beside
    rows made without it. Now it is refused as a changed value is, and so is one it lost."""
    record = json.loads((finished_run / "config.json").read_text())
    edit(record["adapter"]["options"])  # the options of the run's start
    (finished_run / "config.json").write_text(json.dumps(record))
    before = snapshot(finished_run)
    code, _, err = main(capsys, "run", "--resume", str(finished_run), "--no-progress")
    assert_one_line_error(code, err, f"config.json: adapter 'mis_good' option {said}")
    assert snapshot(finished_run) == {**before, ".lock": snapshot(finished_run)[".lock"]}


def test_resume_of_a_run_whose_adapter_is_gone(
    capsys: pytest.CaptureFixture[str], finished_run: Path
) -> None:
    """The run's plugin was uninstalled since: the line read "unknown adapter 'mis_goner'. Did
    you mean 'mis_good'?", a name the user never typed, and said nothing of the run."""
    record = json.loads((finished_run / "config.json").read_text())
    record["config"]["adapter"] = "mis_goner"
    (finished_run / "config.json").write_text(json.dumps(record))
    before = snapshot(finished_run)
    code, _, err = main(capsys, "run", "--resume", str(finished_run), "--retry-failed")
    assert_one_line_error(
        code, err, "config.json: the run's adapter 'mis_goner' is not registered now"
    )
    assert "Did you mean" not in err
    assert snapshot(finished_run) == before


@pytest.mark.parametrize(
    ("field", "value"),
    [("scale_factor", "x"), ("seeds", ["a"]), ("n_jobs", True), ("kill_grace", None)],
)
def test_resume_of_a_config_with_a_field_of_another_type(
    capsys: pytest.CaptureFixture[str], finished_run: Path, field: str, value: object
) -> None:
    """A field of another type ended ``--resume`` with a TypeError deep in the run."""
    record = json.loads((finished_run / "config.json").read_text())
    record["config"][field] = value
    (finished_run / "config.json").write_text(json.dumps(record))
    before = snapshot(finished_run)
    code, _, err = main(capsys, "run", "--resume", str(finished_run), "--no-progress")
    assert_one_line_error(code, err, "config.json: not a run's configuration", f"'{field}' is")
    assert snapshot(finished_run) == before


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--sandbox", "required"], "--sandbox"),
        (["--network", "off", "--jobs", "1"], "--jobs, --network"),
        (["--option", "max_iter=3"], "--option"),
        (["--adapter", "baseline", "--datasets", "retinamnist"], "--adapter, --datasets"),
    ],
)
def test_resume_refuses_flags_that_would_change_the_run(
    capsys: pytest.CaptureFixture[str], finished_run: Path, flags: list[str], named: str
) -> None:
    # Before, these were read and silently ignored: a run resumed with --sandbox required
    # could finish unsealed.
    before = snapshot(finished_run)
    code, _, err = main(capsys, "run", "--resume", str(finished_run), "--no-progress", *flags)
    assert_one_line_error(code, err, f"{named} would change it")
    assert snapshot(finished_run) == before


def test_a_run_folder_in_use_by_another_harness_is_refused(
    capsys: pytest.CaptureFixture[str], finished_run: Path
) -> None:
    """A ``--resume`` typed while the run still goes took the first harness's task for an
    interrupted one and stopped its worker (a false ``error`` row). The folder is held with a
    kernel lock for as long as a harness works on it (here by this process, through another
    open file, as a second harness would); the lock goes with the process that held it."""
    board = (finished_run / "leaderboard.csv").read_bytes()
    with rundir.hold(finished_run):
        code, _, err = main(capsys, "run", "--resume", str(finished_run), "--no-progress")
        assert_one_line_error(code, err, "is in use by another decathlon process", f"{os.getpid()}")
        assert (finished_run / "leaderboard.csv").read_bytes() == board
    code, _, _ = main(capsys, "run", "--resume", str(finished_run), "--no-progress")
    assert code == 0


def test_a_run_resumed_from_another_folder_keeps_its_budgets_and_data(
    capsys: pytest.CaptureFixture[str],
    tiny_catalog: TinyData,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Relative ``--budgets`` and ``--data-dir`` were stored as typed: a resume from another
    folder read another budgets file (or ``./budgets.toml`` of that folder) and looked for the
    data elsewhere. Both are stored by their full names now, and a budgets file changed since
    the run started is refused in one line, the run left as it was."""
    monkeypatch.setenv("DECATHLON_INFO", str(tiny_catalog.info_path))
    start = tmp_path / "start"
    start.mkdir()
    (start / "data").symlink_to(tiny_catalog.data_dir)
    shutil.copyfile(resources.data_file("budgets.toml"), start / "mine.toml")
    monkeypatch.chdir(start)
    code, _, err = run_baseline(capsys, "data", "run", "--budgets", "mine.toml")
    assert code == 0, err
    config = json.loads((start / "run" / "config.json").read_text())["config"]
    assert config["budgets_path"] == str(start / "mine.toml")
    assert Path(config["data_dir"]).is_absolute() and Path(config["data_dir"]).is_dir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "budgets.toml").write_text("[profiles.paper]\n[profiles.quick]\n")
    monkeypatch.chdir(elsewhere)
    code, _, err = main(capsys, "run", "--resume", str(start / "run"), "--no-progress")
    assert code == 0, err
    with open(start / "mine.toml", "a") as handle:
        handle.write("# edited\n")
    before = snapshot(start / "run")
    code, _, err = main(capsys, "run", "--resume", str(start / "run"), "--no-progress")
    assert_one_line_error(code, err, "mine.toml has changed since this run started")
    assert snapshot(start / "run") == {**before, ".lock": snapshot(start / "run")[".lock"]}


@pytest.mark.parametrize("old_config", [False, True], ids=["recorded", "config-json-from-before"])
def test_a_resume_reads_the_data_folder_and_metadata_the_run_started_with(
    capsys: pytest.CaptureFixture[str],
    tiny_catalog: TinyData,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    old_config: bool,
) -> None:
    """``DECATHLON_DATA_DIR`` and ``DECATHLON_INFO`` were not recorded (config.json said null): a
    resume without them looked in ~/.medmnist under the published metadata, and the task it ran
    again failed. Both are recorded by their full names now, however they were found; a
    config.json from before (null, no ``*_from``) resumes as before, from the variables."""
    home = tmp_path / "user"  # an empty ~/.medmnist
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    data = tmp_path / "data"
    data.symlink_to(tiny_catalog.data_dir)
    monkeypatch.setenv("DECATHLON_DATA_DIR", str(data))
    monkeypatch.setenv("DECATHLON_INFO", str(tiny_catalog.info_path))
    run_dir = tmp_path / "run"
    argv = ["--adapter", "baseline", "--profile", "quick", "--datasets", "breastmnist,retinamnist"]
    code, _, err = main(
        capsys, "run", *argv, "--no-download", "--no-progress", "--run-dir", str(run_dir)
    )
    assert code == 0, err
    path = rundir.config_path(run_dir)
    record = json.loads(path.read_text())
    config = record["config"]
    assert config["data_dir"] == str(data.resolve())
    assert config["data_dir_from"] == "DECATHLON_DATA_DIR"
    assert config["info_path"] == str(tiny_catalog.info_path.resolve())
    assert config["info_from"] == "DECATHLON_INFO"
    if old_config:
        del config["data_dir_from"], config["info_from"]
        config["data_dir"] = config["info_path"] = None
        path.write_text(json.dumps(record))
    else:
        monkeypatch.delenv("DECATHLON_DATA_DIR")
        monkeypatch.delenv("DECATHLON_INFO")
    (rundir.task_dir(run_dir, "retinamnist", 0) / rundir.RESULT).unlink()  # killed in this task
    code, _, err = main(capsys, "run", "--resume", str(run_dir), "--no-progress")
    assert code == 0, err
    rows = leaderboard.read(rundir.leaderboard_path(run_dir))
    tasks = [r for r in rows if r["dataset"] != leaderboard.SUMMARY_DATASET]
    assert len(tasks) == 6 and {r["status"] for r in tasks} == {"ok"}, tasks


def test_a_run_folder_that_is_a_file_is_one_line(
    capsys: pytest.CaptureFixture[str], tiny_catalog: TinyData, monkeypatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DECATHLON_INFO", str(tiny_catalog.info_path))
    (tmp_path / "afile").write_text("mine")
    code, _, err = run_baseline(capsys, str(tiny_catalog.data_dir), str(tmp_path / "afile"))
    assert_one_line_error(code, err, "afile is a file, not a run folder")
    assert (tmp_path / "afile").read_text() == "mine"


def _damage(how: str, result: bytes) -> bytes:
    if how == "truncated":  # as a full disk or a crash mid-copy leaves it
        return result[:10]
    rows = json.loads(result)["rows"]
    if how == "no rows":
        rows = []
    elif how == "another task's":  # copied over from retinamnist's folder
        rows = [dict(row, dataset="retinamnist") for row in rows]
    elif how == "seed not a number":
        rows = [dict(row, seed="x") for row in rows]
    elif how == "a split twice":
        rows = [*rows, rows[-1]]
    return json.dumps({"rows": rows}).encode()


@pytest.mark.parametrize(
    "how", ["truncated", "no rows", "another task's", "seed not a number", "a split twice"]
)
def test_resume_reruns_a_task_whose_result_is_damaged(
    capsys: pytest.CaptureFixture[str], finished_run: Path, how: str
) -> None:
    """A ``result.json`` that is not this task's rows runs again: an empty one counted as
    finished for ever, another task's gave duplicate rows, a seed not a number a traceback."""
    task = finished_run / "tasks" / "breastmnist" / "seed0"
    damaged = _damage(how, (task / "result.json").read_bytes())
    (task / "result.json").write_bytes(damaged)
    code, out, _ = main(capsys, "run", "--resume", str(finished_run), "--no-progress")
    assert code == 0
    assert "cannot be read as a task's result: running the task again" in out
    assert json.loads((task / "result.json").read_text())["rows"]
    assert (task / "attempts" / "1" / "result.json").read_bytes() == damaged
    rows = [r for r in leaderboard.read(finished_run / "leaderboard.csv")]
    assert {r["status"] for r in rows if r["dataset"] == "breastmnist"} == {"ok"}


def test_a_seed_or_dataset_named_twice_is_one_task(
    capsys: pytest.CaptureFixture[str], tiny_catalog: TinyData, monkeypatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DECATHLON_INFO", str(tiny_catalog.info_path))
    code, out, err = main(
        capsys, "run", "--adapter", "mis_good", "--profile", "quick",
        "--datasets", "breastmnist,BreastMNIST", "--seeds", "0,0",
        "--data-dir", str(tiny_catalog.data_dir), "--no-download", "--no-progress",
        "--run-dir", str(tmp_path / "twice"),
    )  # fmt: skip
    assert code == 0, err
    rows = leaderboard.read(tmp_path / "twice" / "leaderboard.csv")
    assert [r["split"] for r in rows if r["dataset"] == "breastmnist"].count("test") == 1


def test_show_a_finished_run(capsys: pytest.CaptureFixture[str], finished_run: Path) -> None:
    code, out, err = main(capsys, "show", str(finished_run))
    assert code == 0 and err == ""
    assert "breast" in out and "mis_good" in out  # show prints the short dataset names


def test_a_run_on_generated_data_is_not_verified_and_compare_says_so(
    capsys: pytest.CaptureFixture[str],
    tiny_catalog: TinyData,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Under ``DECATHLON_INFO`` (generated files, whose MD5s their own info.json names) every row
    said ``data_verified=true``, ``compare`` ranked the run beside the published tables with no
    mark, and the report said every data file had its published MD5."""
    monkeypatch.setenv("DECATHLON_INFO", str(tiny_catalog.info_path))
    run_dir = tmp_path / "run"
    code, _, err = run_baseline(capsys, str(tiny_catalog.data_dir), str(run_dir))
    assert code == 0, err
    rows = leaderboard.read(rundir.leaderboard_path(run_dir))
    assert rows and {r["data_verified"] for r in rows} == {"false"}
    page = tmp_path / "report.html"
    argv = ["compare", str(run_dir), "--reference", "v2", "--datasets", "breastmnist"]
    code, out, err = main(capsys, *argv, "--bootstrap", "0", "--report", str(page))
    assert code == 0, err
    assert "run/baseline §" in out and "§ = some rows ran on data files without the" in out
    text = page.read_text()
    assert "NO: some data files did not have the published MD5" in text
    assert "yes: every data file had its published MD5" not in text


def test_generate_and_plan_count_one_dataset_in_the_singular(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = main(capsys, "generate", str(tmp_path), "--datasets", "breastmnist")
    assert code == 0 and out.startswith("1 dataset in ")
    code, out, _ = main(
        capsys, "generate", str(tmp_path / "two"), "--datasets", "breastmnist,octmnist"
    )
    assert code == 0 and out.startswith("2 datasets in ")
    code, out, _ = main(capsys, "plan", "--adapter", "baseline", "--datasets", "breastmnist")
    assert code == 0 and "\n1 task; worst case" in out


def test_generate_writes_the_published_sizes_each_file_verified(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``generate ROOT --published``: generated files with each dataset's published images per
    split (a whole decathlon for wall time where the real files are not) and an info.json under
    which each loads with the MD5 its info.json names (not verified: not the published files)."""
    flags = ["breastmnist", "retinamnist", "dermamnist"]
    code, out, _ = main(
        capsys, "generate", str(tmp_path), "--published", "--datasets", ",".join(flags)
    )
    assert code == 0 and "DECATHLON_INFO=" in out
    catalog = datasets.Catalog.load(tmp_path / "info.json")
    published = datasets.Catalog.load(datasets.BUNDLED_INFO)
    for flag in flags:
        data = datasets.load(
            catalog,
            flag,
            tmp_path / "data",
            download=False,
            progress=False,
            cache_root=tmp_path / "cache",
        )
        assert data.verified is False and data.md5 == catalog.info(flag).md5
        for split, n in published.info(flag).n_samples.items():
            assert len(data.arrays[f"{split}_labels"]) == n
    assert sorted(p.name for p in (tmp_path / "data").glob("*.npz")) == sorted(
        f"{f}.npz" for f in flags
    )
    code, _, err = main(capsys, "generate", str(tmp_path / "other"), "--datasets", "brest")
    assert_one_line_error(code, err, "unknown dataset 'brest'")
    assert not (tmp_path / "other").exists()
    # Into a folder that holds anything (real files, say): refused, nothing touched.
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    code, _, err = main(capsys, "generate", str(tmp_path), "--datasets", "breastmnist")
    assert_one_line_error(code, err, "is not an empty folder")
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == before


def test_real_process_exit_code_and_stderr(tmp_path: Path) -> None:
    """The same through a real ``python -m decathlon`` process: exit 2, one line, no traceback."""
    bad = tmp_path / "budgets.toml"
    bad.write_text(BAD_BUDGETS["unknown key"][0], encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "decathlon", "plan", "--adapter", "baseline", "--budgets", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: budgets.toml: [quick.baseline]: unknown key 'hard_limit_second'")


# ---------------------------------------------------------------------------- exit codes


def _run_args(data_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        "run",
        "--profile",
        "quick",
        "--data-dir",
        str(data_dir),
        "--run-dir",
        str(run_dir),
        "--no-progress",
        *extra,
    ]


def test_run_exits_0_only_when_every_task_is_ok(
    capsys: pytest.CaptureFixture[str], tiny_catalog: TinyData, monkeypatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DECATHLON_INFO", str(tiny_catalog.info_path))
    flags = "breastmnist,retinamnist"
    args = _run_args(tiny_catalog.data_dir, tmp_path / "good", "--no-download")
    code, out, err = main(capsys, *args, "--adapter", "mis_good", "--datasets", flags)
    assert code == 0 and err == "", err
    # Train scores not given is still an ok task.
    args = _run_args(tiny_catalog.data_dir, tmp_path / "no-train", "--no-download")
    code, out, err = main(
        capsys,
        *args,
        "--adapter",
        "mis_good",
        "--datasets",
        flags,
        "--option",
        "train_scores=false",
    )
    assert code == 0 and err == "", err
    # One task fails: exit 1, and the last line says how many and where the reasons are.
    args = _run_args(tiny_catalog.data_dir, tmp_path / "one-bad", "--no-download")
    code, out, err = main(
        capsys,
        *args,
        "--adapter",
        "mis_good",
        "--datasets",
        flags,
        "--option",
        'fail_on=["retinamnist"]',
    )
    assert code == 1
    board = tmp_path / "one-bad" / "leaderboard.csv"
    (line,) = err.splitlines()
    assert line.startswith("1 of 2 tasks did not end ok (1 error)")
    assert f"reason column of {board}" in line
    assert out.count("failing on retinamnist as asked") == 1, out


def test_a_run_without_data_exits_1_and_prints_each_failure_once(tmp_path: Path) -> None:
    """The README's main command with no data and no download, as a real process: every task
    fails in well under a second; each failure is printed once, the exit code is 1."""
    data_dir = tmp_path / "nodata"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "decathlon",
            *_run_args(data_dir, tmp_path / "run", "--no-download", "--adapter", "baseline"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "400", "DECATHLON_HOME": str(tmp_path / "home")},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    (last,) = result.stderr.splitlines()
    assert last.startswith("10 of 10 tasks did not end ok (10 error); the reasons are in")
    everything = result.stdout + result.stderr
    for flag in datasets.DECATHLON_FLAGS:
        message = f"{flag}.npz is not in {data_dir} and downloading is off; download it from"
        assert everything.count(message) == 1, (flag, everything)


def test_redownload_replaces_a_damaged_file(
    capsys: pytest.CaptureFixture[str],
    tiny_catalog: TinyData,
    monkeypatch,
    tmp_path: Path,
    http_server: tuple[str, Path],
) -> None:
    """The message for a damaged file names --redownload; ``run --redownload`` deletes the file,
    downloads it (here from a real local server through --mirror) and checks it again."""
    monkeypatch.setenv("DECATHLON_INFO", str(tiny_catalog.info_path))
    base, served = http_server
    copy_dataset(tiny_catalog.data_dir, "breastmnist", served)
    data_dir = tmp_path / "data"
    damaged = copy_dataset(tiny_catalog.data_dir, "breastmnist", data_dir)
    damaged.write_bytes(damaged.read_bytes()[:-100] + bytes(100))
    common = ["--adapter", "mis_good", "--datasets", "breastmnist", "--mirror", base]

    code, out, err = main(capsys, *_run_args(data_dir, tmp_path / "r1"), *common)
    assert code == 1
    assert "pass --redownload" in out
    code, out, err = main(capsys, *_run_args(data_dir, tmp_path / "r2", "--redownload"), *common)
    assert code == 0, out + err
    assert damaged.read_bytes() == (served / "breastmnist.npz").read_bytes()
    assert json.loads((tmp_path / "r2" / "config.json").read_text())["config"]["redownload"]

    with pytest.raises(SystemExit) as exited:
        cli.main([*_run_args(data_dir, tmp_path / "r3", "--redownload", "--no-download"), *common])
    assert_one_line_error(exited.value.code, capsys.readouterr().err, "not allowed with argument")


@pytest.mark.parametrize(
    ("folder", "secret"),
    [("m", "?token=s3cret"), ("m", ""), ("m#1", "")],
    ids=["with-a-token", "without", "a-hash-in-the-folder"],
)
def test_config_json_keeps_no_mirror_secret_and_resume_takes_the_mirror_again(
    capsys: pytest.CaptureFixture[str],
    tiny_catalog: TinyData,
    monkeypatch,
    tmp_path: Path,
    http_server: tuple[str, Path],
    folder: str,
    secret: str,
) -> None:
    """config.json recorded ``--mirror URL?token=...`` as given, in a file users share. Now it
    records the URL without credentials or query; a resume that must download from such a
    mirror says in one line to give --mirror again, and takes it; a mirror without a secret
    resumes from config.json as before, a '#' in its folder (no secret) included."""
    monkeypatch.setenv("DECATHLON_INFO", str(tiny_catalog.info_path))
    base, served = http_server
    (served / folder).mkdir()
    copy_dataset(tiny_catalog.data_dir, "breastmnist", served / folder)  # retinamnist: not yet
    mirror = f"{base}/{folder}{secret}"
    data_dir, run_dir = tmp_path / "data", tmp_path / "run"
    flags = ["--adapter", "mis_good", "--datasets", "breastmnist,retinamnist"]
    code, out, err = main(capsys, *_run_args(data_dir, run_dir, "--mirror", mirror), *flags)
    assert code == 1 and "HTTP 404" in out, out + err  # retinamnist
    record = json.loads((run_dir / "config.json").read_text())
    assert record["config"]["mirror"] == f"{base}/{folder}"
    assert record["config"].get("mirror_withheld", False) is bool(secret)

    copy_dataset(tiny_catalog.data_dir, "retinamnist", served / folder)
    resume = ["run", "--resume", str(run_dir), "--retry-failed", "--no-progress"]
    if secret:
        code, out, err = main(capsys, *resume)
        assert_one_line_error(
            code,
            err,
            f"{run_dir}: retinamnist.npz must be downloaded from the mirror {base}/m, whose"
            " credentials or query config.json does not keep: resume with --mirror URL again",
        )
        assert not (data_dir / "retinamnist.npz").exists()
        code, out, err = main(capsys, *resume, "--mirror", mirror)
    else:
        code, out, err = main(capsys, *resume)
    assert code == 0, out + err
    rows = leaderboard.read(run_dir / "leaderboard.csv")
    assert {r["status"] for r in rows if r["dataset"] != "decathlon"} == {"ok"}
    assert (data_dir / "retinamnist.npz").read_bytes() == (
        served / folder / "retinamnist.npz"
    ).read_bytes()
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert b"s3cret" not in path.read_bytes(), path
    assert json.loads((run_dir / "config.json").read_text())["config"] == record["config"]


def test_a_task_on_a_worker_that_needs_a_withheld_mirror_is_a_row_that_says_so(
    tiny_catalog: TinyData, tmp_path: Path
) -> None:
    """Where the client cannot look first (a Dask worker's own data folder), the task that
    needs the file says it, without asking the mirror without its token."""
    config = RunConfig(
        adapter="mis_good",
        profile="quick",
        datasets=("breastmnist",),
        seeds=(0,),
        data_dir=str(tmp_path / "empty"),
        mirror="http://127.0.0.1:9/m",
        mirror_withheld=True,
        info_path=str(tiny_catalog.info_path),
        n_jobs=1,
    )
    runner = Runner(config, make_registry([misbehaving]))
    (task,) = runner.plan()
    rows = runner.execute(tmp_path / "run", task)
    assert {r["status"] for r in rows} == {"error"}
    assert rows[0]["reason"] == (
        "data: breastmnist.npz must be downloaded from the mirror http://127.0.0.1:9/m, whose"
        " credentials or query config.json does not keep: resume with --mirror URL again"
    )


# ---------------------------------------------------------------------------- flags in messages

#: Arguments the code passes to other programs (pip, nvidia-smi), as whole strings.
ARGUMENTS_OF_OTHERS = {"--no-cache-dir", "--disable-pip-version-check", "--upgrade",
                       "--query-gpu=name", "--format=csv,noheader",
                       # bubblewrap's, in decathlon/sandbox.py
                       "--unshare-pid", "--unshare-ipc", "--die-with-parent", "--new-session",
                       "--unshare-user", "--cap-drop", "--unshare-net", "--ro-bind", "--symlink",
                       "--proc", "--dev", "--ro-bind-try", "--dev-bind", "--tmpfs", "--bind",
                       "--chdir", "--args", "--info-fd", "--seccomp", "--version",
                       "--remount-ro", "--size", "--help",
                       # nsenter's, in decathlon/enforcement.py
                       "--ipc=/proc/",
                       # pip's and uv's, in decathlon/environments.py and pipconfig.py
                       "--pre", "--no-build-isolation", "--no-index", "--only-binary",
                       "--no-binary", "--index-url", "--extra-index-url", "--find-links",
                       "--no-cache", "--prerelease", "--python", "--compile-bytecode",
                       "--ignore-requires-python",
                       "--managed-python", "--no-python-downloads", "--quiet", "--no-deps",
                       "--output-file", "--python-version", "--python-platform", "--no-header",
                       "--no-annotate", "--allow-insecure-host", "--index-strategy",
                       "--constraint"}  # fmt: skip
#: Flags of another program that a message quotes (`dask worker ... --nworkers 1`).
FLAGS_OF_OTHERS = {"--nworkers", "--nthreads", "--resources"}
#: The commands whose output a module's messages appear in, when a message names none.
SPOKEN_IN = {
    "datasets": ("run",),
    "download": ("run",),
    "runner": ("run",),
    "distributed": ("run",),
    "budgets": ("run", "plan"),
    "environments": ("run", "setup"),
    "conformance": ("check",),
    "sandbox": ("run",),
}
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*(?:=\w+)?")
_NAMED = re.compile(r"\b(run|setup|plan|check|show|compare|list|export-automl-vision)\s+$")


def _message_strings(path: Path) -> list[str]:
    """The string constants of a module that can reach a user: every literal (f-strings too),
    less docstrings and the flag names that ``add_argument`` defines."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            if isinstance(body[0].value, ast.Constant):
                skip.add(id(body[0].value))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "add_argument"
        ):
            skip.update(id(arg) for arg in node.args)
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
    ]


def test_every_flag_a_message_names_exists() -> None:
    """A message that says "pass --x" is a promise: --x exists in the command the message
    refers to (the one named just before the flag, else the ones the module speaks in)."""
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    options = {name: set(p._option_string_actions) for name, p in sub.choices.items()}
    everywhere = set().union(*options.values())
    repo = Path(cli.__file__).resolve().parents[1]
    sources = sorted((repo / "decathlon").glob("*.py")) + sorted((repo / "adapters").rglob("*.py"))
    problems, seen = [], 0
    for path in sources:
        for text in _message_strings(path):
            if text in ARGUMENTS_OF_OTHERS:
                continue
            for match in _FLAG.finditer(text):
                flag = match.group().split("=")[0]
                if flag in FLAGS_OF_OTHERS:
                    continue
                seen += 1
                named = _NAMED.search(text[: match.start()])
                commands = (named.group(1),) if named else SPOKEN_IN.get(path.stem)
                if commands is None:
                    ok = flag in everywhere
                else:
                    ok = all(flag in options[c] for c in commands)
                if not ok:
                    where = ", ".join(commands or ("any command",))
                    problems.append(f"{path.name}: {flag} ({where}) in {text!r}")
    assert seen > 20
    assert problems == []


class _CommandPlugin:
    """A third-party plugin that adds a command through decathlon_add_commands."""

    def __init__(self, name: str) -> None:
        self.name = name

    @hookimpl
    def decathlon_add_commands(self, commands) -> None:
        parser = commands.add_parser(self.name, help="say hello")
        parser.add_argument("--who", default="world")
        parser.set_defaults(handler=lambda args: print(f"hello {args.who}") or 3)


def test_a_plugin_adds_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    parser = cli.build_parser(make_registry([_CommandPlugin("hello")]))
    args = parser.parse_args(["hello", "--who", "decathlon"])
    assert args.handler(args) == 3
    assert capsys.readouterr().out == "hello decathlon\n"
    # the built-in commands are still there, and so is the built-in plugin's command
    assert parser.parse_args(["list"]).command == "list"
    assert parser.parse_args(["export-automl-vision", "--dataset", "x", "--out", "y"]).handler


def test_a_plugin_command_that_takes_a_builtin_name_names_the_plugin() -> None:
    with pytest.raises(PluginError, match=r"plugin '.*' adds a command: .*conflicting.*\brun\b"):
        cli.build_parser(make_registry([_CommandPlugin("run")], entry_points=False))


def _plugin_file(site: Path, name: str, source: str) -> Path:
    """A single-file plugin ``site/NAME.py`` found through the ``decathlon`` entry-point group,
    as ``pip install`` of a one-module distribution leaves it."""
    dist = site / f"{name}-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[decathlon]\n{name} = {name}\n")
    path = site / f"{name}.py"
    path.write_text(source)
    return path


@pytest.mark.parametrize(
    ("first_line", "error"),
    [
        ("import nonexistent_pkg", "ModuleNotFoundError: No module named 'nonexistent_pkg'"),
        ("def broken(:", "SyntaxError: invalid syntax"),
        ("import sys; sys.exit(0)", "SystemExit: 0"),
    ],
    ids=["missing-package", "syntax-error", "exits"],
)
@pytest.mark.parametrize("command", ["list", "check"])
def test_a_plugin_file_that_fails_to_import_is_one_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    command: str,
    first_line: str,
    error: str,
) -> None:
    """An installed single-file plugin that raises at import made every command a traceback
    from inside pluggy."""
    name = "plugin_broken_file"
    path = _plugin_file(tmp_path / "site", name, first_line + "\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    argv = ["list"] if command == "list" else ["check", "baseline"]
    try:
        code, out, err = main(capsys, *argv)
    finally:
        sys.modules.pop(name, None)
    assert_one_line_error(
        code,
        err,
        f"plugin '{name}' (entry point '{name} = {name}' of {name} 0.1) cannot be imported:",
        error,
        f"while importing {path}; fix the file or uninstall {name}",
    )
    assert out == ""


def test_two_plugins_of_one_entry_point_name_are_named(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A plugin whose entry point is named as a built-in one's (``baseline``): pluggy loaded the
    first of the two it met and skipped the other without a word, so either the plugin's
    adapters or the built-in baseline were missing from every command."""
    name = "plugin_same_entry_point"
    _plugin_file(tmp_path / "site", name, PLUGIN_FILE.format(name=name))
    dist = tmp_path / "site" / f"{name}-0.1.dist-info"
    (dist / "entry_points.txt").write_text(f"[decathlon]\nbaseline = {name}\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    try:
        code, out, err = main(capsys, "list")
    finally:
        sys.modules.pop(name, None)
    assert_one_line_error(
        code,
        err,
        "'baseline = decathlon_adapters.baseline' of medmnist-decathlon",
        f"'baseline = {name}' of {name} 0.1",
        "take the same entry-point name 'baseline': only one of them would be loaded",
    )
    assert out == ""


def test_check_of_a_plugin_file_that_fails_to_import_in_the_task_names_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The harness imports the plugin file, the task cannot (the file changed since; in an
    adapter's own environment, a package it lacks): each check says why on one line, the
    imports check too (it imports the file as the task does, not in the harness)."""
    name = "plugin_fails_in_task"
    path = _plugin_file(tmp_path / "site", name, PLUGIN_FILE.format(name=name))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    try:
        importlib.import_module(name)
        path.write_text("import nonexistent_pkg\n" + PLUGIN_FILE.format(name=name))
        code, out, err = main(capsys, "check", name, "--workdir", str(tmp_path / "check"))
    finally:
        sys.modules.pop(name, None)
    assert code == 1 and "Traceback" not in out + err
    reason = (
        f"error: ModuleNotFoundError: No module named 'nonexistent_pkg' while importing {name}.py"
    )
    failed = [line for line in out.splitlines() if line.startswith("FAIL ")]
    assert len(failed) == 5 and all(reason[len("error: ") :] in line for line in failed), out
    # the imports check imports it as the task does, in a process of its own
    assert failed[0] == f"FAIL imports: {name}: {reason[len('error: ') :]}", out
    assert all(reason in line for line in failed[1:]), out


def test_export_automl_vision_comes_through_the_hook(tiny_catalog, tmp_path: Path) -> None:
    """The core never imports a plugin: `export-automl-vision` is automl_vision's, added through
    decathlon_add_commands, and runs from `python -m decathlon` as before."""
    repo = Path(cli.__file__).resolve().parents[1]
    for path in sorted((repo / "decathlon").rglob("*.py")):
        assert "decathlon_adapters" not in path.read_text(), path
    without = cli.build_parser(make_registry(entry_points=False))
    (sub,) = [a for a in without._actions if isinstance(a, argparse._SubParsersAction)]
    assert "export-automl-vision" not in sub.choices
    out = tmp_path / "export"
    argv = ["export-automl-vision", "--dataset", "breastmnist", "--out", str(out), "--no-download"]
    argv += ["--data-dir", str(tiny_catalog.data_dir), "--info", str(tiny_catalog.info_path)]
    assert cli.main(argv) == 0
    assert (out / "breastmnist_import.csv").is_file()


def test_a_reason_with_brackets_is_printed_as_text() -> None:
    """What a task says is text: "[/red]" in an exception message (or a path in brackets) was
    read as rich markup by the line each task ends with, and the run ended in a MarkupError."""
    from types import SimpleNamespace

    from rich.console import Console

    from decathlon.reporters import PlainReporter

    out = io.StringIO()
    reporter = PlainReporter(Console(file=out, width=200))
    row = {"split": "test", "status": "error", "auc": None, "elapsed_s": 1, "reason": "[/red] [b]x"}
    reporter.task_finished(SimpleNamespace(key="breastmnist/seed0"), [row])  # type: ignore[arg-type]
    reporter.message("earlier attempts kept in runs/[/x]")
    assert out.getvalue() == (
        "breastmnist/seed0: error in 1s ([/red] [b]x)\nearlier attempts kept in runs/[/x]\n"
    )


def test_a_run_folder_with_brackets_is_printed_as_text(
    capsys: pytest.CaptureFixture[str], tiny_catalog: TinyData, monkeypatch, tmp_path: Path
) -> None:
    """A run folder named ``x[/b]`` ran every task, then ended in a MarkupError traceback: its
    path was rich markup in the results table's title and in the ``leaderboard:`` line."""
    monkeypatch.setenv("DECATHLON_INFO", str(tiny_catalog.info_path))
    run_dir = tmp_path / "x[/red]" / "[b]y"
    args = _run_args(tiny_catalog.data_dir, run_dir, "--no-download")
    code, out, err = main(capsys, *args, "--adapter", "mis_good", "--datasets", "breastmnist")
    assert code == 0 and err == "", err
    assert f"leaderboard: {run_dir / 'leaderboard.csv'}" in out
    budgets = tmp_path / "b[/x]" / "budgets.toml"
    budgets.parent.mkdir(parents=True)
    shutil.copy(Path(__file__).parents[1] / "budgets.toml", budgets)
    code, out, err = main(capsys, "plan", "--adapter", "baseline", "--budgets", str(budgets))
    assert code == 0 and err == "", err
    assert "b[/x]" in out


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--seeds", "99999999999999999999999"], "seeds must be whole numbers from 0 to"),
        (["--seeds", "4294967296"], "seeds must be whole numbers from 0 to 4294967295"),
        (["--datasets", ","], "no dataset named in ','"),
        (["--datasets", " "], "no dataset named in ' '"),
        (["--option", "max_iter=NaN"], "takes a number, got nan"),
        (["--option", "max_iter=-Infinity"], "takes a number, got -inf"),
        # the kernel refused it, and the task ran with no cgroup, its memory cap sampled
        (["--max-processes", "4194305"], "from 0 (no cap) to 4194304"),
        (["--max-processes", "-1"], "from 0 (no cap) to 4194304"),
    ],
)
def test_values_no_task_could_take_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], fragment: str
) -> None:
    """A seed past NumPy's 2**32 - 1 failed every task; ``--datasets ,`` ran all ten; NaN passed
    for a number and went into config.json as non-standard JSON. Refused before anything runs."""
    try:
        code, _, err = main(capsys, "plan", "--adapter", "baseline", "--profile", "quick", *argv)
    except SystemExit as exited:  # argparse's own usage error: its usage, then the line
        code, err = int(str(exited.code)), capsys.readouterr().err
        err = err.splitlines()[-1].split(": error: ")[-1]
        err = "error: " + err.split(": ", 1)[-1]  # "argument --seeds: ..." names the flag
    assert_one_line_error(code, err, fragment)


def test_generate_into_a_folder_that_cannot_be_made_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "afile").write_text("mine")
    code, _, err = main(
        capsys, "generate", str(tmp_path / "afile" / "x"), "--datasets", "breastmnist"
    )
    assert_one_line_error(code, err, "cannot write into", "afile/x")
    assert (tmp_path / "afile").read_text() == "mine"
    code, out, _ = main(
        capsys, "generate", str(tmp_path / "twice"), "--datasets", "breastmnist,breastmnist"
    )
    assert code == 0 and out.startswith("1 dataset in ")


def test_more_jobs_than_cores_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``--jobs 99999`` on a 2-core machine: every task failed inside joblib."""
    jobs = str((os.cpu_count() or 1) + 1)
    code, _, err = run_baseline(
        capsys, str(tmp_path / "data"), str(tmp_path / "run"), "--jobs", jobs
    )
    assert_one_line_error(code, err, f"--jobs {jobs}: this machine has")
    assert not (tmp_path / "run").exists()


def test_a_plain_tcp_scheduler_needs_the_network_off(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A sealed task with the network on reached a plain-TCP Dask scheduler and had a worker,
    outside the sandbox, read the test labels (a hostile review: AUC 1.000)."""
    scheduler = ("--scheduler", "tcp://127.0.0.1:9")
    code, _, err = run_baseline(capsys, str(tmp_path / "data"), str(tmp_path / "run"), *scheduler)
    assert_one_line_error(code, err, "could reach a plain-TCP scheduler", "--network off")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (("--scheduler", "tcp://127.0.0.1:9", "--no-download"), "could reach a plain-TCP"),
        (("--workers", "1", "--redownload"), "--redownload replaces files where the run starts"),
    ],
)
def test_several_adapters_on_dask_are_refused_as_one_is(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    flags: tuple[str, ...],
    said: str,
) -> None:
    """`run --adapter a,b` skipped the checks a run of one adapter makes before it uses Dask: a
    plain-TCP --scheduler with the network on (which a sealed task could reach, to run code on
    its workers outside the sandbox) and --redownload (which workers do not do) went ahead."""
    pytest.importorskip("distributed")
    from decathlon import distributed

    monkeypatch.setattr(distributed, "CONNECT_TIMEOUT", 1)  # nothing listens at port 9
    code, _, err = main(
        capsys, "run", "--adapter", "baseline,flaml", "--profile", "quick",
        "--datasets", "breastmnist", "--no-progress", "--run-dir", str(tmp_path / "runs"),
        *flags,
    )  # fmt: skip
    assert_one_line_error(code, err, said)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("tcp://127.0.0.1:notaport", "not a Dask scheduler address"),
        ("tcp://[::1", "not a Dask scheduler address"),
        ("tls://127.0.0.1:9", "needs Dask's TLS settings"),
    ],
)
def test_a_scheduler_address_dask_cannot_use_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, address: str, fragment: str
) -> None:
    """A malformed address ended in a ValueError traceback, and a tls:// one (which the
    plain-TCP refusal recommends) without Dask's TLS settings in a TypeError one, each after
    the run folder was written."""
    pytest.importorskip("distributed")
    args = ("--scheduler", address, "--network", "off")
    code, _, err = run_baseline(capsys, str(tmp_path / "data"), str(tmp_path / "run"), *args)
    assert_one_line_error(code, err, f"--scheduler {address}: ", fragment)
    assert not (tmp_path / "run").exists()


def test_an_unreachable_scheduler_is_one_line_once_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A --scheduler that could not be reached (after the connect timeout) left the run folder
    behind, so the same command was then refused ("already holds a run"); with --adapter a,b
    it was said once per adapter. Now it is reached before anything is written, and said once."""
    pytest.importorskip("distributed")
    from decathlon import distributed

    monkeypatch.setattr(distributed, "CONNECT_TIMEOUT", 1)
    args = ("--scheduler", "tcp://127.0.0.1:9", "--network", "off")  # nothing listens there
    for _ in range(2):  # the same command, again: the same line, not "already holds a run"
        code, _, err = run_baseline(capsys, str(tmp_path / "data"), str(tmp_path / "run"), *args)
        assert_one_line_error(code, err, "cannot reach the Dask scheduler at tcp://127.0.0.1:9")
        assert not (tmp_path / "run").exists()
    code, _, err = main(
        capsys, "run", "--adapter", "baseline,flaml", "--profile", "quick",
        "--datasets", "breastmnist", "--no-download", "--no-progress",
        "--run-dir", str(tmp_path / "runs"), *args,
    )  # fmt: skip
    assert_one_line_error(code, err, "cannot reach the Dask scheduler at tcp://127.0.0.1:9")
    assert not (tmp_path / "runs").exists()


def test_check_and_export_refuse_an_output_folder_they_cannot_write(
    capsys: pytest.CaptureFixture[str], tiny_catalog, tmp_path: Path
) -> None:
    """`check --workdir /etc/passwd` (a file) and `--workdir /proc/nope` ended in a
    NotADirectoryError or FileNotFoundError traceback; `export-automl-vision --out` a file in
    a FileExistsError one. Each is one line naming the folder and the flag to change."""
    blocker = tmp_path / "a-file"
    blocker.write_text("kept\n")
    cases = [
        (blocker, f"{blocker} is a file, not a folder"),
        (blocker / "sub", f"{blocker} is a file, not a folder"),
        (Path("/proc/nope"), "/proc/nope: cannot write"),
    ]
    for folder, why in cases:
        code, out, err = main(capsys, "check", "baseline", "--workdir", str(folder))
        assert_one_line_error(code, err, str(folder), why, "choose another --workdir")
        assert out == ""
        export = ["export-automl-vision", "--dataset", "breastmnist", "--out", str(folder)]
        export += ["--no-download", "--data-dir", str(tiny_catalog.data_dir)]
        code, out, err = main(capsys, *export, "--info", str(tiny_catalog.info_path))
        assert_one_line_error(code, err, str(folder), why, "choose another --out")
        assert out == ""
    assert blocker.read_text() == "kept\n"


def test_check_refuses_a_workdir_holding_a_check_before_writing_anything(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A second `check --workdir W` regenerated W/data, then stopped saying "pass --resume ...
    or choose another --run-dir", flags `check` does not have. Now it names --workdir and
    nothing of the first check is touched."""
    from decathlon import conformance

    monkeypatch.setattr(conformance, "make_registry", lambda: make_registry([misbehaving]))
    workdir = tmp_path / "check"
    code, out, err = main(capsys, "check", "mis_good", "--workdir", str(workdir))
    assert code == 0, out + err
    before = snapshot(workdir)
    code, out, err = main(capsys, "check", "mis_good", "--workdir", str(workdir))
    assert_one_line_error(
        code, err, f"{workdir} already holds a conformance check", "choose another --workdir"
    )
    assert "--resume" not in err and "--run-dir" not in err and out == ""
    assert snapshot(workdir) == before


@pytest.mark.parametrize("adapters", ["mis_good", "mis_good,mis_raiser"])
def test_an_interrupted_run_names_the_run_folder_to_resume(
    capsys: pytest.CaptureFixture[str],
    tiny_catalog: TinyData,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    adapters: str,
) -> None:
    """Ctrl-C said "finish with `run --resume RUN_DIR`", though the folder's name (adapter,
    profile, size, time) is made by the run and, without a progress bar, printed nowhere.
    Now the line names the folder that was interrupted."""
    seen: list[Path] = []

    def stopped(self: Runner, run_dir: Path, **kwargs: Any) -> Path:
        seen.append(run_dir)
        raise KeyboardInterrupt

    monkeypatch.setattr(Runner, "run", stopped)
    monkeypatch.setenv("DECATHLON_INFO", str(tiny_catalog.info_path))
    monkeypatch.chdir(tmp_path)
    code, out, err = main(
        capsys, "run", "--adapter", adapters, "--profile", "quick", "--datasets", "breastmnist",
        "--data-dir", str(tiny_catalog.data_dir), "--no-download", "--no-progress",
    )  # fmt: skip
    assert code == 130
    (run_dir,) = seen
    assert run_dir.name.startswith("mis_good-quick-28-")
    assert err == f"interrupted: finished tasks are kept; finish with `run --resume {run_dir}`\n"


def test_an_interrupted_generate_says_so_and_leaves_no_half_file(tmp_path: Path) -> None:
    """Ctrl-C (or SIGTERM) to any command printed "finished tasks are kept; finish with `run
    --resume RUN_DIR`", which a generate, a compare or a setup has nothing to do with."""
    import signal
    import time

    root = tmp_path / "gen"
    proc = subprocess.Popen(
        [sys.executable, "-m", "decathlon", "generate", str(root), "--published"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not list((root / "data").glob(".*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.05)  # the first file is being written
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert err == "interrupted: generate stopped before it finished\n"
    assert not list((root / "data").glob(".*"))  # no hidden half-written file


def test_a_killed_generates_half_file_does_not_refuse_the_next_generate(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A generate killed (SIGKILL) while writing left its hidden .NAME.PID.THREAD.tmp, and the
    next generate into that folder was refused ("not an empty folder") for a file it had made
    itself. Now it removes its own stale temporaries, and nothing else, and generates."""
    import time

    root = tmp_path / "gen"
    proc = subprocess.Popen(
        [sys.executable, "-m", "decathlon", "generate", str(root), "--published"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not list((root / "data").glob(".*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.05)  # the first file is being written
    finally:
        proc.kill()
        proc.wait()
    left = sorted(p.name for p in (root / "data").iterdir())
    assert len(left) == 1 and left[0].endswith(".tmp")  # the half file alone
    code, out, err = main(capsys, "generate", str(root), "--datasets", "breastmnist")
    assert code == 0, out + err
    assert sorted(p.name for p in (root / "data").iterdir()) == ["breastmnist.npz"]
    # A temporary whose writer is alive (here: this process) is not stale: kept, and refused.
    other = tmp_path / "other"
    (other / "data").mkdir(parents=True)
    live = other / "data" / f".breastmnist.npz.{os.getpid()}.1.tmp"
    live.write_bytes(b"")
    code, _, err = main(capsys, "generate", str(other), "--datasets", "breastmnist")
    assert_one_line_error(code, err, "is not an empty folder")
    assert sorted(p.name for p in (other / "data").iterdir()) == [live.name]


def test_a_generate_that_runs_out_of_disk_says_what_it_left(tmp_path: Path) -> None:
    """A full disk midway said only "cannot write into ROOT: ...", and the next try was refused
    ("not an empty folder") for the files the failed one had left. A child with a 200 KB file
    size limit stands for the full disk."""
    import resource
    import signal

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    root = tmp_path / "gen"
    done = subprocess.run(
        [sys.executable, "-m", "decathlon", "generate", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limited,
    )
    assert done.returncode == 2
    assert done.stderr == (
        f"error: cannot write into {root}: File too large; what was written is left in {root}:"
        " delete it to generate again\n"
    )


def test_a_data_folder_in_a_loop_of_links_is_one_line(
    capsys: pytest.CaptureFixture[str], tiny_catalog: TinyData, monkeypatch, tmp_path: Path
) -> None:
    """``--data-dir`` (or DECATHLON_DATA_DIR) naming a link that leads to itself ended the
    command with Path.resolve's RuntimeError traceback ("Symlink loop from ...")."""
    monkeypatch.setenv("DECATHLON_INFO", str(tiny_catalog.info_path))
    loop = tmp_path / "loop"
    loop.symlink_to("loop")
    code, _, err = run_baseline(capsys, str(loop), str(tmp_path / "run"))
    assert_one_line_error(code, err, f"{loop}: its symbolic links lead to no folder")
    monkeypatch.setenv("DECATHLON_DATA_DIR", str(loop))
    code, _, err = main(capsys, "plan", "--adapter", "baseline", "--profile", "quick")
    assert_one_line_error(code, err, f"{loop}: its symbolic links lead to no folder")
    assert not (tmp_path / "run").exists()


def test_resume_of_a_config_written_by_a_newer_harness(
    capsys: pytest.CaptureFixture[str], finished_run: Path
) -> None:
    """Settings this harness does not know (a newer one wrote config.json) were dropped without
    a word, and the run went on without them."""
    record = json.loads((finished_run / "config.json").read_text())
    record["config"].update(zz_future=1, aa_future="x")
    (finished_run / "config.json").write_text(json.dumps(record))
    before = snapshot(finished_run)
    code, _, err = main(capsys, "run", "--resume", str(finished_run), "--no-progress")
    assert_one_line_error(
        code,
        err,
        "config.json: written by a newer decathlon: unknown settings aa_future, zz_future;"
        " resume it with that version",
    )
    assert snapshot(finished_run) == before


def test_resume_of_a_config_of_the_first_layout(
    capsys: pytest.CaptureFixture[str], finished_run: Path
) -> None:
    """A config.json of the first release, before size, sandbox, network, redownload,
    max_processes, mirror_withheld, data_dir_from and info_from existed, still resumes."""
    record = json.loads((finished_run / "config.json").read_text())
    later = ("size", "sandbox", "network", "redownload", "max_processes", "mirror_withheld")
    for key in (*later, "data_dir_from", "info_from"):
        del record["config"][key]
    (finished_run / "config.json").write_text(json.dumps(record))
    code, _, err = main(capsys, "run", "--resume", str(finished_run), "--no-progress")
    assert code == 0, err
