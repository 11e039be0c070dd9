"""The portfolio adapter: registration and its pure-numpy parts (fast), then real runs through
the harness in the ResNets' torch environment: the conformance check on all four task types, a
real breastmnist run with a tiny budget, a budget that cuts the search, and determinism for a
seed on an epoch-bounded plan."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from decathlon_adapters import portfolio, resnet

from decathlon import environments, launcher, leaderboard, synthetic
from decathlon.conformance import assert_conforms
from decathlon.contract import BINARY, MULTI_CLASS, MULTI_LABEL, ORDINAL, Predictions
from decathlon.errors import BudgetError
from decathlon.metrics import auc
from decathlon.plugins import make_registry
from decathlon.runner import RunConfig, Runner


def test_registered_in_the_resnets_environment() -> None:
    adapter = make_registry().get("portfolio")
    assert adapter.run == "decathlon_adapters.portfolio:run"
    assert adapter.environment == resnet.ENVIRONMENT
    assert environments.env_dir(adapter) == environments.env_dir(make_registry().get("resnet18_28"))
    assert adapter.uses_gpu


@pytest.mark.parametrize(
    ("task", "k"), [(BINARY, 2), (MULTI_CLASS, 11), (ORDINAL, 5), (MULTI_LABEL, 14)]
)
def test_fast_auc_is_the_harness_auc(task: str, k: int) -> None:
    rng = np.random.default_rng(k)
    n = 300
    if task == MULTI_LABEL:
        y = rng.integers(0, 2, (n, k))
    else:
        y = rng.integers(0, k, (n, 1))
    scores = rng.random((n, k)).round(2)  # rounded: ties, which the ROC counts by halves
    assert portfolio.fast_auc(task, y, scores) == pytest.approx(auc(task, y, scores), abs=1e-12)


def test_fast_auc_is_nan_when_a_class_is_missing() -> None:
    y = np.zeros((10, 1), dtype=int)
    assert np.isnan(portfolio.fast_auc(BINARY, y, np.random.default_rng(0).random((10, 2))))


def test_ensemble_selection_weights_the_informative_members() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (200, 1))
    good = np.stack([1 - y[:, 0], y[:, 0]], axis=1) * 0.6 + rng.random((200, 2)) * 0.4
    noise = [rng.random((200, 2)) for _ in range(5)]
    weights = portfolio.ensemble_selection(
        [*noise, good], y, BINARY, size=10, bags=4, seed=0, init=1
    )
    assert weights.shape == (6,) and weights.sum() == pytest.approx(1.0)
    assert weights[-1] == weights.max() and weights[-1] > 0.5


@pytest.mark.parametrize(
    ("task", "y"),
    [
        (BINARY, np.ones((20, 1), dtype=int)),  # val of one class
        (MULTI_LABEL, np.eye(20, 2, dtype=int)[:, [0, 1]] * [1, 0]),  # label 1 all 0
    ],
)
def test_a_diverged_run_gets_no_weight_where_validation_defines_no_auc(task, y) -> None:
    # chestmnist's hernia label can be all 0 in a small val: no candidate's AUC is defined, and
    # the fallback must still leave out a run that diverged, or every score is NaN.
    rng = np.random.default_rng(0)
    good = [rng.random((20, 2)) for _ in range(3)]
    diverged = np.full((20, 2), np.nan)
    weights = portfolio.ensemble_selection(
        [good[0], diverged, *good[1:]], y, task, size=5, bags=4, seed=0
    )
    assert weights[1] == 0 and weights.sum() == pytest.approx(1.0)
    ensemble = portfolio.weighted(weights, [good[0], diverged, *good[1:]])
    assert np.all(np.isfinite(ensemble))


@pytest.mark.parametrize("size", [1, 2])
def test_an_ensemble_size_under_the_sorted_start_picks_that_many_steps(size: int) -> None:
    # --option ensemble_size=1 asks for the single best run: the sorted start (3 members) gave
    # three, whatever the size.
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (100, 1))
    scores = [
        np.stack([1 - y[:, 0], y[:, 0]], 1) * q + rng.random((100, 2)) for q in (0.1, 0.5, 0.3)
    ]
    weights = portfolio.ensemble_selection(scores, y, BINARY, size=size, bags=1, seed=0)
    assert np.count_nonzero(weights) <= size and weights[1] == weights.max()


def test_ensemble_selection_past_its_time_keeps_the_members_chosen_so_far() -> None:
    # Hundreds of runs on chestmnist's 11,219 val images take minutes of selection, past the
    # margin the end leaves it and toward the hard limit's kill: at its time it stops where it
    # is, with valid weights (the first bag's best few), and the views' resampling with it.
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (200, 1))
    scores = [rng.random((200, 2)) for _ in range(12)]
    past = time.time() - 1.0
    weights = portfolio.ensemble_selection(scores, y, BINARY, size=25, bags=8, seed=0, until=past)
    assert weights.sum() == pytest.approx(1.0) and 1 <= np.count_nonzero(weights) <= 3
    assert portfolio.plain_wins_share(y, scores[0], scores[1], BINARY, 0, until=past) == 0.0
    full = portfolio.ensemble_selection(scores, y, BINARY, size=25, bags=8, seed=0)
    assert np.count_nonzero(full) > 3  # without a time, every bag and step as before


def test_selection_says_it_was_cut_only_where_it_stopped_with_work_left() -> None:
    # The notes' selection_cut was the clock after the selection, past its time, so it said true
    # where the selection had finished every bag and resample (just late): each says it instead.
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (60, 1))
    scores = [rng.random((60, 2)) for _ in range(6)]
    stopped: list[str] = []
    portfolio.ensemble_selection(scores, y, BINARY, size=5, bags=2, seed=0, stopped=stopped)
    portfolio.plain_wins_share(y, scores[0], scores[1], BINARY, 0, resamples=5, stopped=stopped)
    assert stopped == []
    past = time.time() - 1.0
    portfolio.ensemble_selection(
        scores, y, BINARY, size=5, bags=2, seed=0, until=past, stopped=stopped
    )
    portfolio.plain_wins_share(y, scores[0], scores[1], BINARY, 0, until=past, stopped=stopped)
    assert stopped == ["ensemble_selection", "plain_wins_share"]
    # A selection of its init best alone has nothing left to cut, even past its time.
    done: list[str] = []
    portfolio.ensemble_selection(
        scores, y, BINARY, size=3, bags=1, seed=0, until=past, stopped=done
    )
    assert done == []


def test_test_time_views_are_dropped_only_where_validation_shows_them_worse_beyond_its_noise():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(78, 1))  # breastmnist's validation size

    def scores(p: np.ndarray) -> np.ndarray:
        return np.hstack([1 - p, p])

    informative = np.clip(0.5 * y + rng.normal(0.25, 0.25, size=y.shape), 0, 1)
    slightly_off = np.clip(informative + rng.normal(0, 0.03, size=y.shape), 0, 1)
    noise = rng.uniform(size=y.shape)
    gap = portfolio.fast_auc(BINARY, y, scores(informative)) - portfolio.fast_auc(
        BINARY, y, scores(slightly_off)
    )
    assert 0 < gap < 0.01  # plain a few thousandths higher: a coin toss on 78 images
    tied = portfolio.plain_wins_share(y, scores(informative), scores(slightly_off), BINARY, 0)
    assert tied < portfolio.PLAIN_WINS_NEEDED
    # Views that ruin the scores lose in every resample: the plain scores are chosen.
    ruined = portfolio.plain_wins_share(y, scores(informative), scores(noise), BINARY, 0)
    assert ruined >= portfolio.PLAIN_WINS_NEEDED
    assert ruined == portfolio.plain_wins_share(y, scores(informative), scores(noise), BINARY, 0)
    diverged = np.full_like(noise, np.nan)
    assert portfolio.plain_wins_share(y, scores(informative), scores(diverged), BINARY, 0) == 1.0


def test_a_rung_splits_into_more_seeds_but_never_into_shorter_runs_than_the_one_before() -> None:
    # Breastmnist seed 0 of the 10-minute measurement: rung 1 ran 40 s per run; its last rung,
    # 182 s per process for one configuration capped at 40 epochs of ~0.6 s, became 8 rounds of
    # 23 s. Now: the most rounds that keep every run at 40 s or more.
    assert portfolio.rounds_of_rung(182.0, 1, 40 * 0.57, 40.1) == 4
    assert portfolio.rounds_of_rung(182.0, 1, 40 * 0.57, 0.0) == 8  # the first rung: no floor
    # Every survivor runs once, even when that makes runs shorter than the rung before's.
    assert portfolio.rounds_of_rung(100.0, 3, 1000.0, 60.0) == 3
    # Rounding does not cost a round: 120 s after runs of 40 s (and a hair) is three rounds.
    assert portfolio.rounds_of_rung(120.0, 1, 10.0, 40.0 + 1e-8) == 3
    # No cap that binds: one round per survivor, whatever the rung before ran.
    assert portfolio.rounds_of_rung(500.0, 2, 40 * 20.0, 100.0) == 2


def test_a_diverged_run_of_weight_zero_leaves_the_ensemble_finite() -> None:
    good = np.array([[0.2, 0.8], [0.6, 0.4]])
    diverged = np.array([[np.nan, np.nan], [0.5, 0.5]])
    ensemble = portfolio.weighted(np.array([1.0, 0.0]), [good, diverged])
    assert np.array_equal(ensemble, good)


def test_the_fallback_run_gets_most_of_a_short_time_left_before_the_hard_limit() -> None:
    # The quick budgets at --scale-factor 0.1 (conformance check): a hard limit of 18 s, 12 s
    # left after the probe. A fixed 10 s reserve left the fallback run 2 s, less than a fresh
    # training process takes to its first step: no prediction, the task failed.
    assert portfolio.fallback_stop(1000.0, now=988.0) == pytest.approx(997.0)
    assert portfolio.fallback_stop(1000.0, now=900.0) == pytest.approx(990.0)  # 10 s at most
    assert portfolio.fallback_stop(1000.0, now=1001.0) == pytest.approx(1000.0)


class _PoolThatLosesAProcess:
    """A training pool whose process dies (the OOM killer under --memory-mb) at the ``dies``-th
    run: that run, and every run submitted after, fail with BrokenProcessPool, as a real
    ProcessPoolExecutor's do; the runs before finish with scores that know the labels."""

    def __init__(self, y_val: np.ndarray, y_test_like: int, dies: int) -> None:
        self.y_val, self.n_test, self.dies, self.submitted = y_val, y_test_like, dies, 0

    def submit(self, fn, config, record, stop_at):
        from concurrent.futures import Future
        from concurrent.futures.process import BrokenProcessPool

        self.submitted += 1
        future: Future = Future()
        if self.submitted >= self.dies:
            future.set_exception(BrokenProcessPool("a child process terminated abruptly"))
            return future
        rng = np.random.default_rng(self.submitted)
        informative = np.eye(2)[self.y_val[:, 0]] * 0.6 + rng.random((len(self.y_val), 2)) * 0.4
        test = rng.random((self.n_test, 2))
        for split, scores in ((record.val, informative), (record.test, test)):
            split.update(
                plain=scores / scores.sum(1, keepdims=True),
                tta=scores / scores.sum(1, keepdims=True),
            )
        record.snapshots, record.epochs_run, record.complete = 1, record.epochs, True
        record.val_auc = portfolio.fast_auc(BINARY, self.y_val, informative)
        future.set_result(record)
        return future


def _race_binary(
    tmp_path: Path, y_val: np.ndarray, pool: _PoolThatLosesAProcess, configs: str
) -> Predictions:
    """``portfolio._race`` of ``configs`` on a binary task of 40 train (both classes), 40 val
    (``y_val``) and 20 test images, epoch-bounded, the runs trained by ``pool``."""
    from decathlon.contract import Budget, DatasetInfo, Task

    rng = np.random.default_rng(0)
    info = DatasetInfo("breastmnist", BINARY, 1, 2, {"0": "a", "1": "b"}, {})
    task = Task(
        info,
        rng.integers(0, 256, (40, 28, 28), dtype=np.uint8),
        (np.arange(40) % 2)[:, None].astype(np.uint8),
        rng.integers(0, 256, (40, 28, 28), dtype=np.uint8),
        y_val.astype(np.uint8),
        rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        Budget(hard_limit_seconds=900, epochs=2),
        0,
        tmp_path,
        tmp_path,
    )
    data = portfolio.TaskData(
        BINARY, 2, task.x_train, task.y_train, task.x_val, task.y_val, task.x_test
    )
    far = time.time() + 900
    return portfolio._race(
        task,
        pool,
        data,
        {**portfolio.OPTIONS, "configs": configs, "mirror": "always"},
        processes=1,
        eta=3,
        max_epochs=2,
        min_epochs=2,
        epoch_bounded=True,
        stop_at=far,
        end=far,
    )


def test_a_killed_training_process_leaves_the_ensemble_of_the_runs_that_finished(
    tmp_path: Path,
) -> None:
    y_val = (np.arange(40) % 2)[:, None]
    configs = "vgg-geo,res-geo,wide-geo"
    pool = _PoolThatLosesAProcess(y_val, 20, dies=3)  # rung 0's third run: two finished
    result = _race_binary(tmp_path, y_val, pool, configs)
    assert result.test.shape == (20, 2) and np.all(np.isfinite(result.test))
    assert len(result.info["runs"]) == 2 and len(result.info["rungs"]) == 1  # no rung after
    assert "training process was killed" in result.info["killed"]
    # Killed before any run finished: a one-line reason, not the pool's traceback.
    with pytest.raises(RuntimeError, match="killed .* before any run finished"):
        _race_binary(tmp_path, y_val, _PoolThatLosesAProcess(y_val, 20, dies=1), configs)


def test_notes_of_an_undefined_validation_auc_are_strict_json(tmp_path: Path) -> None:
    # A val split of one class: the ensemble's val AUC is undefined (NaN), which the notes
    # spelled as a bare NaN, no JSON at all (json.loads in other languages, jq, refuse it).
    y_val = np.zeros((40, 1), dtype=np.uint8)
    pool = _PoolThatLosesAProcess(y_val, 20, dies=99)  # no process dies
    result = _race_binary(tmp_path, y_val, pool, "vgg-geo,res-geo")

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    notes = json.loads(json.dumps(result.info), parse_constant=refuse)
    assert notes["ensemble_val_auc"] is None
    assert notes["ensemble_val_auc_plain"] is None and notes["ensemble_val_auc_tta"] is None


def test_folds_are_even_in_size_and_in_class_shares_and_fixed_by_the_seed() -> None:
    # Breastmnist's train + val: 624 images, 73% of them label 1.
    labels = np.r_[np.zeros(168), np.ones(456)].astype(int)[:, None]
    fold_of = portfolio.stratified_folds(labels, 5, seed=0, task_type=BINARY)
    sizes = np.bincount(fold_of, minlength=5)
    assert sizes.sum() == 624 and sizes.max() - sizes.min() <= 1
    for fold in range(5):
        ones = int(labels[fold_of == fold, 0].sum())
        assert abs(ones - 456 / 5) <= 1  # every fold has the class shares of the whole
    again = portfolio.stratified_folds(labels, 5, seed=0, task_type=BINARY)
    other = portfolio.stratified_folds(labels, 5, seed=1, task_type=BINARY)
    assert np.array_equal(fold_of, again) and not np.array_equal(fold_of, other)
    multi = portfolio.stratified_folds(np.ones((103, 14)), 4, seed=0, task_type=MULTI_LABEL)
    assert np.bincount(multi).tolist() == [26, 26, 26, 25]


def test_a_bagged_run_trains_on_its_own_share_of_each_class() -> None:
    labels = np.r_[np.zeros(147), np.ones(399)].astype(int)[:, None]  # breastmnist's train
    rows = portfolio.stratified_share(labels, 0.8, seed=7, task_type=BINARY)
    assert len(rows) == len(set(rows.tolist())) == round(0.8 * 147) + round(0.8 * 399)
    assert int(labels[rows, 0].sum()) == round(0.8 * 399)  # the class shares of the whole
    again = portfolio.stratified_share(labels, 0.8, seed=7, task_type=BINARY)
    other = portfolio.stratified_share(labels, 0.8, seed=8, task_type=BINARY)
    assert np.array_equal(rows, again) and not np.array_equal(rows, other)
    rare = portfolio.stratified_share(np.array([[0]] * 20 + [[1]]), 0.5, 0, ORDINAL)
    assert 20 in rare.tolist() and len(rare) == 11  # a class of one image keeps it


def test_configs_names_what_is_raced_in_order_and_refuses_unknown_names() -> None:
    assert portfolio.portfolio_of("") == portfolio.PORTFOLIO
    chosen = portfolio.portfolio_of(" vgg4-geo, res-geo ")
    assert [c.name for c in chosen] == ["vgg4-geo", "res-geo"]
    assert set(portfolio.PORTFOLIO) < set(portfolio.CONFIGS.values())
    with pytest.raises(ValueError, match="no configuration 'vgg-9'.*known: res-geo"):
        portfolio.portfolio_of("res-geo,vgg-9")
    with pytest.raises(ValueError, match="named twice"):
        portfolio.portfolio_of("res-geo,res-geo")


@pytest.mark.parametrize("angle", [-1, 46, float("nan")])
def test_a_test_time_angle_outside_0_to_45_degrees_is_refused_before_any_task(angle) -> None:
    portfolio._check_options({**portfolio.OPTIONS, "tta_angle": 10})
    with pytest.raises(ValueError, match="tta_angle: .* is not a number from 0 to 45"):
        portfolio._check_options({**portfolio.OPTIONS, "tta_angle": angle})


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("eta", 1, "not a whole number of 2 or more"),  # was clamped to 2 silently
        ("batch_size", 0, "not a whole number of 1 or more"),  # failed inside the task
        ("batch_size", 0.5, "not a whole number of 1 or more"),  # a number, read as int 0
        ("processes", -1, "not a whole number of 0 .* or more"),
        ("threads", -2, "not a whole number of 0 .* or more"),
        ("width", -8, "not a whole number of 0 .* or more"),
        ("ensemble_size", 0, "not a whole number of 1 or more"),
        ("max_epochs", 0, "not a whole number of 1 or more"),
        ("ordinal_alpha", -1.0, "not a number of 0 .* or more"),
        ("intensity", 1.5, "not a number from 0 .* to 1"),
        (
            "folds",
            1,
            r"not 0 \(off\) or a whole number of 2 or more",
        ),  # cross-fitted nothing, silently
        ("folds", -3, r"not 0 \(off\) or a whole number of 2 or more"),
        ("subsample", 1.5, "not a number from 0 .* to 1"),
        ("subsample", -0.1, "not a number from 0 .* to 1"),
    ],
)
def test_a_numeric_option_out_of_range_is_refused_in_one_line_before_any_task(
    key: str, value: float, words: str
) -> None:
    portfolio._check_options(dict(portfolio.OPTIONS))  # the defaults pass
    with pytest.raises(ValueError, match=f"option {key}: {value} is {words}"):
        portfolio._check_options({**portfolio.OPTIONS, key: value})
    # Through the harness's options, as --option gives them: a BudgetError, one line.
    from decathlon.budgets import load

    adapter = make_registry().get("portfolio")
    with pytest.raises(BudgetError, match=f"adapter 'portfolio': option {key}"):
        load().options("quick", adapter, {key: value})


def test_precision_trains_in_bfloat16_only_on_a_cpu_with_bfloat16_instructions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    zen4 = tmp_path / "zen4"
    zen4.write_text("flags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n")
    older = tmp_path / "older"
    older.write_text("flags\t\t: fpu avx2 avx512f avx512_vnni\n")
    assert portfolio.cpu_has_bf16(str(zen4)) and not portfolio.cpu_has_bf16(str(older))
    assert not portfolio.cpu_has_bf16(str(tmp_path / "missing"))  # not Linux: float32
    for has_bf16, on_cpu in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(portfolio, "cpu_has_bf16", lambda has_bf16=has_bf16: has_bf16)
        assert portfolio.training_precision("auto", "cpu") == on_cpu
        assert portfolio.training_precision("auto", "cuda") == "float16"
        assert portfolio.training_precision("fp32", "cpu") == "float32"
        assert portfolio.training_precision("fp32", "cuda:0") == "float32"


def test_a_cross_fitted_run_scores_every_image_out_of_fold() -> None:
    fold_of = np.array([0, 1, 2, 0, 1, 2])
    y = np.array([[0], [1], [0], [1], [0], [1]])
    parts = []
    for fold in range(3):
        part = portfolio.RunRecord("res-geo", 0, 7, 0, 10.0, fold)
        part.epochs_run, part.seconds, part.complete, part.snapshots = 5 + fold, 10.0, True, 3
        held = np.flatnonzero(fold_of == fold)
        part.val = {"plain": np.stack([1 - held / 10, held / 10], axis=1)}
        part.test = {"plain": np.full((4, 2), fold / 4)}
        parts.append(part)
    run = portfolio.cross_fitted(parts, fold_of, y, BINARY)
    assert run.val["plain"][:, 1] == pytest.approx(np.arange(6) / 10)  # each row from its fold
    assert run.test["plain"] == pytest.approx(np.full((4, 2), 0.25))  # the folds' mean
    assert run.val_auc == pytest.approx(auc(BINARY, y, run.val["plain"]))
    assert (run.epochs_run, run.seconds, run.complete, run.fold) == (5, 30.0, True, -1)
    parts[1].snapshots, parts[1].complete = 0, False  # a fold the deadline stopped unscored
    cut = portfolio.cross_fitted(parts, fold_of, y, BINARY)
    assert cut.snapshots == 0 and not cut.val and not cut.complete


def test_soft_ordinal_targets_favour_the_neighbouring_grades() -> None:
    grades = np.array([0, 2, 4])
    soft = portfolio.ordinal_targets(grades, 5, alpha=1.0)
    assert soft.sum(axis=1) == pytest.approx(np.ones(3))
    assert (soft.argmax(axis=1) == grades).all()
    middle = soft[1]
    assert middle[1] == pytest.approx(middle[3]) and middle[1] > middle[0] > 0
    assert (np.diff(soft[0]) < 0).all()  # grade 0: less mass the further the grade
    one_hot = portfolio.ordinal_targets(grades, 5, alpha=0.0)
    assert (one_hot == np.eye(5, dtype=np.float32)[grades]).all()


def _miscalibrated(task: str, k: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and informative scores pushed towards the first class (label) and over-smoothed,
    as a label-smoothed ensemble chosen for AUC can leave them."""
    rng = np.random.default_rng(seed)
    if task == MULTI_LABEL:
        y = rng.integers(0, 2, (n, k))
        logits = 1.5 * (2 * y - 1) + rng.normal(0, 1.5, (n, k)) - 1.0
        return y, 1 / (1 + np.exp(-0.4 * logits))
    y = rng.integers(0, k, (n, 1))
    logits = 2.0 * np.eye(k)[y[:, 0]] + rng.normal(0, 1.0, (n, k))
    logits[:, 0] += 1.5
    scores = np.exp(0.5 * logits)
    return y, scores / scores.sum(axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("task", "k"), [(BINARY, 2), (MULTI_CLASS, 9), (ORDINAL, 5), (MULTI_LABEL, 14)]
)
def test_calibration_fitted_on_val_lowers_the_log_loss_and_raises_acc_on_test(
    task: str, k: int
) -> None:
    from decathlon.metrics import acc

    y_val, val = _miscalibrated(task, k, 400, seed=1)
    y_test, test = _miscalibrated(task, k, 2000, seed=2)
    calibration = portfolio.calibrate(val, y_val, task)
    assert calibration.temperature != 1.0 and any(b != 0 for b in calibration.bias)
    calibrated = calibration(test)
    assert calibrated.shape == test.shape and np.all((calibrated >= 0) & (calibrated <= 1))
    if task != MULTI_LABEL:
        assert calibrated.sum(axis=1) == pytest.approx(np.ones(len(test)))
    assert portfolio.log_loss(task, y_test, calibrated) < portfolio.log_loss(task, y_test, test)
    assert acc(task, y_test, calibrated) > acc(task, y_test, test) + 0.02
    if task == BINARY:  # a monotone map of the score: the AUC cannot move
        assert auc(task, y_test, calibrated) == pytest.approx(auc(task, y_test, test), abs=1e-12)


def test_calibration_of_well_calibrated_scores_is_near_the_identity() -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(0.05, 0.95, 5000)
    y = (rng.random(5000) < p).astype(int)[:, None]
    calibration = portfolio.calibrate(np.stack([1 - p, p], axis=1), y, BINARY)
    assert calibration.temperature == pytest.approx(1.0, abs=0.1)
    assert calibration.bias[1] == pytest.approx(0.0, abs=0.1)


def test_calibration_leaves_a_class_that_validation_lacks_at_bias_zero() -> None:
    y, scores = _miscalibrated(MULTI_CLASS, 4, 300, seed=4)
    keep = y[:, 0] != 3  # no image of class 3 in validation
    calibration = portfolio.calibrate(scores[keep], y[keep], MULTI_CLASS)
    assert calibration.bias[3] == 0.0 and calibration.bias[0] == 0.0
    assert np.all(np.isfinite(calibration(scores)))
    scores[0, 0] = np.nan  # a member that diverged: no fit, the scores pass unchanged
    identity = portfolio.calibrate(scores, y, MULTI_CLASS)
    assert identity.temperature == 1.0 and not any(identity.bias)


def _in_the_portfolio_environment(code: str, timeout: float | None = None) -> dict:
    """What ``code`` prints as JSON, run by the adapter's own interpreter with the packages
    mounted as its worker mounts them (stopped after ``timeout`` seconds: a failure)."""
    adapter = make_registry().get("portfolio")
    mount = launcher.import_check_code(adapter, "decathlon_adapters.portfolio")
    done = subprocess.run(
        [str(environments.interpreter(adapter)), "-c", mount + code],
        capture_output=True,
        text=True,
        env=launcher.worker_environment(1, "cpu"),
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _untrained_network(task: str, classes: int, config: str) -> str:
    """Code that makes ``runner`` (16 random 28-pixel colour images as every split of a task)
    and ``model``, an untrained network of ``config`` whose scores are far from uniform."""
    return f"""
import json, sys
import numpy as np, torch
from decathlon_adapters import portfolio

rng = np.random.default_rng(0)
images = rng.integers(0, 256, size=(16, 28, 28, 3), dtype=np.uint8)
labels = rng.integers(0, {classes}, size=(16, 1))
data = portfolio.TaskData("{task}", {classes}, images, labels, images, labels, images)
runner = portfolio.Runner(data, "cpu", 8, 16)
config = portfolio.CONFIGS["{config}"]
torch.manual_seed(0)
model = runner.network(config)
with torch.no_grad():
    model[-1].weight.mul_(100)  # scores far from uniform, as a trained network's are
"""


_VIEWS_CHECK = (
    _untrained_network(ORDINAL, 5, "vgg-rot")
    + """
moved = {
    "turned": torch.rot90(runner.x_val, 1, dims=(2, 3)),
    "mirrored upside down": torch.flip(runner.x_val, dims=[2]),
}
out = {}
for turns in (1, 4):
    tta = runner.predict(model, runner.x_val, turns)["tta"]
    out[turns] = {
        name: float(np.abs(runner.predict(model, x, turns)["tta"] - tta).max())
        for name, x in moved.items()
    }
json.dump(out, sys.stdout)
"""
)


def test_a_configuration_trained_at_every_angle_scores_all_eight_views_of_an_image() -> None:
    # "rot" configurations (fundus images have no upright) average their test-time views over
    # the square's eight symmetries: a turned or mirrored image gets the same scores.
    differences = _in_the_portfolio_environment(_VIEWS_CHECK)
    assert max(differences["4"].values()) < 1e-4
    # The flip-only views of the other configurations do see the turn.
    assert min(differences["1"].values()) > 0.01


_ANGLES_CHECK = (
    _untrained_network(BINARY, 2, "vgg-geo")
    + """
x = runner.x_val
mirrored = torch.flip(x, dims=[3])
angles = runner.angles(config)
scores = runner.predict(model, x, config.turns, angles)
flip_only = runner.predict(model, x, 1, (0.0,))
by_hand = []
for angle in angles:
    view = portfolio.rotate(runner.prepare(x), angle)
    for v in (view, torch.flip(view, dims=[3])):
        with torch.no_grad():
            by_hand.append(torch.softmax(model.eval()(v).float(), dim=-1).numpy())
json.dump({
    "views": {name: runner.views(c) for name, c in portfolio.CONFIGS.items()},
    "angles": list(angles),
    "mirror": float(np.abs(runner.predict(model, mirrored, 1, angles)["tta"]
    - scores["tta"]).max()),
    "by hand": float(np.abs(np.mean(by_hand, axis=0) - scores["tta"]).max()),
    "plain": float(np.abs(scores["plain"] - flip_only["plain"]).max()),
    "flip only": float(np.abs(scores["tta"] - flip_only["tta"]).max()),
}, sys.stdout)
"""
)


def test_a_configuration_trained_at_small_angles_averages_its_views_at_those_angles() -> None:
    # "geo" configurations train at up to 15 degrees: their test-time views are the image and
    # its mirror, each also turned by -10 and +10 degrees (six views; mirror-symmetric, so a
    # mirrored image gets the same scores); "plain" stays the image alone.
    out = _in_the_portfolio_environment(_ANGLES_CHECK)
    assert out["angles"] == [0.0, -10.0, 10.0]
    assert out["views"]["vgg-geo"] == 6 and out["views"]["res-flip"] == 2
    assert out["views"]["wide-rot"] == 8
    assert out["views"]["vgg-zoom"] == 6  # "geo" with the framing varied more: the same views
    assert out["by hand"] < 1e-5
    assert out["mirror"] < 1e-5
    assert out["plain"] == 0.0
    assert out["flip only"] > 0.01


_UPRIGHT_CHECK = (
    _untrained_network(BINARY, 2, "vgg-geo-upright")
    + """
x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
mirrored = portfolio.augment(x, "flip", torch.Generator().manual_seed(1))
upright = portfolio.augment(x, "flip", torch.Generator().manual_seed(1), mirror=False)
same = (mirrored - upright).flatten(1).abs().amax(1)
flipped = (mirrored - torch.flip(upright, dims=[3])).flatten(1).abs().amax(1)
scores = runner.predict(model, runner.x_val, 1, (0.0,), mirror=False)
with torch.no_grad():
    alone = torch.softmax(model.eval()(runner.prepare(runner.x_val)).float(), dim=-1).numpy()
json.dump({
    "same": int((same < 1e-5).sum()),
    "flipped": int((flipped < 1e-5).sum()),
    "views": runner.views(config),
    "tta is the image alone": float(np.abs(scores["tta"] - alone).max()),
}, sys.stdout)
"""
)


def test_an_upright_configuration_never_mirrors_an_image() -> None:
    # Field mirror=False (chest X-rays: the heart on one side): the same random draws as with
    # mirrors, but the images drawn to be mirrored stay as they are, and the test-time views
    # are the image turned by each angle, without its mirror.
    out = _in_the_portfolio_environment(_UPRIGHT_CHECK)
    assert out["same"] + out["flipped"] == 64  # with mirrors: each image as it is, or mirrored
    assert out["same"] > 10 and out["flipped"] > 10  # about half mirrored, none without
    assert out["views"] == 3  # 0 and +-10 degrees, no mirrors (vgg-geo: 6)
    assert out["tta is the image alone"] < 1e-5


_SHARPNESS_CHECK = """
import json, sys
import torch
from decathlon_adapters import portfolio

impulse = torch.zeros(1, 1, 5, 5)
impulse[0, 0, 2, 2] = 1.0
x = torch.rand(32, 3, 28, 28, generator=torch.Generator().manual_seed(0))
plain = portfolio.augment(x, "geo", torch.Generator().manual_seed(1))
jittered = portfolio.augment(x, "geo", torch.Generator().manual_seed(1), 0.0, 1.0)
detail = plain - portfolio.blur(plain)
# each image's change is its own multiple of its detail (the fitted amount, then what is left)
d, change = detail.flatten(1), (jittered - plain).flatten(1)
amount = (change * d).sum(1) / (d * d).sum(1)
left = jittered - plain - amount.view(-1, 1, 1, 1) * detail
json.dump({
    "impulse": portfolio.blur(impulse)[0, 0, 1:4, 1:4].tolist(),
    "amounts": amount.tolist(),
    "left": float(left.abs().max()),
}, sys.stdout)
"""


def test_sharpness_jitter_blurs_or_sharpens_each_training_image_by_its_own_amount() -> None:
    # Field sharpness: after the same geometric augmentation (the same generator), each image
    # becomes x + a (x - blur(x)) with its own a in [-1, 1]: blurred (a < 0) or sharpened; the
    # blur is the 3x3 binomial kernel, each channel alone.
    out = _in_the_portfolio_environment(_SHARPNESS_CHECK)
    assert np.allclose(out["impulse"], np.outer([1, 2, 1], [1, 2, 1]) / 16)
    assert out["left"] < 1e-5
    amounts = np.array(out["amounts"])
    assert np.all(np.abs(amounts) <= 1.0 + 1e-5)
    assert (amounts < -0.2).any() and (amounts > 0.2).any()


_AVERAGING_CHECK = """
import dataclasses, json, sys
import numpy as np, torch
from decathlon_adapters import portfolio

rng = np.random.default_rng(0)
images = rng.integers(0, 256, size=(64, 28, 28, 1), dtype=np.uint8)
labels = rng.integers(0, 2, size=(64, 1))
data = portfolio.TaskData("binary-class", 2, images, labels, images[:16], labels[:16], images[:16])
runner = portfolio.Runner(data, "cpu", 8, 16)
base = portfolio.CONFIGS["vgg-geo"]
out = {}
for name, ema in (("live", 0.0), ("averaged over 1e9 epochs", 1e9)):
    config = dataclasses.replace(base, ema=ema)
    record = portfolio.RunRecord(config.name, 0, 3, epochs=4)
    runner.train(config, record, stop_at=float("inf"))
    torch.manual_seed(3)  # the run's own seed: its untrained network
    untrained = runner.predict(runner.network(config), runner.x_test)["plain"]
    out[name] = float(np.abs(record.test["plain"] - untrained).max())
model = runner.network(base)
averaged = runner.averaged(model, 4)
before = next(averaged.module.parameters()).detach().clone()
with torch.no_grad():
    next(model.parameters()).add_(1.0)
averaged.update_parameters(model)
out["step"] = float((next(averaged.module.parameters()) - before).mean())
json.dump(out, sys.stdout)
"""


def test_weight_averaging_predicts_with_the_moving_average_not_the_live_weights() -> None:
    # Field ema: each step moves the average 1/horizon of the way to the live weights, and the
    # snapshots predict with the average: over a horizon of 1e9 epochs it stays the run's
    # untrained network, while the live weights of the same run (ema=0) have moved away.
    out = _in_the_portfolio_environment(_AVERAGING_CHECK)
    assert abs(out["step"] - 0.25) < 1e-6
    assert out["averaged over 1e9 epochs"] < 1e-5
    assert out["live"] > 1e-3


_WHITENING_CHECK = """
import json, sys
import numpy as np, torch
from decathlon_adapters import portfolio

rng = np.random.default_rng(0)
# Colour images whose neighbouring pixels and channels are correlated (a smooth field plus noise)
field = rng.normal(size=(64, 1, 8, 8)).repeat(4, axis=2).repeat(4, axis=3)[:, :, :28, :28]
pixels = 128 + 40 * field + rng.normal(scale=20, size=(64, 3, 28, 28))
images = np.clip(pixels, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
labels = rng.integers(0, 2, size=(64, 1))
data = portfolio.TaskData("binary-class", 2, images, labels, images[:16], labels[:16], images[:16])
runner = portfolio.Runner(data, "cpu", 8, 16)
config = portfolio.CONFIGS["vgg-geo-white"]
model = runner.network(config)
stem = model[0]
before = stem.weight.detach().clone()
x = runner.prepare(runner.x_train)
raw = torch.nn.functional.unfold(x, 2).transpose(1, 2).reshape(-1, 12).double()
half = stem.out_channels // 2
out = torch.nn.functional.conv2d(x, stem.weight[:half]).permute(0, 2, 3, 1).reshape(-1, half)
out = out.double()
record = portfolio.RunRecord(config.name, 0, 0, epochs=2)
runner.train(config, record, stop_at=float("inf"))
json.dump({
    "channels": [stem.in_channels, stem.out_channels, stem.kernel_size[0]],
    "raw moments": (raw.T @ raw / len(raw)).tolist(),
    "moments": (out.T @ out / len(out)).tolist(),
    "pairs": float((stem.weight[:half] + stem.weight[half:]).abs().max()),
    "moved": float((stem.weight.detach() - before).abs().max()),
    "trained": record.epochs_run,
}, sys.stdout)
"""


def test_a_whitening_stem_whitens_the_training_patches_and_is_never_trained() -> None:
    # Field whiten=2: the first convolution's filters are set from train's 2x2 patches (12
    # values in colour) so that its outputs are uncorrelated with unit second moments, then the
    # same filters negated; training leaves them as they are.
    out = _in_the_portfolio_environment(_WHITENING_CHECK)
    assert out["channels"] == [3, 24, 2]
    raw = np.array(out["raw moments"])
    correlation = raw / np.sqrt(np.outer(np.diag(raw), np.diag(raw)))
    assert np.median(np.abs(correlation)) > 0.4  # the patches' values are correlated
    moments = np.array(out["moments"])
    assert np.abs(moments - np.diag(np.diag(moments))).max() < 1e-3
    # unit variance, but for eps (5e-4) against the smallest eigenvalues
    assert np.all(np.diag(moments) > 0.5) and np.all(np.diag(moments) < 1.0 + 1e-4)
    assert np.diag(moments)[:6].min() > 0.95
    assert out["pairs"] == 0.0
    assert out["trained"] == 2 and out["moved"] == 0.0


def test_the_option_whiten_gives_every_raced_configuration_a_whitening_stem() -> None:
    grey, colour = np.zeros((4, 28, 28), np.uint8), np.zeros((4, 28, 28, 3), np.uint8)
    raced = portfolio.PORTFOLIO
    assert portfolio.whitened(raced, "none", colour) == raced
    assert portfolio.whitened(raced, "colour", grey) == raced
    for images in (colour, grey):
        assert [c.whiten for c in portfolio.whitened(raced, "all", images)] == [2] * len(raced)
    stems = portfolio.whitened(raced, "colour", colour)
    assert [c.name for c in stems] == [c.name for c in raced]
    assert all(
        c.whiten == 2 and c == dataclasses.replace(r, whiten=2) for c, r in zip(stems, raced)
    )
    options = {**portfolio.OPTIONS, "whiten": "color"}
    with pytest.raises(ValueError, match="option whiten: 'color' is not one of none, colour, all"):
        portfolio.ADAPTER.check_options(options)


@pytest.mark.realdata
def test_the_option_mirror_keeps_mirrors_only_for_images_without_a_handedness(
    real_data_dir: Path,
) -> None:
    # "auto": a chest X-ray's mirror (the heart on the other side) is told from the training
    # images, so no pneumoniamnist image is mirrored; a breast ultrasound's mirror is not; colour
    # images (a fundus: its mirror is the other eye) are mirrored without asking.
    train = {}
    for flag in ("pneumoniamnist", "breastmnist", "retinamnist"):
        with np.load(real_data_dir / f"{flag}.npz") as data:
            train[flag] = data["train_images"]
    raced = portfolio.PORTFOLIO
    upright, chest = portfolio.mirrored(raced, "auto", train["pneumoniamnist"])
    assert chest is not None and chest >= portfolio.HANDED_AUC
    assert upright == tuple(dataclasses.replace(c, mirror=False) for c in raced)
    kept, breast = portfolio.mirrored(raced, "auto", train["breastmnist"])
    assert breast is not None and breast < portfolio.HANDED_AUC and kept == raced
    assert portfolio.mirrored(raced, "auto", train["retinamnist"]) == (raced, None)
    assert portfolio.mirror_auc(train["retinamnist"]) >= portfolio.HANDED_AUC  # yet mirrored
    # A mirrored image of noise is no more told from the rest than chance allows.
    noise = np.random.default_rng(0).integers(0, 256, (600, 28, 28), dtype=np.uint8)
    assert portfolio.mirror_auc(noise) < 0.6
    assert portfolio.mirror_auc(noise[:2]) == 0.5  # too few to ask
    assert portfolio.mirrored(raced, "always", train["pneumoniamnist"]) == (raced, None)
    never, read = portfolio.mirrored(raced, "never", train["breastmnist"])
    assert read is None and not any(c.mirror for c in never)
    options = {**portfolio.OPTIONS, "mirror": "sometimes"}
    with pytest.raises(ValueError, match="option mirror: 'sometimes' is not one of auto, always"):
        portfolio.ADAPTER.check_options(options)


_BALANCE_CHECK = """
import dataclasses, json, sys
import numpy as np, torch
from decathlon_adapters import portfolio

rng = np.random.default_rng(0)
labels = np.array([0] * 90 + [1] * 10).reshape(-1, 1)
images = rng.integers(0, 256, size=(100, 28, 28), dtype=np.uint8)
data = portfolio.TaskData("binary-class", 2, images, labels, images[:4], labels[:4], images[:4])
runner = portfolio.Runner(data, "cpu", 8, 16)
logits = torch.from_numpy(rng.normal(size=(100, 2)).astype(np.float32))
logits[90:, 0] += 2.0  # the rare class's images scored wrong: a larger loss of their own
target = torch.nn.functional.one_hot(torch.from_numpy(labels[:, 0]), 2).float()
config = portfolio.CONFIGS["vgg-geo-bal"]
per_image = -torch.log_softmax(logits, dim=1)[torch.arange(100), labels[:, 0]]
json.dump({
    "balanced": runner.loss(logits, target, dataclasses.replace(config, balance=1.0)).item(),
    "plain": runner.loss(logits, target, dataclasses.replace(config, balance=0.0)).item(),
    "class means": [per_image[:90].mean().item(), per_image[90:].mean().item()],
    "image mean": per_image.mean().item(),
}, sys.stdout)
"""


def test_a_run_on_a_single_training_image_trains_and_predicts() -> None:
    # One training image: the rule that drops a last batch of one image left epochs of no
    # steps; an epoch-bounded run ended with no scores, and a time-bounded one (which looks at
    # the clock only between steps) looped until the hard limit killed the task.
    out = _in_the_portfolio_environment(
        """
import json, sys, time
import numpy as np
from decathlon_adapters import portfolio

rng = np.random.default_rng(0)
images = rng.integers(0, 256, size=(8, 28, 28), dtype=np.uint8)
labels = np.array([[0], [1]] * 4)
data = portfolio.TaskData("binary-class", 2, images[:1], labels[:1], images, labels, images)
runner = portfolio.Runner(data, "cpu", 4, 16)
config = portfolio.CONFIGS["vgg-geo"]
out = {}
for name, record in (
    ("epochs", portfolio.RunRecord("vgg-geo", 0, 0, 2)),
    ("seconds", portfolio.RunRecord("vgg-geo", 0, 0, 0, allotted_s=1.0)),
):
    record = runner.train(config, record, time.time() + 600)
    out[name] = {"snapshots": record.snapshots, "epochs_run": record.epochs_run}
json.dump(out, sys.stdout)
""",
        timeout=120,  # the time-bounded run's loop, before the fix, ended only at the kill
    )
    for name in ("epochs", "seconds"):
        assert out[name]["snapshots"] >= 1 and out[name]["epochs_run"] >= 1, out


def test_a_class_balanced_loss_counts_every_class_alike() -> None:
    # balance=1: the loss over a 90/10 set is the mean of the two classes' mean losses, as the
    # multi-class AUC is a mean over classes; balance=0: the mean over images.
    losses = _in_the_portfolio_environment(_BALANCE_CHECK)
    assert losses["balanced"] == pytest.approx(np.mean(losses["class means"]), rel=1e-5)
    assert losses["plain"] == pytest.approx(losses["image mean"], rel=1e-5)
    assert losses["balanced"] > losses["plain"] + 0.5


def _rows(path: Path) -> dict[str, dict]:
    return {
        r["split"]: r for r in leaderboard.read(path) if r["dataset"] != leaderboard.SUMMARY_DATASET
    }


@pytest.mark.slow
def test_conforms_on_all_four_task_types(tmp_path: Path) -> None:
    # Half the quick budget: 60 s per generated dataset.
    checks = assert_conforms("portfolio", tmp_path, scale_factor=0.5)
    assert sum(c.name.endswith("valid scores") for c in checks) == 4


def _budgets(tmp_path: Path, table: str) -> Path:
    path = tmp_path / "budgets.toml"
    path.write_text(
        '[profiles.quick]\ndescription = "portfolio test"\nseeds = [0]\n\n[quick.portfolio]\n'
        + table
    )
    return path


def _run(
    tmp_path: Path,
    data_dir: Path,
    info_path: Path,
    budgets: Path,
    name: str,
    options: dict | None = None,
) -> Path:
    config = RunConfig(
        adapter="portfolio",
        profile="quick",
        datasets=("breastmnist",),
        data_dir=str(data_dir),
        download=False,
        info_path=str(info_path),
        device="cpu",
        n_jobs=2,
        budgets_path=str(budgets),
        options=options or {},
    )
    return Runner(config, make_registry()).run(tmp_path / name)


@pytest.mark.slow
@pytest.mark.realdata
def test_real_breastmnist_tiny_budget_is_ok_with_notes(mixed_catalog, tmp_path: Path) -> None:
    budgets = _budgets(tmp_path, "time_seconds = 45\nhard_limit_seconds = 120\n")
    rows = _rows(_run(tmp_path, mixed_catalog.data_dir, mixed_catalog.info_path, budgets, "run"))
    assert rows["test"]["status"] == "ok", rows["test"]["reason"]
    assert 0.5 < float(rows["test"]["auc"]) <= 1.0
    notes = json.loads(rows["test"]["notes"])
    assert notes["runs"] and all(r["seconds"] >= 0 for r in notes["runs"])
    assert {r["config"] for r in notes["runs"]} <= {c.name for c in portfolio.PORTFOLIO}
    assert notes["ensemble"] and sum(m["weight"] for m in notes["ensemble"]) == pytest.approx(
        1.0, abs=1e-3
    )
    assert isinstance(notes["deadline_cut"], bool) and notes["tta"] in (True, False)
    assert notes["precision"] == ("bfloat16" if portfolio.cpu_has_bf16() else "float32")
    assert notes["whiten"] == "colour"  # the default; breastmnist's grey images keep no stem
    assert notes["mirror"] is True and notes["mirror_auc"] < portfolio.HANDED_AUC
    calibration = notes["calibration"]
    assert len(calibration["bias"]) == 2 and calibration["temperature"] > 0
    assert calibration["val_log_loss_after"] <= calibration["val_log_loss_before"]
    # The runs kept in the output folder recompute what the adapter returned (to float32).
    task_dir = tmp_path / "run" / "tasks" / "breastmnist" / "seed0"
    runs = np.load(task_dir / "output" / notes["runs_file"])
    assert list(runs["config"]) == [r["config"] for r in notes["runs"]]
    key = "tta" if runs["tta"] else "plain"
    calibrate = portfolio.Calibration(
        str(runs["task_type"]), float(runs["temperature"]), tuple(runs["bias"])
    )
    for split in ("val", "test"):
        scores = portfolio.weighted(runs["weights"], list(runs[f"{split}_{key}"]))
        returned = np.load(task_dir / "predictions" / f"{split}.npy")
        assert np.allclose(calibrate(scores), returned, atol=1e-5)
    assert list(runs["val_rows"]) == list(range(78))  # without folds: val is val


@pytest.mark.slow
@pytest.mark.realdata
def test_real_breastmnist_cross_fitted_on_train_and_val(mixed_catalog, tmp_path: Path) -> None:
    budgets = _budgets(tmp_path, "time_seconds = 45\nhard_limit_seconds = 120\n")
    path = _run(
        tmp_path, mixed_catalog.data_dir, mixed_catalog.info_path, budgets, "run", {"folds": 5}
    )
    rows = _rows(path)
    assert rows["test"]["status"] == "ok", rows["test"]["reason"]
    assert rows["val"]["status"] == "ok", rows["val"]["reason"]
    notes = json.loads(rows["test"]["notes"])
    assert notes["folds"] == 5 and notes["selection_images"] == 546 + 78
    assert all(rung["folds"] == 5 for rung in notes["rungs"])
    # Every run's validation scores are out of fold for all of train and val; the harness got
    # val's rows of the calibrated ensemble, and test's.
    task_dir = tmp_path / "run" / "tasks" / "breastmnist" / "seed0"
    runs = np.load(task_dir / "output" / notes["runs_file"])
    assert runs["val_plain"].shape[:2] == (len(notes["runs"]), 624)
    assert list(runs["val_rows"]) == list(range(546, 624))
    key = "tta" if runs["tta"] else "plain"
    calibrate = portfolio.Calibration(
        str(runs["task_type"]), float(runs["temperature"]), tuple(runs["bias"])
    )
    val = calibrate(portfolio.weighted(runs["weights"], list(runs[f"val_{key}"])))
    test = calibrate(portfolio.weighted(runs["weights"], list(runs[f"test_{key}"])))
    assert np.allclose(val[runs["val_rows"]], np.load(task_dir / "predictions/val.npy"), atol=1e-5)
    assert np.allclose(test, np.load(task_dir / "predictions/test.npy"), atol=1e-5)


@pytest.mark.slow
@pytest.mark.realdata
def test_a_budget_that_cuts_the_search_still_gives_an_ok_row(mixed_catalog, tmp_path: Path) -> None:
    # 1000 epochs per run cannot fit in 120 s on real breastmnist (its first rung alone is nine
    # runs of 111 epochs; 100 fitted in 83 s with bfloat16 steps): the search is cut, the
    # ensemble of what finished predicts, and the notes say so.
    budgets = _budgets(tmp_path, "epochs = 1000\nhard_limit_seconds = 120\n")
    rows = _rows(_run(tmp_path, mixed_catalog.data_dir, mixed_catalog.info_path, budgets, "run"))
    assert rows["test"]["status"] == "ok", rows["test"]["reason"]
    notes = json.loads(rows["test"]["notes"])
    assert notes["deadline_cut"] is True and "cut the search" in notes["deadline_note"]
    assert any(not r["complete"] for r in notes["runs"]) or len(notes["rungs"]) < 3


@pytest.mark.slow
def test_the_option_configs_races_only_the_configurations_it_names(tmp_path: Path) -> None:
    data_dir, info_path = synthetic.write_catalog(tmp_path / "data", ["breastmnist"])
    budgets = _budgets(tmp_path, "epochs = 2\nhard_limit_seconds = 900\n")
    # Three screened beside the portfolio: sharpness-aware steps, SGD instead of AdamW, and
    # rotations by any angle.
    names = ["vgg-geo-sam", "vgg-geo-sgd", "vgg-rot"]
    named = {"configs": ",".join(names)}
    rows = _rows(_run(tmp_path, data_dir, info_path, budgets, "named", named))
    assert rows["test"]["status"] == "ok", rows["test"]["reason"]
    notes = json.loads(rows["test"]["notes"])
    assert notes["rungs"][0]["configs"] == names
    assert {r["config"] for r in notes["runs"]} <= set(names)
    assert all(r["val_auc"] > 0.5 for r in notes["runs"])  # both learn
    # A name it does not know: refused before anything starts, saying which.
    with pytest.raises(BudgetError, match="no configuration 'vgg-9'"):
        _run(tmp_path, data_dir, info_path, budgets, "bad", {"configs": "vgg-9"})
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_same_seed_same_predictions_on_an_epoch_bounded_plan(tmp_path: Path) -> None:
    data_dir, info_path = synthetic.write_catalog(tmp_path / "data", ["breastmnist"])
    budgets = _budgets(tmp_path, "epochs = 2\nhard_limit_seconds = 900\n")
    first = _run(tmp_path, data_dir, info_path, budgets, "a")
    second = _run(tmp_path, data_dir, info_path, budgets, "b")
    for path in (first, second):
        assert _rows(path)["test"]["status"] == "ok", _rows(path)["test"]["reason"]
    notes = json.loads(_rows(first)["test"]["notes"])
    assert notes["epoch_bounded"] is True and notes["deadline_cut"] is False
    assert notes["ensemble"] == json.loads(_rows(second)["test"]["notes"])["ensemble"]
    for split in ("val", "test"):
        a, b = (
            p.parent / "tasks/breastmnist/seed0/predictions" / f"{split}.npy"
            for p in (first, second)
        )
        assert np.array_equal(np.load(a), np.load(b))
