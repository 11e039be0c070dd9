"""AUC and ACC equal an independent computation from the MedMNIST evaluator's rules.

The rules (medmnist.evaluator getAUC / getACC): binary uses the last column as the positive class
and ACC at ``score > 0.5``; multi-class and ordinal take the mean one-vs-rest AUC and argmax ACC;
multi-label takes the mean per-label AUC and the mean per-label ACC at ``score > 0.5``. The
reference below is written from those rules with plain numpy (pairwise comparisons, no
scikit-learn), and is checked on the real files' labels and on generated data.
"""

from __future__ import annotations

import os
import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from decathlon import metrics
from decathlon.contract import BINARY, MULTI_CLASS, MULTI_LABEL, ORDINAL, DatasetInfo

# --------------------------------------------------------------------------- the reference


def pairwise_auc(truth: np.ndarray, score: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting one half."""
    truth = np.asarray(truth).astype(int)
    pos, neg = score[truth == 1], score[truth == 0]
    assert len(pos) and len(neg)
    greater = 0.0
    ties = 0.0
    for start in range(0, len(pos), 512):  # chunks keep the (pos x neg) matrix small
        chunk = pos[start : start + 512, None]
        greater += float((chunk > neg[None, :]).sum())
        ties += float((chunk == neg[None, :]).sum())
    return (greater + 0.5 * ties) / (len(pos) * len(neg))


def reference_auc(task: str, y: np.ndarray, s: np.ndarray) -> float:
    if task == BINARY:
        return pairwise_auc(y[:, 0], s[:, -1])
    if task == MULTI_LABEL:
        return float(np.mean([pairwise_auc(y[:, j], s[:, j]) for j in range(s.shape[1])]))
    labels = y[:, 0]
    return float(np.mean([pairwise_auc(labels == c, s[:, c]) for c in range(s.shape[1])]))


def reference_acc(task: str, y: np.ndarray, s: np.ndarray) -> float:
    if task == BINARY:
        return float(np.mean((s[:, -1] > 0.5) == (y[:, 0] == 1)))
    if task == MULTI_LABEL:
        per_label = [np.mean((s[:, j] > 0.5) == (y[:, j] == 1)) for j in range(y.shape[1])]
        return float(np.mean(per_label))
    return float(np.mean(np.argmax(s, axis=1) == y[:, 0]))


# --------------------------------------------------------------------------- scores to test


def random_scores(rng: np.random.Generator, n: int, k: int, task: str) -> np.ndarray:
    """Uninformed scores: rows of probabilities (independent per label for multi-label)."""
    if task == MULTI_LABEL:
        return rng.random((n, k))
    return rng.dirichlet(np.ones(k), size=n)


def realistic_scores(rng: np.random.Generator, y: np.ndarray, k: int, task: str) -> np.ndarray:
    """Scores that lean towards the truth, rounded to 2 decimals so that ties occur, with some
    values exactly at the 0.5 threshold."""
    n = len(y)
    if task == MULTI_LABEL:
        logits = 2.0 * (y.astype(float) - 0.5) + rng.normal(0.0, 1.2, size=(n, k))
        scores = np.round(1.0 / (1.0 + np.exp(-logits)), 2)
    else:
        logits = rng.normal(0.0, 1.0, size=(n, k))
        logits[np.arange(n), y[:, 0]] += 1.5
        scores = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        scores = np.round(scores, 2)
    scores[: max(1, n // 20), -1] = 0.5  # the threshold itself: not above it
    return scores


def check_equal(task: str, y: np.ndarray, s: np.ndarray) -> None:
    assert metrics.auc(task, y, s) == pytest.approx(reference_auc(task, y, s), abs=1e-12)
    assert metrics.acc(task, y, s) == pytest.approx(reference_acc(task, y, s), abs=1e-12)


# --------------------------------------------------------------------------- the real files


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("flag", "task", "k"),
    [("breastmnist", BINARY, 2), ("pneumoniamnist", BINARY, 2), ("retinamnist", ORDINAL, 5)],
)
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_real_labels(real_data_dir: Path, flag: str, task: str, k: int, split: str) -> None:
    with np.load(real_data_dir / f"{flag}.npz", allow_pickle=False) as npz:
        y = npz[f"{split}_labels"]
    assert y.shape == (len(y), 1) and set(np.unique(y)) == set(range(k))
    rng = np.random.default_rng(zlib.crc32(f"{flag}/{split}".encode()))
    for scores in (random_scores(rng, len(y), k, task), realistic_scores(rng, y, k, task)):
        check_equal(task, y, scores)
    # A realistic predictor is better than chance and worse than perfect on both metrics.
    s = realistic_scores(rng, y, k, task)
    assert 0.6 < metrics.auc(task, y, s) < 1.0


@pytest.mark.realdata
def test_binary_uses_the_last_column(real_data_dir: Path) -> None:
    with np.load(real_data_dir / "breastmnist.npz", allow_pickle=False) as npz:
        y = npz["test_labels"]
    rng = np.random.default_rng(0)
    s = random_scores(rng, len(y), 2, BINARY)
    swapped = s[:, ::-1]
    assert metrics.auc(BINARY, y, s) == pytest.approx(1.0 - metrics.auc(BINARY, y, swapped))
    perfect = np.column_stack([1.0 - y[:, 0], y[:, 0]]).astype(float)
    assert metrics.auc(BINARY, y, perfect) == 1.0 and metrics.acc(BINARY, y, perfect) == 1.0
    assert metrics.acc(BINARY, y, perfect[:, ::-1]) == 0.0
    # ACC at 0.5 is strict: a score of exactly 0.5 is a negative.
    half = np.full((len(y), 2), 0.5)
    assert metrics.acc(BINARY, y, half) == pytest.approx(np.mean(y[:, 0] == 0))


# --------------------------------------------------------------------------- generated data


@pytest.mark.parametrize("n", [50, 700, 3000])
def test_generated_multi_label_14(n: int) -> None:
    rng = np.random.default_rng(n)
    y = (rng.random((n, 14)) < rng.uniform(0.02, 0.4, size=14)).astype(np.uint8)
    y[0], y[1] = 0, 1  # both values in every label
    for scores in (
        random_scores(rng, n, 14, MULTI_LABEL),
        realistic_scores(rng, y, 14, MULTI_LABEL),
    ):
        check_equal(MULTI_LABEL, y, scores)


@pytest.mark.parametrize("task", [MULTI_CLASS, ORDINAL])
@pytest.mark.parametrize("n", [60, 1000])
def test_generated_multi_class_11(task: str, n: int) -> None:
    rng = np.random.default_rng(n + 11)
    y = rng.permutation(np.arange(n) % 11).astype(np.uint8)[:, None]
    for scores in (random_scores(rng, n, 11, task), realistic_scores(rng, y, 11, task)):
        check_equal(task, y, scores)


def test_multi_label_acc_is_the_mean_of_per_label_accuracies() -> None:
    y = np.array([[1, 1], [1, 1], [0, 0], [0, 1]], dtype=np.uint8)
    s = np.array([[0.9, 0.5], [0.6, 0.2], [0.1, 0.1], [0.7, 0.8]])
    # label 0: 3 of 4 right; label 1: 2 of 4 right (0.5 is not above the threshold).
    assert metrics.acc(MULTI_LABEL, y, s) == pytest.approx((0.75 + 0.5) / 2)


def medmnist_mean(values: list[float]) -> float:
    """How medmnist 3.0.2's getAUC / getACC average: ``acc = 0``, ``acc += ...`` per label, in
    order, then ``acc / n``."""
    total = 0
    for value in values:
        total += value
    return total / len(values)


def test_multi_label_mean_is_medmnists_to_the_last_bit() -> None:
    """14 labels whose accuracies over 40 rows average 0.5125: medmnist's running sum gives the
    float nearest 0.5125 (ACC 0.512 in the evaluator file's name); numpy's pairwise mean gave
    0.5125000000000001 (0.513)."""
    right = [9, 21, 21, 26, 22, 2, 6, 33, 35, 40, 18, 6, 16, 32]  # per label, of 40
    y = np.zeros((40, 14), dtype=np.uint8)
    for j, count in enumerate(right):
        y[:count, j] = 1
    s = np.full((40, 14), 0.9)  # every label predicted 1: label j is right on its count rows
    value = metrics.acc(MULTI_LABEL, y, s)
    assert value == medmnist_mean([count / 40 for count in right])
    assert f"{value:.3f}" == "0.512"
    rng = np.random.default_rng(7)
    for k in (9, 11, 14):  # AUC too, as the mean over classes or labels
        y = rng.integers(0, 2, size=(60, k)).astype(np.uint8)
        s = rng.random((60, k))
        per_label = [pairwise_auc(y[:, j], s[:, j]) for j in range(k)]
        assert metrics.auc(MULTI_LABEL, y, s) == pytest.approx(medmnist_mean(per_label))
        labels = (np.arange(60) % k).astype(np.uint8)[:, None]
        per_class = [metrics.auc(BINARY, (labels == c).astype(np.uint8), s[:, c]) for c in range(k)]
        assert metrics.auc(MULTI_CLASS, labels, s) == medmnist_mean(per_class)


def test_unknown_task_type() -> None:
    with pytest.raises(ValueError, match="unknown task type"):
        metrics.auc("regression", np.zeros((2, 1)), np.zeros((2, 2)))


# --------------------------------------------------------------------------- check_scores


def _info(task: str = BINARY, n_classes: int = 2) -> DatasetInfo:
    return DatasetInfo(
        flag="breastmnist",
        task=task,
        n_channels=1,
        n_classes=n_classes,
        labels={str(i): str(i) for i in range(n_classes)},
        n_samples={"train": 10, "val": 4, "test": 4},
    )


def test_check_scores_accepts_valid_scores() -> None:
    good = np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0], [0.25, 0.75]])
    assert metrics.check_scores(good, 4, _info()) is None
    assert metrics.check_scores(good.astype(np.float32), 4, _info()) is None
    assert metrics.check_scores(np.full((4, 14), 0.3), 4, _info(MULTI_LABEL, 14)) is None


@pytest.mark.parametrize(
    ("scores", "fragment"),
    [
        (np.full((4, 1), 0.5), "shape (4, 1); expected (4, 2)"),
        (np.full((3, 2), 0.5), "shape (3, 2); expected (4, 2)"),
        (np.full(4, 0.5), "shape (4,); expected (4, 2)"),
        (np.array([[0.5, np.nan]] * 4), "4 scores are NaN or infinite"),
        (np.array([[0.5, np.inf]] + [[0.5, 0.5]] * 3), "1 scores are NaN or infinite"),
        (np.array([[-0.1, 1.0]] * 4), "range over [-0.1, 1]"),
        (np.array([[0.0, 1.0001]] * 4), "expected probabilities in [0, 1]"),
        (np.array([[0.5, 0.5]] * 4, dtype=object), "dtype object; expected floats"),
        (np.full((4, 2), "0.5"), "expected floats"),
        (np.full((4, 2), 0.5 + 0.5j), "dtype complex128; expected floats"),
        (np.full((4, 2), True), "dtype bool; expected floats"),
    ],
)
def test_check_scores_refuses(scores: np.ndarray, fragment: str) -> None:
    problem = metrics.check_scores(scores, 4, _info())
    assert problem is not None and fragment in problem
    assert "\n" not in problem


# --------------------------------------------------------------------------- evaluator files


_NAME = re.compile(
    r"^(?P<flag>[a-z]+)_(?P<split>train|val|test)_\[AUC\](?P<auc>\d\.\d{3})"
    r"_\[ACC\](?P<acc>\d\.\d{3})@(?P<run>.+)\.csv$"
)


def test_evaluator_filename_size_flag() -> None:
    """medmnist's size_flag: nothing at 28, ``_64`` and so on for the larger files."""
    assert metrics.evaluator_filename("pathmnist", "val", 0.5, 0.25, "r") == (
        "pathmnist_val_[AUC]0.500_[ACC]0.250@r.csv"
    )
    assert metrics.evaluator_filename("pathmnist", "val", 0.5, 0.25, "r", size=28) == (
        "pathmnist_val_[AUC]0.500_[ACC]0.250@r.csv"
    )
    assert metrics.evaluator_filename("pathmnist", "val", 0.5, 0.25, "r", size=64) == (
        "pathmnist_64_val_[AUC]0.500_[ACC]0.250@r.csv"
    )


def _medmnist_run(filename: str) -> str:
    """The run medmnist 3.0.2 reads from a file name: ``Evaluator.parse_and_evaluate``
    (medmnist/evaluator.py) does ``run = filename.split("@")[-1].split(".")[0]``."""
    return filename.split("@")[-1].split(".")[0]


@pytest.mark.parametrize("run", ["review-dot.v2", "run", "a@b.c.d", "x_y-20261127-170000"])
def test_medmnist_reads_the_evaluator_files_run_back_whole(run: str) -> None:
    """A run folder named ``review-dot.v2`` gave ``...@review-dot.v2.csv``, which medmnist
    re-scores and re-writes as ``...@review-dot.csv``: a second file, not the same bytes under
    the same name. The run part has its dots (and ``@``) made ``-``."""
    for size in (28, 64):
        name = metrics.evaluator_filename("breastmnist", "test", 0.871, 0.827, run, size=size)
        parsed = _medmnist_run(name)
        # medmnist's get_standard_evaluation_filename with the run it parsed: the same name.
        flag_size = "breastmnist" + metrics.size_flag(size)
        assert name == f"{flag_size}_test_[AUC]0.871_[ACC]0.827@{parsed}.csv"
        assert parsed == metrics.evaluator_run(run)
    assert metrics.evaluator_run("review-dot.v2") == "review-dot-v2"
    assert metrics.evaluator_run("plain-run_1") == "plain-run_1"


@pytest.mark.parametrize(("task", "k"), [(BINARY, 2), (MULTI_CLASS, 11), (MULTI_LABEL, 14)])
def test_evaluator_csv_round_trip(tmp_path: Path, task: str, k: int) -> None:
    rng = np.random.default_rng(k)
    n = 120
    if task == MULTI_LABEL:
        y = (rng.random((n, k)) < 0.3).astype(np.uint8)
        y[0], y[1] = 0, 1
    else:
        y = rng.permutation(np.arange(n) % k).astype(np.uint8)[:, None]
    s = realistic_scores(rng, y, k, task)
    s[5, 0] = 1.0 / 3.0  # a value that needs every digit to come back equal
    auc, acc = metrics.auc(task, y, s), metrics.acc(task, y, s)
    path = metrics.save_evaluator_csv(tmp_path / "eval", "organamnist", "test", s, auc, acc, "r1")

    assert path.name == f"organamnist_test_[AUC]{auc:.3f}_[ACC]{acc:.3f}@r1.csv"
    assert path.name == metrics.evaluator_filename("organamnist", "test", auc, acc, "r1")
    match = _NAME.match(path.name)
    assert match and match["flag"] == "organamnist" and match["run"] == "r1"
    assert list(tmp_path.joinpath("eval").iterdir()) == [path]  # no temporary file left

    # Byte for byte what medmnist's Evaluator.evaluate(y_score, save_folder=...) writes.
    expected = tmp_path / "expected.csv"
    pd.DataFrame(s).to_csv(expected, header=None)
    assert path.read_bytes() == expected.read_bytes()
    assert not path.read_bytes().startswith(b"\xef\xbb\xbf")
    # And read back as medmnist's parse_and_evaluate reads it.
    table = pd.read_csv(path, index_col=0, header=None)
    assert table.index.tolist() == list(range(n))
    back = table.sort_index().to_numpy()
    assert back.shape == (n, k)
    np.testing.assert_array_equal(back, s)
    # Re-scored from the file alone, the numbers in its name come back.
    assert f"{reference_auc(task, y, back):.3f}" == match["auc"]
    assert f"{reference_acc(task, y, back):.3f}" == match["acc"]


def test_evaluator_csv_refuses_nan_scores_in_the_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="NaN"):
        metrics.save_evaluator_csv(
            tmp_path, "breastmnist", "val", np.zeros((2, 2)), np.nan, 0.5, "r"
        )


@pytest.mark.parametrize("run", ["r" * 230, "é" * 200, "x.y@" * 60])
def test_a_long_run_name_still_gives_evaluator_files(tmp_path: Path, run: str) -> None:
    """A run folder named with 230 characters crashed the harness after its first task (OSError:
    File name too long, the evaluator file's name being longer than 255 bytes); the run part is
    now cut, and medmnist still reads it back and writes the same name."""
    s = np.array([[0.2, 0.8], [0.7, 0.3], [0.4, 0.6], [0.9, 0.1]])
    folder = tmp_path / "eval"
    for size in (28, 224):
        path = metrics.save_evaluator_csv(folder, "pneumoniamnist", "train", s, 1.0, 1.0, run, size)
        assert len(os.fsencode(path.name)) <= 255 - 30
        assert _medmnist_run(path.name) == metrics.evaluator_run(run)
        assert run.replace(".", "-").replace("@", "-").startswith(metrics.evaluator_run(run))
    assert len(list(folder.iterdir())) == 2
