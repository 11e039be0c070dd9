"""``run --adapter a,b`` (and ``all``): one run directory per adapter, one display, one table.

Real runs on the three real MedMNIST subsets through the command line in this process: the
built-in baseline and the misbehaving plugin's ``mis_good`` (valid random scores).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import misbehaving
import pytest
from helpers import REAL_FLAGS
from rich.console import Console

from decathlon import cli, leaderboard
from decathlon.contract import Adapter, Environment
from decathlon.errors import DecathlonError
from decathlon.hookspecs import hookimpl
from decathlon.plugins import make_registry


class _Unbuildable:
    """A plugin whose adapter's environment cannot be built here (no Python 2.7 anywhere)."""

    @hookimpl
    def decathlon_register_adapters(self, register) -> None:
        register(
            Adapter(
                name="needs_py27",
                run="misbehaving:good",
                description="its environment needs Python 2.7",
                environment=Environment(python="2.7"),
                default_budgets={"quick": {"hard_limit_seconds": 60}},
            )
        )


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DECATHLON_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(cli, "make_registry", lambda: make_registry([misbehaving]))


def run_args(real_data_dir: Path, runs: Path, adapters: str, *extra: str) -> list[str]:
    return [
        "run", "--adapter", adapters, "--profile", "quick", "--datasets", ",".join(REAL_FLAGS),
        "--seeds", "0", "--data-dir", str(real_data_dir), "--no-download", "--jobs", "1",
        "--option", "max_iter=10", "--run-dir", str(runs), *extra,
    ]  # fmt: skip


def test_two_adapters_in_one_command(
    real_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A terminal 100 columns wide: the live display is on, and the final table must fit.
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=100, color_system=None)
    monkeypatch.setattr(cli, "console", terminal)
    printed = io.StringIO()
    monkeypatch.setattr("sys.stdout", printed)
    runs = tmp_path / "runs"
    # --option max_iter=10 is the baseline's; mis_good has no such option: refused up front.
    with pytest.raises(DecathlonError, match="max_iter"):
        cli.cmd_run(
            cli.build_parser().parse_args(run_args(real_data_dir, runs, "baseline,mis_good"))
        )
    assert not runs.exists() or not any(runs.iterdir())

    args = run_args(real_data_dir, runs, "baseline,mis_good")
    args = [a for a in args if a not in ("--option", "max_iter=10")]
    assert cli.main(args) == 0
    run_dirs = sorted(runs.iterdir())
    assert [d.name.split("-quick-")[0] for d in run_dirs] == ["baseline", "mis_good"]
    for run_dir in run_dirs:
        adapter = run_dir.name.split("-quick-")[0]
        rows = [
            r
            for r in leaderboard.read(run_dir / "leaderboard.csv")
            if r["dataset"] != leaderboard.SUMMARY_DATASET
        ]
        assert {r["adapter"] for r in rows} == {adapter}
        assert {r["dataset"] for r in rows} == set(REAL_FLAGS)
        assert all(r["status"] == "ok" for r in rows)
    shown = screen.getvalue()
    # One display: both adapters' bars and tasks went through the same console.
    assert "baseline breastmnist/seed0: ok" in shown and "mis_good breastmnist/seed0: ok" in shown
    # The comparison of what ran, on the three datasets it ran, at 100 columns.
    table = re.sub(r"\x1b\[[0-9;]*m", "", printed.getvalue())  # colours off
    labels = [f"{d.name}/{d.name.split('-quick-')[0]}" for d in run_dirs]
    assert all(label in table for label in labels)
    assert "mean of 3" in table and "Statistics" in table
    assert max(len(line) for line in table.splitlines()) <= 100


def test_unknown_adapter_among_several_is_one_line_and_runs_nothing(
    real_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    assert cli.main(run_args(real_data_dir, runs, "baseline,mis_godo")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "mis_godo" in err and "Did you mean 'mis_good'" in err
    assert not runs.exists()


def test_all_means_every_registered_adapter() -> None:
    registry = make_registry([misbehaving])
    names = cli.adapter_names("all", registry)
    assert names == sorted(registry.adapters)
    assert {"baseline", "autosklearn", "mis_good"} <= set(names)
    assert cli.adapter_names("baseline, mis_good,baseline", registry) == ["baseline", "mis_good"]


def test_an_adapter_failing_mid_way_leaves_the_others_and_exits_2(
    real_data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DECATHLON_PYTHON_2_7", str(tmp_path / "no-such-python"))
    monkeypatch.setattr(cli, "make_registry", lambda: make_registry([misbehaving, _Unbuildable()]))
    runs = tmp_path / "runs"
    args = run_args(real_data_dir, runs, "needs_py27,mis_good", "--no-progress")
    args = [a for a in args if a not in ("--option", "max_iter=10")]
    assert cli.main(args) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("error: needs_py27: ") and "no-such-python" in line
    (good,) = [d for d in runs.iterdir() if d.name.startswith("mis_good-")]
    rows = leaderboard.read(good / "leaderboard.csv")
    assert {r["status"] for r in rows if r["dataset"] != "decathlon"} == {"ok"}
    assert f"{good.name}/mis_good" in captured.out  # the comparison of what did run
