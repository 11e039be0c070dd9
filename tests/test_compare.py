"""Tests of decathlon.compare: reference tables, comparison table, statistics, bootstrap, plots."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from decathlon import compare
from decathlon.compare import COLUMNS, DATASETS
from decathlon.errors import LeaderboardError

SHARED_REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# The derived-means table of ../shared/reference/README.md (mean over the ten datasets).
PUBLISHED_MEANS = {
    # adapter: (v1 AUC, v1 ACC, v2 AUC, v2 ACC)
    "resnet18_28": (0.906, 0.806, 0.913, 0.819),
    "resnet18_224": (0.911, 0.818, 0.916, 0.821),
    "resnet50_28": (0.900, 0.802, 0.912, 0.816),
    "resnet50_224": (0.904, 0.815, 0.914, 0.823),
    "autosklearn": (0.797, 0.620, 0.872, 0.725),
    "autokeras": (0.899, 0.808, 0.907, 0.809),
    "automl_vision": (0.922, 0.798, 0.920, 0.806),
}
SOURCE_NAMES = {
    "ResNet-18 (28)": "resnet18_28",
    "ResNet-18 (224)": "resnet18_224",
    "ResNet-50 (28)": "resnet50_28",
    "ResNet-50 (224)": "resnet50_224",
    "auto-sklearn": "autosklearn",
    "AutoKeras": "autokeras",
    "Google AutoML Vision": "automl_vision",
}


# --------------------------------------------------------------------------------- helpers


def write_run(
    root: Path,
    run_id: str,
    quality: dict[str, float],
    *,
    seeds: Iterable[int] = (0,),
    profile: str = "quick",
    failures: dict[tuple[str, str], str] | None = None,
    skip: Iterable[str] = (),
    splits: bool = True,
    seed_noise: float = 0.0,
    size: int = 28,
) -> Path:
    """Write a run directory with a leaderboard.csv in the project format; return the directory.

    ``quality[adapter]`` shifts every score of that adapter; ``failures[(adapter, dataset)]`` is
    a status other than ok (for every seed); datasets in ``skip`` get no rows at all.
    """
    failures = failures or {}
    run_dir = root / run_id
    run_dir.mkdir(parents=True)
    rows: list[dict[str, Any]] = []
    for adapter, q in quality.items():
        for seed in seeds:
            test_auc: dict[str, float] = {}
            test_acc: dict[str, float] = {}
            missing: list[str] = []
            for j, dataset in enumerate(DATASETS):
                if dataset in skip:
                    missing.append(f"{dataset} (not run)")
                    continue
                status = failures.get((adapter, dataset), "ok")
                base = 0.70 + 0.02 * j + q + seed_noise * seed
                for split in compare.SPLITS if splits else ("test",):
                    gap = {"train": 0.12, "val": 0.02, "test": 0.0}[split]
                    auc = min(base + 0.05 + gap, 1.0)
                    acc = min(base + gap, 1.0)
                    row = {c: "" for c in COLUMNS}
                    row.update(
                        run_id=run_id,
                        adapter=adapter,
                        dataset=dataset,
                        size=size,
                        seed=seed,
                        split=split,
                        status=status,
                        profile=profile,
                        task="binary-class",
                        n_images=100,
                    )
                    if status == "ok":
                        row.update(auc=f"{auc:.4f}", acc=f"{acc:.4f}")
                        if split == "test":
                            test_auc[dataset], test_acc[dataset] = round(auc, 4), round(acc, 4)
                    else:
                        row["reason"] = f"{status} after 60 s"
                    rows.append(row)
                if status != "ok":
                    missing.append(f"{dataset} ({status})")
            summary = {c: "" for c in COLUMNS}
            summary.update(
                run_id=run_id,
                adapter=adapter,
                dataset="decathlon",
                size=size,
                seed=seed,
                split="test",
            )
            summary["profile"] = profile
            if not missing:
                summary.update(
                    status="ok",
                    auc=f"{np.mean(list(test_auc.values())):.4f}",
                    acc=f"{np.mean(list(test_acc.values())):.4f}",
                )
            else:
                summary.update(
                    status="incomplete",
                    reason=f"{len(DATASETS) - len(missing)}/10 datasets ok; missing: "
                    + ", ".join(missing),
                )
            rows.append(summary)
    write_csv(run_dir / "leaderboard.csv", rows)
    (run_dir / "config.json").write_text("{}")
    return run_dir


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str] = COLUMNS) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def good_board(tmp_path: Path) -> Path:
    return write_run(tmp_path, "good", {"baseline": 0.0}) / "leaderboard.csv"


# --------------------------------------------------------------------------------- references


@pytest.mark.parametrize("name", ["v1", "v2"])
def test_reference_leaderboards_are_in_the_project_format(name: str) -> None:
    path = compare.reference_path(name)
    with path.open(newline="") as f:
        header = next(csv.reader(f))
    assert header == COLUMNS
    board = compare.read_leaderboard(path)
    rows = board.rows
    assert len(rows) == 70
    assert board.profile == "paper"
    assert set(rows["status"]) == {"ok"} and set(rows["split"]) == {"test"}
    assert set(rows["adapter"]) == set(PUBLISHED_MEANS)
    assert set(rows["run_id"]) == {path.stem}
    assert (rows["notes"].str.len() > 0).all()
    assert all(len(compare.methods_of(board)) == 7 for _ in [0])
    assert all(m.complete for m in compare.methods_of(board))


@pytest.mark.parametrize("name", ["v1", "v2"])
def test_reference_leaderboards_hold_the_shared_reference_values(name: str) -> None:
    source = SHARED_REFERENCE / compare.REFERENCES[name]
    if not source.is_file():
        pytest.skip(f"{source} not present")
    ours = {
        (r["adapter"], r["dataset"]): (float(r["auc"]), float(r["acc"]))
        for r in read_rows(compare.reference_path(name))
    }
    theirs = {
        (SOURCE_NAMES[r["method"]], r["dataset"]): (float(r["auc"]), float(r["acc"]))
        for r in read_rows(source)
        if r["dataset"] in DATASETS
    }
    assert ours == theirs


def test_resnet18_28_v1_reproduces_the_published_means() -> None:
    methods = compare.collect([], "v1")
    (m,) = [m for m in methods if m.adapter == "resnet18_28"]
    assert f"{m.mean('auc'):.3f}" == "0.906"
    assert f"{m.mean('acc'):.3f}" == "0.806"


@pytest.mark.parametrize("name", ["v1", "v2"])
@pytest.mark.parametrize("adapter", list(PUBLISHED_MEANS))
def test_reference_means_match_the_readme(name: str, adapter: str) -> None:
    table = compare.comparison_table(compare.collect([], name))
    row = table[table["adapter"] == adapter].iloc[0]
    offset = 0 if name == "v1" else 2
    published_auc, published_acc = PUBLISHED_MEANS[adapter][offset : offset + 2]
    # Four exact means fall on a rounding tie (v1: 0.9115, 0.7975, 0.6195, 0.9215); the README
    # rounds them either way, so "rounds to" means within half a unit of the third decimal.
    assert abs(row["decathlon_auc"] - published_auc) <= 0.0005 + 1e-9
    assert abs(row["decathlon_acc"] - published_acc) <= 0.0005 + 1e-9
    assert row["complete"]


def test_unknown_reference_is_refused() -> None:
    with pytest.raises(LeaderboardError, match="unknown reference 'v3'"):
        compare.reference_path("v3")


def test_columns_are_the_leaderboard_modules() -> None:
    from decathlon import leaderboard

    assert COLUMNS == list(leaderboard.COLUMNS)


# --------------------------------------------------------------------------------- bad input


def _rows_of(path: Path) -> list[dict[str, str]]:
    return read_rows(path)


BAD_INPUTS = {
    "not a leaderboard": (lambda p, rows: p.write_text("name,score\nfoo,1\n"), "not a decathlon"),
    "empty file": (lambda p, rows: p.write_text(""), "empty file"),
    "header only": (lambda p, rows: p.write_text(",".join(COLUMNS) + "\n"), "no rows"),
    "missing columns": (
        lambda p, rows: write_csv(p, rows, [c for c in COLUMNS if c not in ("acc", "profile")]),
        "missing column(s) acc, profile",
    ),
    "duplicate rows": (lambda p, rows: write_csv(p, rows + rows[:1]), "duplicate rows"),
    "mixed profiles": (
        lambda p, rows: write_csv(p, [rows[0] | {"profile": "paper"}] + rows[1:]),
        "mixed profiles 'paper', 'quick'",
    ),
    "unknown split": (
        lambda p, rows: write_csv(p, [rows[0] | {"split": "tst"}] + rows[1:]),
        "unknown split 'tst'",
    ),
    "only val rows": (
        lambda p, rows: write_csv(
            p, [r for r in rows if r["split"] == "val" and r["dataset"] != "decathlon"]
        ),
        "no test rows (splits found: val)",
    ),
    "summary on val": (
        lambda p, rows: write_csv(p, rows[:-1] + [rows[-1] | {"split": "val"}]),
        "summary row must have split test",
    ),
    "unknown dataset": (
        lambda p, rows: write_csv(p, [rows[0] | {"dataset": "pathmnit"}] + rows[1:]),
        "unknown dataset 'pathmnit'. Did you mean 'pathmnist'?",
    ),
    "v1 dataset name": (
        lambda p, rows: write_csv(p, [rows[0] | {"dataset": "organmnist_axial"}] + rows[1:]),
        "the current medmnist flag is 'organamnist'",
    ),
    "unknown status": (
        lambda p, rows: write_csv(p, [rows[0] | {"status": "done"}] + rows[1:]),
        "unknown status 'done'",
    ),
    "non-numeric auc": (
        lambda p, rows: write_csv(p, [rows[0] | {"auc": "0.9x"}] + rows[1:]),
        "auc '0.9x' is not a number",
    ),
    "auc in a form pandas reads otherwise": (
        lambda p, rows: write_csv(p, [rows[0] | {"auc": "0.8_6"}] + rows[1:]),
        "auc '0.8_6' is not a number",
    ),
    "a seed written twice ways": (  # 0 and 00: one task twice, which int() would not see
        lambda p, rows: write_csv(p, rows + [rows[0] | {"seed": "00"}]),
        "seed '00' is not a plain integer",
    ),
    "auc out of range": (
        lambda p, rows: write_csv(p, [rows[0] | {"auc": "91.2"}] + rows[1:]),
        "auc 91.2 is outside [0, 1]",
    ),
    "ok test row without scores": (
        lambda p, rows: write_csv(p, [rows[2] | {"acc": ""}] + rows[:2] + rows[3:]),
        "status ok but no acc for the test split",
    ),
    "non-integer seed": (
        lambda p, rows: write_csv(p, [rows[0] | {"seed": "first"}] + rows[1:]),
        "seed 'first' is not a plain integer",
    ),
    "seed out of range": (
        lambda p, rows: write_csv(p, [rows[0] | {"seed": str(10**20)}] + rows[1:]),
        "out of range",
    ),
    "sealed not a boolean": (
        lambda p, rows: write_csv(p, [rows[0] | {"sealed": "yes"}] + rows[1:]),
        "sealed 'yes' is not true, false or empty",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_one_line_naming_the_file(good_board: Path, case: str) -> None:
    make, expected = BAD_INPUTS[case]
    rows = _rows_of(good_board)
    bad = good_board.parent / "bad.csv"
    make(bad, rows)
    with pytest.raises(LeaderboardError) as info:
        compare.read_leaderboard(bad)
    message = str(info.value)
    assert str(bad) in message
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_a_file_cut_off_in_the_middle_of_a_row_is_refused(good_board: Path, split: str) -> None:
    """A copy cut off mid-row (a train row too, whose scores may be empty) is refused in one
    line naming the file and the line, however much of the row is left."""
    lines = good_board.read_text().splitlines(keepends=True)
    i = next(i for i, line in enumerate(lines) if f",{split},ok," in line and i > 3)
    row = lines[i]
    for cut in (row.index(f",{split},") + 1, row.index(",ok,") + 4, len(row) - 3):
        bad = good_board.parent / "cut.csv"
        bad.write_text("".join(lines[:i]) + row[:cut])
        with pytest.raises(LeaderboardError) as info:
            compare.read_leaderboard(bad)
        message = str(info.value)
        assert message.startswith(f"{bad}: line {i + 1}: cut off (")
        assert "truncated" in message and "\n" not in message


def test_a_file_cut_off_inside_a_quoted_field_is_refused(good_board: Path) -> None:
    rows = _rows_of(good_board)
    rows[0]["notes"] = '{"trials_run": 7, "best": "x"}'
    full = write_csv(good_board.parent / "full.csv", rows[:1]).read_text()
    bad = good_board.parent / "cut.csv"
    bad.write_text(full[: full.index("trials_run")])
    with pytest.raises(LeaderboardError, match=r"cut\.csv: line 2: .*truncated"):
        compare.read_leaderboard(bad)


def test_train_rows_not_given_are_accepted_and_checked(good_board: Path) -> None:
    rows = _rows_of(good_board)
    train = [i for i, r in enumerate(rows) if r["split"] == "train"]
    for i in train:
        rows[i] |= {"status": "not_given", "auc": "", "acc": ""}
    board = compare.read_leaderboard(write_csv(good_board.parent / "ok.csv", rows))
    assert set(board.rows[board.rows["split"] == "train"]["status"]) == {"not_given"}
    assert len(compare.methods_of(board)) == 1

    scored = [dict(r) for r in rows]
    scored[train[0]]["auc"] = "0.9"
    with pytest.raises(LeaderboardError, match="line 2: status not_given but the row has scores"):
        compare.read_leaderboard(write_csv(good_board.parent / "scored.csv", scored))
    on_test = [dict(r) for r in rows]
    j = next(i for i, r in enumerate(rows) if r["split"] == "test")
    on_test[j] |= {"status": "not_given", "auc": "", "acc": ""}
    with pytest.raises(LeaderboardError, match="not_given is for train rows only, not test"):
        compare.read_leaderboard(write_csv(good_board.parent / "test.csv", on_test))


def test_missing_file_and_run_dir_without_leaderboard(tmp_path: Path) -> None:
    with pytest.raises(LeaderboardError, match="no such leaderboard file"):
        compare.read_leaderboard(tmp_path / "nope.csv")
    (tmp_path / "run").mkdir()
    with pytest.raises(LeaderboardError, match="not a run directory"):
        compare.read_leaderboard(tmp_path / "run")


def test_binary_file_is_not_a_leaderboard(tmp_path: Path) -> None:
    path = tmp_path / "preds.npy"
    np.save(path, np.zeros((3, 3)))
    with pytest.raises(LeaderboardError, match=r"preds\.npy: not a"):
        compare.read_leaderboard(path)


def test_line_numbers_point_at_the_bad_row(good_board: Path) -> None:
    rows = _rows_of(good_board)
    rows[4]["auc"] = "high"
    bad = write_csv(good_board.parent / "bad.csv", rows)
    with pytest.raises(LeaderboardError, match="line 6: auc 'high'"):
        compare.read_leaderboard(bad)


def test_same_method_in_two_files_is_refused(good_board: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.csv"
    copy.write_text(good_board.read_text())
    with pytest.raises(LeaderboardError, match="duplicate rows: method good/baseline"):
        compare.collect([good_board, copy])


def test_unknown_format_is_refused(good_board: Path) -> None:
    with pytest.raises(LeaderboardError, match="unknown format 'pdf'"):
        compare.compare_command([good_board], None, None, ["pdf"], False)


# --------------------------------------------------------------------------------- the table


def test_comparison_of_synthetic_runs(tmp_path: Path) -> None:
    a = write_run(tmp_path, "runA", {"good": 0.05, "weak": 0.0})
    b = write_run(
        tmp_path,
        "runB",
        {"broken": 0.2},
        failures={("broken", "chestmnist"): "timeout"},
        skip=["pathmnist"],
    )
    methods = compare.collect([a, b / "leaderboard.csv"])
    assert [m.label for m in methods] == ["runA/good", "runA/weak", "runB/broken"]
    table = compare.comparison_table(methods)
    assert list(table.columns) == compare.TABLE_COLUMNS

    good, weak, broken = (table.iloc[i] for i in range(3))
    expected_auc = np.mean([round(0.75 + 0.02 * j + 0.05, 4) for j in range(10)])
    assert good["decathlon_auc"] == pytest.approx(expected_auc)
    assert good["rank_auc"] == 1.0 and weak["rank_auc"] == 2.0
    assert good["rank_acc"] == 1.0 and weak["rank_acc"] == 2.0
    # The incomplete method keeps its cells but gets no mean and no rank.
    assert not broken["complete"]
    assert math.isnan(broken["decathlon_auc"]) and math.isnan(broken["rank_auc"])
    assert math.isnan(broken["pathmnist_auc"]) and math.isnan(broken["chestmnist_auc"])
    assert broken["dermamnist_auc"] > good["dermamnist_auc"]
    assert broken["notes"] == (
        "8/10 datasets ok; missing: pathmnist (not run), chestmnist (timeout)"
    )

    best = compare.best_cells(table)
    assert best["dermamnist_auc"] == {2}  # the incomplete method still wins a dataset cell
    assert best["decathlon_auc"] == {0} and best["rank_auc"] == {0}

    text = compare.render_terminal(table, methods, width=220)
    assert "runB/broken †" in text and "timeout" in text and "not run" in text
    assert "Test AUC" in text and "Test ACC" in text

    md = compare.to_markdown(table, methods)
    assert "| runA/good |" in md and "**" in md
    assert md.splitlines()[0].count("|") == len(compare.value_columns()) + 2
    html = compare.to_html(table, methods)
    assert "<b>" in html and "runB/broken †" in html
    csv_text = compare.to_csv(table)
    assert csv_text.splitlines()[0] == ",".join(compare.TABLE_COLUMNS)


def test_seeds_are_averaged_with_a_note(tmp_path: Path) -> None:
    run = write_run(tmp_path, "seeds", {"baseline": 0.0}, seeds=(0, 1, 2), seed_noise=0.01)
    (m,) = compare.collect([run])
    assert m.seeds == (0, 1, 2)
    assert m.test("pathmnist", "auc") == pytest.approx(0.75 + 0.01)  # mean of +0, +0.01, +0.02
    table = compare.comparison_table([m])
    assert table["notes"].iloc[0] == "mean ± sd over seeds 0, 1, 2"
    # The sample standard deviation over the seeds, of each dataset and of the mean.
    assert table["pathmnist_auc_sd"].iloc[0] == pytest.approx(0.01)
    assert table["decathlon_auc_sd"].iloc[0] == pytest.approx(0.01)
    assert "0.760 ± 0.010" in compare.to_markdown(table, [m])
    assert "0.760±0.010" in compare.render_terminal(table, [m], width=100)


def test_a_seed_failing_leaves_the_dataset_missing(tmp_path: Path) -> None:
    run = write_run(tmp_path, "seeds", {"baseline": 0.0}, seeds=(0, 1))
    rows = read_rows(run / "leaderboard.csv")
    for r in rows:
        if (r["dataset"], r["seed"], r["split"]) == ("retinamnist", "1", "test"):
            r.update(status="error", auc="", acc="", reason="ValueError")
    write_csv(run / "leaderboard.csv", rows)
    (m,) = compare.collect([run])
    assert m.missing == {"retinamnist": "1/2 seeds ok"}
    assert math.isnan(m.mean("auc"))


def test_mismatching_summary_row_is_only_logged(
    good_board: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = read_rows(good_board)
    rows[-1]["auc"] = "0.1"
    write_csv(good_board, rows)
    compare.read_leaderboard(good_board)
    assert "the ten test rows give" in caplog.text


# --------------------------------------------------------------------------------- statistics


def test_two_methods_get_a_wilcoxon_test(tmp_path: Path) -> None:
    from scipy.stats import wilcoxon

    run = write_run(tmp_path, "two", {"good": 0.05, "weak": 0.0})
    rows = read_rows(run / "leaderboard.csv")
    # Make the differences vary so that the test is not degenerate.
    for r in rows:
        if r["adapter"] == "weak" and r["split"] == "test" and r["dataset"] in DATASETS[:3]:
            r["auc"] = f"{float(r['auc']) + 0.08:.4f}"
    write_csv(run / "leaderboard.csv", rows)
    methods = compare.collect([run])
    sig = compare.significance(methods, "auc")
    assert sig.test == "wilcoxon"
    matrix = compare.score_matrix(methods, "auc")
    assert sig.pvalue == pytest.approx(wilcoxon(matrix["two/good"], matrix["two/weak"]).pvalue)
    assert "higher on 7, lower on 3" in sig.lines[1]


def test_three_or_more_methods_go_to_autorank(tmp_path: Path) -> None:
    methods = compare.collect([], "v1")
    sig = compare.significance(methods, "auc")
    assert sig.test == "friedman + nemenyi"
    assert sig.pvalue < 0.05
    assert "critical difference" in sig.lines[1]
    assert "paper_v1/automl_vision (2.50)" in sig.lines[2]
    assert compare.plot_cd(sig, tmp_path / "cd.png") is not None
    assert (tmp_path / "cd.png").read_bytes()[:8] == PNG_MAGIC


def test_incomplete_methods_are_left_out_of_the_test(tmp_path: Path) -> None:
    run = write_run(
        tmp_path, "holes", {"a": 0.0, "b": 0.01, "c": 0.02}, failures={("b", "octmnist"): "error"}
    )
    sig = compare.significance(compare.collect([run]), "auc")
    assert sig.lines[0] == "Left out of the AUC test (datasets missing): holes/b."
    assert sig.test == "wilcoxon"  # a vs c


def test_without_complete_methods_the_common_datasets_are_tested(tmp_path: Path) -> None:
    run = write_run(
        tmp_path,
        "partial",
        {"a": 0.0, "b": 0.01},
        failures={("a", "octmnist"): "timeout", ("b", "pathmnist"): "error"},
    )
    sig = compare.significance(compare.collect([run]), "acc")
    assert sig.test == "wilcoxon"
    assert "uses only the 8 datasets that every method has" in sig.lines[0]


def test_unmet_assumptions_are_explained_in_one_line(tmp_path: Path) -> None:
    run = write_run(tmp_path, "few", {"a": 0.0, "b": 0.01}, skip=DATASETS[4:])
    sig = compare.significance(compare.collect([run]), "auc")
    assert sig.test is None and len(sig.lines) == 1
    assert sig.lines[0].startswith("Statistics not run: tests over datasets need every method")
    assert "few/a on" in sig.lines[0] and "\n" not in sig.lines[0]
    matrix = compare.score_matrix(compare.collect([], "v2"), "auc").iloc[:4]
    assert compare.check_assumptions(matrix) == (
        "Statistics not run: 4 dataset(s), the tests need 5."
    )
    (one,) = compare.collect([], "v1")[:1]
    assert compare.significance([one]).lines == ["Statistics need at least two methods."]
    text = compare.compare_command([run], None, None, [], False, width=200)
    assert text.count("Statistics not run") == 1  # AUC and ACC give the same reason once


# --------------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_with_sklearn_auc() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    score = y * 0.6 + rng.random(400) * 0.8
    point = roc_auc_score(y, score)
    low, high, used = compare.bootstrap_ci(y, score, roc_auc_score, n_boot=300)
    assert used == 300 and low < point < high and high - low < 0.15
    low_s, high_s, _ = compare.bootstrap_ci(y[:40], score[:40], roc_auc_score, n_boot=300)
    assert high_s - low_s > high - low  # fewer images, wider interval
    # Tiny and unbalanced: some resamples hold one class only and are skipped, not fatal.
    _, _, used = compare.bootstrap_ci(np.array([0, 0, 0, 1]), np.arange(4.0), roc_auc_score)
    assert 0 < used < 1000


def agree(run: Path, dataset: str, aucs: dict[int, float]) -> None:
    """Set the test AUC of ``dataset`` in the run's leaderboard to what its saved predictions
    give (seed -> AUC), as the harness writes them."""
    path = run / "leaderboard.csv"
    rows = read_rows(path)
    for row in rows:
        if row["dataset"] == dataset and row["split"] == "test":
            row["auc"] = f"{aucs[int(row['seed'])]:.6f}"
    write_csv(path, rows)


def test_bootstrap_table_from_saved_predictions(tmp_path: Path) -> None:
    from decathlon import metrics

    run = write_run(tmp_path, "preds", {"baseline": 0.0}, seeds=(0, 1))
    rng = np.random.default_rng(3)
    labels = {
        "breastmnist": rng.integers(0, 2, (80, 1)),
        "dermamnist": np.arange(140).reshape(-1, 1) % 7,
        "chestmnist": (rng.random((90, 14)) < 0.3).astype(np.uint8),
        "octmnist": np.arange(60).reshape(-1, 1) % 4,  # its leaderboard row is not its scores'
        "organamnist": np.arange(55).reshape(-1, 1) % 11,  # scores of the wrong shape
    }
    outputs = {"breastmnist": 2, "dermamnist": 7, "chestmnist": 14, "octmnist": 4}
    tasks = {"breastmnist": "binary-class", "chestmnist": "multi-label, binary-class"}
    for dataset, y in labels.items():
        n_out = outputs.get(dataset, 3)
        aucs = {}
        for seed in (0, 1):
            folder = run / "tasks" / dataset / f"seed{seed}" / "predictions"
            folder.mkdir(parents=True)
            score = rng.random((len(y), n_out))
            if dataset in ("breastmnist", "dermamnist"):
                score[np.arange(len(y)), y[:, 0]] += 0.5  # informative
                score /= score.sum(axis=1, keepdims=True)
            np.save(folder / "test.npy", score)
            if dataset in ("breastmnist", "dermamnist", "chestmnist"):
                task = tasks.get(dataset, "multi-class")
                aucs[seed] = metrics.auc(task, y, score)
        if aucs:
            agree(run, dataset, aucs)
    methods = compare.collect([run])
    ci, notes = compare.bootstrap_table(methods, labels.get, n_boot=50)
    assert list(ci.columns) == compare.CI_COLUMNS
    assert sorted(ci["dataset"]) == ["breastmnist", "chestmnist", "dermamnist"]
    assert (ci["ci_low"] <= ci["ci_high"]).all()
    assert (ci["ci_low"] <= ci["auc"]).all() and (ci["auc"] <= ci["ci_high"]).all()
    assert ci.set_index("dataset").loc["breastmnist", "ci_low"] > 0.6
    # Predictions that are not what the leaderboard was scored from, or that the harness would
    # have refused, give no interval (before: an interval beside a point outside it, or a crash).
    (note,) = notes
    assert "pathmnist (no predictions)" in note
    assert "octmnist (predictions give AUC 0.5" in note and "the leaderboard 0.8" in note
    assert "organamnist (predictions refused: scores have shape (55, 3); expected (55, 11))" in note

    # Without labels (no catalog): skipped with a note, never an error.
    ci2, notes2 = compare.bootstrap_table(methods, lambda flag: None, n_boot=10)
    assert ci2.empty and "breastmnist (no labels)" in notes2[0]


# --------------------------------------------------------------------------------- commands


def test_compare_command_writes_tables_and_plots(tmp_path: Path) -> None:
    a = write_run(tmp_path, "runA", {"good": 0.05, "weak": 0.0}, profile="paper")
    b = write_run(tmp_path, "runB", {"other": 0.02}, profile="paper", splits=False)
    out = tmp_path / "out"
    text = compare.compare_command([a, b], "v1", out, ["md", "html", "csv"], True, bootstrap=0)
    assert "paper_v1/resnet18_28" in text and "runA/good" in text
    assert "Friedman" in text or "ANOVA" in text
    for name in ("table.md", "table.html", "table.csv"):
        assert (out / name).stat().st_size > 0
    for name in ("bars.png", "splits_auc.png", "splits_acc.png", "cd_auc.png", "cd_acc.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name
    table = pd.read_csv(out / "table.csv")
    assert list(table.columns) == compare.TABLE_COLUMNS and len(table) == 10


def test_plots_stay_a_size_a_browser_shows(tmp_path: Path) -> None:
    """A 30,000-character method name made the critical-difference diagram 313,403 pixels wide;
    300 methods made the splits plot 74,690 pixels wide (and the report took minutes); 22
    here made it 5,885."""
    quality = {"x" * 30_000: 0.0, "x" * 30_001: 0.001}
    quality.update({f"m{k}": 0.002 * k for k in range(20)})
    run = write_run(tmp_path, "many", quality)
    out = tmp_path / "out"
    text = compare.compare_command([run], None, out, ["csv"], True, bootstrap=0, width=200)
    assert "x" * 30_001 in (out / "table.csv").read_text()  # the tables keep whole names
    assert "m19" in text
    for name in ("bars.png", "splits_auc.png", "cd_auc.png"):
        head = (out / name).read_bytes()[:24]
        assert head[:8] == PNG_MAGIC, name
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        assert width <= 3400 and height <= 3400, (name, width, height)


def test_compare_two_runs_prints_wilcoxon_and_profile_note(tmp_path: Path) -> None:
    a = write_run(tmp_path, "runA", {"good": 0.05})
    b = write_run(tmp_path, "runB", {"weak": 0.0}, profile="paper")
    text = compare.compare_command([a, b], None, None, [], False, width=200)
    assert "Wilcoxon signed-rank" in text
    assert "Profiles differ (paper, quick)" in text


def test_an_output_never_replaces_an_input(tmp_path: Path) -> None:
    # `compare --report a.csv b.csv` reads a.csv as the report's name: refused, a.csv unchanged.
    a = write_run(tmp_path, "runA", {"good": 0.05}) / "leaderboard.csv"
    b = write_run(tmp_path, "runB", {"weak": 0.0})
    before = a.read_bytes()
    with pytest.raises(LeaderboardError, match=r"--report .* would overwrite the input"):
        compare.compare_command([b], None, None, [], False, report=b / "leaderboard.csv")
    with pytest.raises(LeaderboardError, match=r"--report .* would overwrite the input"):
        compare.compare_command([a.parent, b], None, None, [], False, report=a)
    with pytest.raises(LeaderboardError, match="exists and is not an HTML page"):
        compare.compare_command([b], None, None, [], False, report=a)
    table = a.parent / "table.csv"  # an earlier `--format csv` table, compared again
    table.write_bytes(before)
    with pytest.raises(LeaderboardError, match=r"--out .*table.csv would overwrite the input"):
        compare.compare_command([table, b], None, a.parent, ["csv"], False)
    assert table.read_bytes() == before
    assert a.read_bytes() == before
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(LeaderboardError, match="exists and is not an HTML page"):
        compare.compare_command([a, b], None, None, [], False, report=notes)
    assert notes.read_text() == "mine"


def test_an_out_folder_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    a = write_run(tmp_path, "runA", {"good": 0.05})
    taken = tmp_path / "afile"
    taken.write_text("x")
    with pytest.raises(LeaderboardError, match="afile: cannot write the comparison's files"):
        compare.compare_command([a], None, taken, ["md"], False, bootstrap=0)
    assert taken.read_text() == "x"


def test_nothing_to_compare() -> None:
    with pytest.raises(LeaderboardError, match="nothing to compare"):
        compare.compare_command([], None, None, [], False)


def test_show_command(tmp_path: Path) -> None:
    run = write_run(
        tmp_path, "one", {"baseline": 0.0}, failures={("baseline", "octmnist"): "timeout"}
    )
    text = compare.show_command(run, width=220)
    assert "one/baseline †" in text
    assert "timeout after 60 s" in text
    header = next(i for i, line in enumerate(text.splitlines()) if line.split()[:1] == ["train"])
    assert text.splitlines()[header + 1].split()[-3:] == ["ACC", "time", "reason"]
    assert "0.870" in text  # pathmnist train AUC: 0.70 + 0.05 + 0.12


def test_text_from_a_received_leaderboard_is_shown_as_text(tmp_path: Path) -> None:
    """Names and reasons are printed literally: rich markup ("[/red]", as a path in brackets
    holds) crashed `show` and `compare` or restyled a name, terminal escapes reached the screen,
    and a spreadsheet formula or raw HTML in a name went into the comparison's own files."""
    run = write_run(tmp_path, "hostile", {"baseline": 0.0})
    rows = read_rows(run / "leaderboard.csv")
    name = "=HYPERLINK(1)[/]<b>x</b>\x1b[2J"
    for row in rows:
        row["adapter"] = name
        if row["dataset"] == "octmnist":
            row.update(
                status="error", auc="", acc="", reason="cannot read [/data/x] [bold]\x1b]0;t"
            )
    write_csv(run / "leaderboard.csv", rows)
    shown = compare.show_command(run, width=220)
    assert "[/data/x] [bold]" in shown and "\x1b" not in shown
    out = tmp_path / "out"
    text = compare.compare_command([run], None, out, ["md", "csv"], False, bootstrap=0, width=200)
    assert "=HYPERLINK(1)[/]<b>x</b>" in text and "\x1b" not in text
    assert "'=HYPERLINK(1)" in (out / "table.csv").read_text()
    markdown = (out / "table.md").read_text()
    assert "&lt;b&gt;x&lt;/b&gt;" in markdown
    assert "<b>" not in markdown  # the notes under the table name the method too


def test_a_name_in_mathtext_is_drawn_as_text(tmp_path: Path) -> None:
    """matplotlib reads "$...$" in a label as math: a method named "cost$\\frac{$" ended
    ``--plots`` and ``--report`` with a parse error."""
    run = write_run(tmp_path, "math", {"cost$\\frac{$": 0.0, "b": 0.01, "c": 0.02})
    out = tmp_path / "out"
    compare.compare_command([run], None, out, [], True, bootstrap=0)
    for name in ("bars.png", "splits_auc.png", "cd_auc.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name


@pytest.mark.parametrize(
    "record",
    [
        {"versions": ["x"]},
        {"adapter": {"environment": "py3.9"}},
        {"host": {"gpus": [0, 1]}},
        {"config": {"data_dir": 5}},
    ],
)
def test_a_config_json_of_other_types_is_not_a_crash(tmp_path: Path, record: dict) -> None:
    """A received run folder's config.json is JSON, but not always of the harness's types: the
    report's provenance and the bootstrap's data folder took it as such (tracebacks)."""
    run = write_run(tmp_path, "odd", {"baseline": 0.0})
    whole = {"config": {}, "adapter": {}, "budgets_file": {}, "host": {}} | record
    (run / "config.json").write_text(json.dumps(whole))
    page = tmp_path / "report.html"
    compare.compare_command([run], None, None, [], False, bootstrap=20, report=page)
    text = page.read_text()
    assert "odd/baseline" in text
    if "config" not in record:
        assert "malformed: its fields are not of the types the harness writes" in text


def test_a_leaderboard_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "leaderboard.csv").symlink_to("/proc/self/mem")  # reading it fails with EIO
    with pytest.raises(LeaderboardError, match=r"run: cannot be read \(Input/output error\)"):
        compare.show_command(run)


@pytest.mark.realdata
def test_bootstrap_with_real_labels_from_the_catalog(tmp_path: Path, real_data_dir: Path) -> None:
    from decathlon import metrics

    run = write_run(tmp_path, "real", {"baseline": 0.0})
    config = {"config": {"data_dir": str(real_data_dir), "info_path": None}}
    (run / "config.json").write_text(json.dumps(config))  # as the runner writes it
    rng = np.random.default_rng(4)
    y = np.load(real_data_dir / "breastmnist.npz")["test_labels"]
    score = rng.random((len(y), 2))
    score[np.arange(len(y)), y[:, 0]] += 0.4
    score /= score.sum(axis=1, keepdims=True)
    folder = run / "tasks" / "breastmnist" / "seed0" / "predictions"
    folder.mkdir(parents=True)
    np.save(folder / "test.npy", score)
    point = metrics.auc("binary-class", y, score)
    agree(run, "breastmnist", {0: point})

    ci, notes = compare.bootstrap_table(compare.collect([run]), n_boot=200)
    (row,) = ci.itertuples()
    assert row.dataset == "breastmnist" and row.ci_low < point < row.ci_high
    assert "Bootstrap CI skipped for real/baseline" in notes[0]
    text = compare.compare_command([run], None, None, [], False, bootstrap=100, width=200)
    assert "Bootstrap 95% CI of test AUC" in text and "breast 0.8" in text


@pytest.mark.parametrize(
    ("config", "cause"),
    [
        ('{"config": {"data_dir": "GONE"}}', "config.json's data_dir GONE is gone"),
        ("{not json", "config.json is not a run's config.json"),
    ],
)
def test_bootstrap_says_why_a_run_has_no_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: str, cause: str
) -> None:
    # A run whose config.json is broken, or names a data folder that is gone, looks for labels
    # in the default folder; the note says so and why each dataset has none (before: "(no
    # labels)" alone, the reason only in an info log).
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("DECATHLON_DATA_DIR", str(empty))
    run = write_run(tmp_path, "moved", {"baseline": 0.0})
    gone = str(tmp_path / "data-moved-away")
    (run / "config.json").write_text(config.replace("GONE", gone))
    folder = run / "tasks" / "breastmnist" / "seed0" / "predictions"
    folder.mkdir(parents=True)
    np.save(folder / "test.npy", np.full((10, 2), 0.5))

    ci, notes = compare.bootstrap_table(compare.collect([run]), n_boot=10)
    assert ci.empty
    (note,) = [n for n in notes if "breastmnist" in n]
    assert cause.replace("GONE", gone) in note and "the default" in note
    assert f"breastmnist (no labels: breastmnist.npz is not in {empty}" in note


# ---------------------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def baseline_runs(tiny_catalog, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two real runs of the built-in baseline on all ten (generated) datasets, with a different
    number of boosting rounds, so that they are two methods."""
    from decathlon.plugins import make_registry
    from decathlon.runner import RunConfig, Runner

    root = tmp_path_factory.mktemp("baseline-runs")
    runs = []
    for name, max_iter in (("fast", 5), ("slow", 20)):
        config = RunConfig(
            adapter="baseline",
            profile="quick",
            data_dir=str(tiny_catalog.data_dir),
            info_path=str(tiny_catalog.info_path),
            download=False,
            options={"max_iter": max_iter, "pca_components": 16},
        )
        Runner(config, make_registry()).run(root / name)
        runs.append(root / name)
    return runs


def test_real_runs_of_the_baseline_compare_with_each_other_and_the_paper(
    baseline_runs: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "comparison"
    text = compare.compare_command(
        baseline_runs, "v1", out, ["md", "csv"], plots=True, bootstrap=50
    )
    assert "fast/baseline" in text and "slow/baseline" in text and "paper_v1/resnet18_28" in text
    assert "Friedman" in text or "ANOVA" in text  # nine complete methods: autorank ran
    table = pd.read_csv(out / "table.csv")
    assert set(table["method"]) >= {"fast/baseline", "slow/baseline", "paper_v1/automl_vision"}
    rows = {r["method"]: r for _, r in table.iterrows()}
    for name in ("fast", "slow"):
        board = [
            r
            for r in read_rows(baseline_runs[0].parent / name / "leaderboard.csv")
            if r["split"] == "test" and r["dataset"] != "decathlon"
        ]
        assert len(board) == 10 and all(r["status"] == "ok" for r in board)
        expected = np.mean([float(r["auc"]) for r in board])
        assert math.isclose(rows[f"{name}/baseline"]["decathlon_auc"], expected, abs_tol=1e-6)
    for png in ("bars.png", "splits_auc.png", "cd_auc.png"):
        assert (out / png).stat().st_size > 1000
    assert (out / "bootstrap_ci.csv").is_file()


def test_show_prints_a_real_run(baseline_runs: list[Path]) -> None:
    text = compare.show_command(baseline_runs[1])
    assert "slow/baseline" in text and "breast" in text and "Test AUC" in text


# ------------------------------------------- compare --datasets, seeds, the 100-column terminal

REAL = ("pneumoniamnist", "retinamnist", "breastmnist")  # the three real subsets, papers' order


def per_seed_results(run: Path) -> dict[str, list[tuple[float, float]]]:
    """Each dataset's test (auc, acc) per seed, read from a run's leaderboard."""
    out: dict[str, list[tuple[float, float]]] = {}
    rows = read_rows(run / "leaderboard.csv")
    for r in sorted(rows, key=lambda r: int(r["seed"])):
        if r["split"] == "test" and r["dataset"] != "decathlon":
            assert r["status"] == "ok", r
            out.setdefault(r["dataset"], []).append((float(r["auc"]), float(r["acc"])))
    return out


def test_compare_on_the_datasets_that_were_run(
    real_baseline_runs: list[Path], tmp_path: Path
) -> None:
    seeds_run, small_run = real_baseline_runs
    # Without --datasets: today's behaviour, both runs lack seven datasets: no mean, no rank.
    everything = compare.comparison_table(compare.collect(real_baseline_runs, "v1"))
    ours = everything[everything["method"].isin(["seeds/baseline", "small/baseline"])]
    assert not ours["complete"].any() and ours["decathlon_auc"].isna().all()
    assert ours["rank_auc"].isna().all()

    out = tmp_path / "cmp"
    text = compare.compare_command(
        real_baseline_runs,
        "v1",
        out,
        ["md", "csv", "html"],
        bootstrap=0,
        width=100,
        datasets=["breastmnist", "retinamnist", "pneumoniamnist"],
    )
    table = pd.read_csv(out / "table.csv")
    assert list(table.columns) == compare.table_columns(REAL)
    assert "pathmnist_auc" not in table.columns
    assert (table["n_datasets"] == 3).all() and table["complete"].all()
    assert len(table) == 2 + 7  # two runs and the seven published methods, each with a mean
    rows = {r["method"]: r for _, r in table.iterrows()}
    # The means are over the three datasets, for the runs (mean over seeds first) ...
    for run, label in ((seeds_run, "seeds/baseline"), (small_run, "small/baseline")):
        per_seed = per_seed_results(run)
        expected = np.mean([np.mean([auc for auc, _ in per_seed[d]]) for d in REAL])
        assert rows[label]["decathlon_auc"] == pytest.approx(expected, abs=1e-6)
    # ... and for the published rows, from the reference file's three test rows.
    published = [
        r
        for r in read_rows(compare.reference_path("v1"))
        if r["adapter"] == "resnet18_28" and r["split"] == "test" and r["dataset"] in REAL
    ]
    assert len(published) == 3
    expected = np.mean([float(r["auc"]) for r in published])
    assert rows["paper_v1/resnet18_28"]["decathlon_auc"] == pytest.approx(expected, abs=1e-6)
    # Ranks among all nine, over the three datasets.
    assert sorted(table["rank_auc"].notna()) == [True] * 9
    assert table["rank_auc"].mean() == pytest.approx(5.0)  # ranks 1..9 average to 5 per dataset
    # Every mean says how many datasets it covers, in every format.
    assert "mean of 3" in text and "Means are over the 3 datasets chosen" in text
    assert "| mean of 3 AUC | mean of 3 ACC |" in (out / "table.md").read_text()
    assert "mean of 3 datasets" in (out / "table.html").read_text()
    # Statistics over three datasets: one line saying why nothing ran.
    assert "Statistics not run: 3 dataset(s), the tests need 5." in text


def test_compare_datasets_restricts_the_statistics(
    baseline_runs: list[Path], tmp_path: Path
) -> None:
    chosen = [
        "pathmnist",
        "chestmnist",
        "octmnist",
        "organmnist_axial",
        "dermamnist",
        "retinamnist",
    ]
    text = compare.compare_command(
        baseline_runs, "v1", tmp_path / "cmp", ["csv"], plots=True, bootstrap=0, datasets=chosen
    )
    # 2 runs + 7 published methods, all complete on the six: autorank runs over six datasets.
    assert "over 6 datasets and 9 methods" in text
    table = pd.read_csv(tmp_path / "cmp" / "table.csv")
    assert "organamnist_auc" in table.columns and "breastmnist_auc" not in table.columns
    assert (table["n_datasets"] == 6).all()
    for png in ("bars.png", "splits_auc.png", "cd_auc.png"):
        assert (tmp_path / "cmp" / png).read_bytes().startswith(PNG_MAGIC)


def test_compare_datasets_unknown_name_is_one_line(
    real_baseline_runs: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from decathlon import cli

    code = cli.main(["compare", str(real_baseline_runs[0]), "--datasets", "breastmnst,retinamnist"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert err.startswith(
        "error: --datasets: unknown dataset 'breastmnst'. Did you mean 'breastmnist'?"
        " Known: pathmnist, chestmnist,"
    )


def test_several_seeds_show_mean_and_sd(real_baseline_runs: list[Path], tmp_path: Path) -> None:
    seeds_run = real_baseline_runs[0]
    per_seed = per_seed_results(seeds_run)
    assert all(len(v) == 2 for v in per_seed.values())
    methods = compare.collect([seeds_run], datasets=REAL)
    table = compare.comparison_table(methods)
    md = compare.to_markdown(table, methods)
    terminal = compare.render_terminal(table, methods, width=100)
    for d in REAL:
        aucs = [auc for auc, _ in per_seed[d]]
        mean, sd = np.mean(aucs), np.std(aucs, ddof=1)
        assert table[f"{d}_auc"].iloc[0] == pytest.approx(mean)
        assert table[f"{d}_auc_sd"].iloc[0] == pytest.approx(sd)
        assert f"{mean:.3f} ± {sd:.3f}" in md
        assert f"{mean:.3f}±{sd:.3f}" in terminal
    # The mean's sd: over the seeds, of each seed's mean over the three datasets.
    seed_means = [np.mean([per_seed[d][k][0] for d in REAL]) for k in range(2)]
    assert table["decathlon_auc_sd"].iloc[0] == pytest.approx(np.std(seed_means, ddof=1))
    # A single-seed method has no sd.
    small = compare.comparison_table(compare.collect([real_baseline_runs[1]], datasets=REAL))
    assert small["breastmnist_auc_sd"].isna().all()


def test_statistics_use_the_mean_over_seeds(baseline_runs: list[Path], tmp_path: Path) -> None:
    # Two seeds of generated data: the test's input is each dataset's mean over the seeds.
    run = write_run(
        tmp_path, "two", {"x": 0.0, "y": 0.02, "z": -0.03}, seeds=(0, 1), seed_noise=0.01
    )
    methods = compare.collect([run])
    sig = compare.significance(methods, "auc")
    assert sig.test is not None
    assert any("each dataset's mean over the seeds enters the test" in line for line in sig.lines)
    matrix = compare.score_matrix(methods, "auc")
    assert matrix.loc["pathmnist", "two/x"] == pytest.approx(0.75 + 0.005)


def test_terminal_table_reads_at_100_columns(real_baseline_runs: list[Path]) -> None:
    # Ten datasets, nine methods (two real runs, one with two seeds, and the 2021 paper's seven).
    methods = compare.collect(real_baseline_runs, "v1")
    table = compare.comparison_table(methods)
    text = compare.render_terminal(table, methods, width=100)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    # Every method's name whole on one line, once per table: 2 metrics x 2 tables each.
    for m in methods:
        label = m.label + m.mark  # "‡" too where the machine has no sandbox (bwrap)
        assert sum(line.lstrip().startswith(label + " ") for line in lines) == 4, label
    assert [line.split(" (")[0] for line in lines if line.startswith("Test ")] == [
        "Test AUC",
        "Test AUC",
        "Test ACC",
        "Test ACC",
    ]
    # Every number of the table is there.
    for i in range(len(methods)):
        for d in DATASETS:
            for metric in compare.METRICS:
                value = table[f"{d}_{metric}"].iloc[i]
                if not math.isnan(value):
                    assert f"{value:.3f}" in text
    # The same through the command, at 100 columns: statistics wrapped too.
    full = compare.compare_command(real_baseline_runs, "v1", bootstrap=0, width=100)
    assert max(len(line) for line in full.splitlines()) <= 100


def test_show_reads_at_100_columns(real_baseline_runs: list[Path], tmp_path: Path) -> None:
    text = compare.show_command(real_baseline_runs[0], width=100)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    per_seed = per_seed_results(real_baseline_runs[0])
    for dataset in REAL:
        for seed, (auc, acc) in enumerate(per_seed[dataset]):
            (line,) = [ln for ln in lines if ln.split()[:3] == [str(seed), dataset, "ok"]]
            assert f"{auc:.3f}" in line and f"{acc:.3f}" in line
    # Two adapters and failures with reasons: an adapter column, and the reason wraps.
    run = write_run(
        tmp_path,
        "mixed",
        {"one": 0.0, "two": 0.01},
        failures={("two", "octmnist"): "timeout"},
    )
    text = compare.show_command(run, width=100)
    assert max(len(line) for line in text.splitlines()) <= 100
    assert any(ln.split()[:4] == ["two", "0", "octmnist", "timeout"] for ln in text.splitlines())


# --------------------------------------------------------------------------------- sealed


def test_methods_with_unsealed_rows_are_marked(tmp_path: Path) -> None:
    """A method with rows that ran without the sandbox gets ‡ and a note saying how many; one
    whose rows are all sealed, or a file from before the column existed, gets none."""
    sealed = write_run(tmp_path, "sealed", {"baseline": 0.0}) / "leaderboard.csv"
    write_csv(sealed, [r | {"sealed": "true"} for r in read_rows(sealed)])
    unsealed = write_run(tmp_path, "unsealed", {"baseline": 0.01}) / "leaderboard.csv"
    rows = read_rows(unsealed)
    write_csv(unsealed, [r | {"sealed": "false" if i < 3 else "true"} for i, r in enumerate(rows)])
    old = write_run(tmp_path, "old", {"baseline": 0.02}) / "leaderboard.csv"
    write_csv(old, read_rows(old), [c for c in COLUMNS if c != "sealed"])
    methods = compare.collect([sealed, unsealed, old])
    assert [m.mark for m in methods] == ["", " ‡", ""]
    table = compare.comparison_table(methods)
    assert "3 rows ran unsealed" in table["notes"].iloc[1]
    markdown = compare.to_markdown(table, methods)
    assert "| unsealed/baseline ‡ |" in markdown
    assert "‡ = some rows ran without the sandbox" in markdown


def test_a_run_stopped_before_any_task_finished_says_how_to_go_on(
    tiny_catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """``show`` and ``compare`` on such a run said "not a run directory": it is one, with its
    config.json, and ``run --resume`` finishes it."""
    import misbehaving

    from decathlon import cli
    from decathlon.plugins import make_registry
    from decathlon.runner import RunConfig, Runner

    def stopped(*args: object) -> None:
        raise KeyboardInterrupt  # Ctrl-C while the first task runs

    monkeypatch.setattr(Runner, "execute", stopped)
    monkeypatch.setenv("DECATHLON_HOME", str(tmp_path / "home"))
    config = RunConfig(
        adapter="mis_good",
        profile="quick",
        datasets=("breastmnist",),
        data_dir=str(tiny_catalog.data_dir),
        download=False,
        info_path=str(tiny_catalog.info_path),
    )
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        Runner(config, make_registry([misbehaving])).run(run_dir)
    assert (run_dir / "config.json").is_file() and not (run_dir / "leaderboard.csv").exists()
    expected = (
        f"error: {run_dir}: the run has no finished task yet (no leaderboard.csv); finish it"
        f" with `run --resume {run_dir}`\n"
    )
    for argv in (["show", str(run_dir)], ["compare", str(run_dir)]):
        assert cli.main(argv) == 2
        assert capsys.readouterr().err == expected
    with pytest.raises(LeaderboardError, match="the run has no finished task yet"):
        compare.read_leaderboard(run_dir / "leaderboard.csv")
    (tmp_path / "empty").mkdir()  # a folder that is no run: as before
    with pytest.raises(LeaderboardError, match="not a run directory"):
        compare.read_leaderboard(tmp_path / "empty")


def test_a_run_still_going_before_its_first_task_is_not_told_to_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """While its harness holds it, a run without a leaderboard yet is still going: resuming it
    would be refused, so the line says to wait instead."""
    from decathlon import cli, rundir

    run_dir = tmp_path / "run"
    (run_dir / "tasks").mkdir(parents=True)
    (run_dir / "config.json").write_text("{}")
    with rundir.hold(run_dir):
        for argv in (["show", str(run_dir)], ["compare", str(run_dir)]):
            assert cli.main(argv) == 2
            err = capsys.readouterr().err
            assert err == (
                f"error: {run_dir}: the run is still going (pid {os.getpid()}) and no task has"
                " finished yet (no leaderboard.csv); try again once one has\n"
            )
    assert cli.main(["compare", str(run_dir)]) == 2  # once let go: resume it, as before
    assert "finish it with `run --resume" in capsys.readouterr().err


def test_a_file_that_is_no_leaderboard_is_told_by_the_columns_it_has(tmp_path: Path) -> None:
    """ "columns found" listed 'sealed' and 'environment', which the reader fills in for old
    leaderboards, beside the file's own; it now lists only the file's."""
    path = tmp_path / "notes.csv"
    path.write_text("hello,world\n1,2\n")
    with pytest.raises(LeaderboardError) as info:
        compare.read_leaderboard(path)
    assert str(info.value) == (
        f"{path}: not a decathlon leaderboard (columns found: hello, world; expected run_id,"
        " adapter, dataset, size, seed, split, status, auc, ...)"
    )


def test_a_file_cut_just_before_the_last_field_is_refused(good_board: Path) -> None:
    """Cut right after the comma before the last row's ``notes``, the row still has every
    field (notes read as empty): it was accepted and the rows after it were lost. A whole file
    ends with a newline, as the harness writes it (and CRLF files from others end too)."""
    text = good_board.read_text()
    lines = text.splitlines(keepends=True)
    i = next(i for i, line in enumerate(lines) if ",test,ok," in line and i > 3)
    row = lines[i]
    assert row.endswith(",\n")  # the notes field is empty in this row
    bad = good_board.parent / "cut.csv"
    bad.write_text("".join(lines[:i]) + row[:-1])  # ...,reason,<cut>
    with pytest.raises(LeaderboardError) as info:
        compare.read_leaderboard(bad)
    message = str(info.value)
    assert message.startswith(f"{bad}: line {i + 1}: cut off (no newline at the end")
    assert "truncated" in message and "end the file with a newline" in message
    assert "\n" not in message
    # Whole files: the harness's own, and the same rows with CRLF line ends.
    whole = len(compare.read_leaderboard(good_board).rows)
    assert whole > i
    crlf = good_board.parent / "crlf.csv"
    crlf.write_bytes(text.replace("\n", "\r\n").encode())
    assert len(compare.read_leaderboard(crlf).rows) == whole


def test_two_run_folders_of_one_name_are_two_methods_told_apart(tmp_path: Path) -> None:
    """Every `check --workdir W` makes `W/run`: `compare /a/run /b/run` was refused as
    "duplicate rows: method run/baseline is also in ...". Two folders are two methods, labelled
    by the shortest end of their paths that differs; one folder given twice is still refused."""
    first = write_run(tmp_path / "x" / "a", "run", {"baseline": 0.0})
    second = write_run(tmp_path / "y" / "b", "run", {"baseline": 0.05})
    methods = compare.collect([first, second])
    assert [m.label for m in methods] == ["a/run/baseline", "b/run/baseline"]
    assert [m.run_id for m in methods] == ["run", "run"]
    text = compare.compare_command([first, second], bootstrap=0, width=220)
    assert "a/run/baseline" in text and "b/run/baseline" in text
    deeper = write_run(tmp_path / "z" / "a", "run", {"baseline": 0.1})  # same parent name
    labels = [m.label for m in compare.collect([first, deeper, second])]
    assert labels == ["x/a/run/baseline", "z/a/run/baseline", "y/b/run/baseline"]
    for twice in ([first, first], [first, first / "leaderboard.csv"]):
        with pytest.raises(LeaderboardError, match="duplicate rows: method run/baseline"):
            compare.collect(twice)


def test_methods_with_unverified_data_are_marked(tmp_path: Path) -> None:
    """A method with rows on data files without the published MD5 (``data_verified=false``:
    --allow-unverified, or generated files under DECATHLON_INFO) gets § and a note saying how
    many: it was ranked beside real runs with nothing to say it is not the MedMNIST data."""
    real = write_run(tmp_path, "real", {"baseline": 0.0}) / "leaderboard.csv"
    write_csv(real, [r | {"data_verified": "true"} for r in read_rows(real)])
    generated = write_run(tmp_path, "generated", {"baseline": 0.01}) / "leaderboard.csv"
    rows = read_rows(generated)
    marked = [r | {"data_verified": "false" if i < 4 else "true"} for i, r in enumerate(rows)]
    write_csv(generated, marked)
    methods = compare.collect([real, generated], reference="plus")
    marks = {m.label: m.mark for m in methods if m.run_id in ("real", "generated")}
    assert marks == {"real/baseline": "", "generated/baseline": " §"}
    assert all("§" not in m.mark for m in methods if m.run_id not in ("real", "generated"))
    table = compare.comparison_table([m for m in methods if m.size == 28])
    generated_row = table[table["run_id"] == "generated"].iloc[0]
    assert "4 rows on data files without the published MD5" in generated_row["notes"]
    ours = [m for m in methods if m.run_id in ("real", "generated")]
    markdown = compare.to_markdown(compare.comparison_table(ours), ours)
    assert "| generated/baseline § |" in markdown and "| real/baseline |" in markdown
    assert "§ = some rows ran on data files without the published MD5" in markdown


def test_folder_names_that_tell_runs_apart_are_shown_as_text(tmp_path: Path) -> None:
    """Two runs of one name are labelled by their folders' names, which did not go through
    what the file's names go through: an escape sequence in a (received) folder's name reached
    the terminal, and a newline in it split the Markdown table's row and table.csv's."""
    first = write_run(tmp_path / "x\x1b[31m\nnext", "run", {"baseline": 0.0})
    second = write_run(tmp_path / "y", "run", {"baseline": 0.05})
    labels = [m.label for m in compare.collect([first, second])]
    assert labels == ["x [31m next/run/baseline", "y/run/baseline"]
    out = tmp_path / "out"
    text = compare.compare_command([first, second], None, out, ["md"], bootstrap=0, width=220)
    assert "\x1b" not in text and "x [31m next/run/baseline" in text
    rows = [line for line in (out / "table.md").read_text().splitlines() if "run/baseline" in line]
    assert [row.split(" | ")[0] for row in rows[:2]] == [
        "| x \\[31m next/run/baseline",
        "| y/run/baseline",
    ]


def test_a_name_in_markdown_syntax_is_text_in_table_md(tmp_path: Path) -> None:
    """table.md escaped HTML only: a run named like a Markdown link was a link in the rendered
    table (and in the note under it), ``*x*`` emphasis, a name starting ``# `` a heading."""
    from markdown_it import MarkdownIt  # rich's own Markdown parser

    name = "# [x](https://e.example)*b*_c_`d`~~e~~|f\\"
    failures = {(name, "octmnist"): "timeout"}  # incomplete: a note under the table names it
    run = write_run(tmp_path, "hostile", {name: 0.0, "resnet18_28": 0.01}, failures=failures)
    out = tmp_path / "out"
    compare.compare_command([run], None, out, ["md"], bootstrap=0, width=220)
    markdown = MarkdownIt("commonmark").enable(["table", "strikethrough"])
    rendered = markdown.render((out / "table.md").read_text())
    for markup in ("<a ", "<em>", "<code>", "<s>", "<h1>"):
        assert markup not in rendered
    shown = "hostile/# [x](https://e.example)*b*_c_`d`~~e~~|f\\ †"
    assert rendered.count(f"<td>{shown}</td>") == 1  # the table's cell, whole
    assert f"<li>{shown}: 9/10 datasets ok" in rendered  # the note
    assert "hostile/resnet18_28" in (out / "table.md").read_text()  # no escape where none is needed
    from decathlon.compare.table import markdown_text

    for start in ("# draft", "- draft", "+ draft", "1. draft", "2) draft"):  # a note starts so
        item = markdown.render(f"- {markdown_text(start + '/baseline: 9/10 datasets ok')}")
        assert item == f"<ul>\n<li>{start}/baseline: 9/10 datasets ok</li>\n</ul>\n", start


def test_three_methods_equal_on_every_dataset_get_no_test(tmp_path: Path) -> None:
    """Three copies of one run (the same scores under three names) went to autorank: Friedman's
    statistic is then 0/0, and the line read "p = nan; the methods do not differ significantly",
    with a critical difference and a diagram. As for two such methods, nothing is tested."""
    run = write_run(tmp_path, "same", {"a": 0.0, "b": 0.0, "c": 0.0}, splits=False)
    for metric in compare.METRICS:
        sig = compare.significance(compare.collect([run]), metric)
        assert sig.test is None and sig.result is None
        assert sig.lines == [
            f"The 3 methods have the same test {metric.upper()} on every dataset; no test to run."
        ]
    text = compare.compare_command([run], bootstrap=0, width=200)
    assert "nan" not in text


@pytest.mark.parametrize("n", [3, 10, 20, 31, 60, 150])
def test_every_method_in_a_plot_has_its_own_colour(n: int) -> None:
    """Past 20 methods (31 with ``--reference plus``) two methods shared a bar colour, so the
    legend could not tell them apart."""
    from decathlon.compare import plots

    colors = plots._colors(n)
    assert len(colors) == n
    assert len({tuple(round(c, 4) for c in color) for color in colors}) == n


def test_a_score_that_prints_as_a_published_one_ties_with_it_in_the_rank(tmp_path: Path) -> None:
    """The published tables give three decimals: a run's 0.9194 prints as automl_vision's
    published 0.919 on breastmnist and both are marked best, so they share the rank rather
    than the run ranking first and the published method second."""
    rows = []
    for split in compare.SPLITS:
        row = {c: "" for c in COLUMNS}
        row.update(run_id="tie", adapter="baseline", dataset="breastmnist", size=28, seed=0)
        row.update(split=split, status="ok", auc="0.919400", acc="0.700000", profile="quick")
        rows.append(row)
    board = write_csv(tmp_path / "tie.csv", rows)
    compare.compare_command(
        [board], "v2", out=tmp_path / "out", formats=["csv"], datasets=["breastmnist"], bootstrap=0
    )
    ranks = {r["method"]: float(r["rank_auc"]) for r in read_rows(tmp_path / "out" / "table.csv")}
    assert ranks["tie/baseline"] == ranks["paper_v2/automl_vision"] == 1.5


def test_a_reference_without_the_chosen_size_is_refused_not_dropped(tmp_path: Path) -> None:
    """`compare RUN@64 --reference v2 --size 64`: v2 has 28 only, and its rows were dropped
    without a word, leaving a table (and a report) of the run alone that passed for a
    comparison with the published results; it is refused in one line naming what has 64."""
    run = write_run(tmp_path, "big", {"baseline": 0.0}, size=64)
    with pytest.raises(LeaderboardError, match=r"--reference v2 .* none at 64.*--reference plus"):
        compare.compare_command([run], "v2", size=64, bootstrap=0)
    text = compare.compare_command([run], "plus", size=64, bootstrap=0)
    assert "big/baseline@64" in text and "@64" in text.split("big/baseline@64", 1)[1]


def test_an_unwritable_report_is_refused_before_any_work(tmp_path: Path) -> None:
    """`compare --report PATH` read, tested and resampled everything (and wrote the --format
    files) before it found that PATH could not be written: a folder, or under a file. Now it
    says so in one line first, and writes nothing."""
    board = write_run(tmp_path, "runA", {"good": 0.05})
    blocker = tmp_path / "a-file"
    blocker.write_text("kept\n")
    folder = tmp_path / "a-folder"
    folder.mkdir()
    out = tmp_path / "out"
    asked: list[str] = []

    def labels(flag: str) -> np.ndarray | None:  # the bootstrap asks for each dataset's labels
        asked.append(flag)
        return None

    for report, why in ((folder, f"{folder} is a folder"), (blocker / "page.html", "not a folder")):
        with pytest.raises(LeaderboardError) as caught:
            compare.compare_command(
                [board], None, out, ["md"], False, report=report, labels_fn=labels
            )
        message = str(caught.value)
        assert len(message.splitlines()) == 1
        assert message.startswith(f"{report}: cannot write the report") and why in message
        assert message.endswith("choose another --report")
    assert asked == [] and not out.exists()
    assert blocker.read_text() == "kept\n" and list(folder.iterdir()) == []


def test_an_unwritable_out_is_refused_before_any_work(tmp_path: Path) -> None:
    """`compare --format md --out PATH` (and --plots) read, tested and resampled everything
    before it found that PATH could not take the files (under a file, or a table file that is a
    folder), as --report did."""
    board = write_run(tmp_path, "runA", {"good": 0.05})
    blocker = tmp_path / "a-file"
    blocker.write_text("kept\n")
    taken = tmp_path / "taken"
    (taken / "table.md").mkdir(parents=True)
    asked: list[str] = []

    def labels(flag: str) -> np.ndarray | None:
        asked.append(flag)
        return None

    cases = (
        (blocker / "out", ["md"], False, "not a folder"),
        (blocker / "out", [], True, "not a folder"),
        (taken, ["md"], False, f"{taken / 'table.md'} is a folder"),
    )
    for out, formats, plots, why in cases:
        with pytest.raises(LeaderboardError) as caught:
            compare.compare_command([board], None, out, formats, plots, labels_fn=labels)
        message = str(caught.value)
        assert len(message.splitlines()) == 1
        assert message.startswith(f"{out}: cannot write the comparison's files") and why in message
        assert message.endswith("choose another --out")
    assert asked == []
    assert blocker.read_text() == "kept\n"
