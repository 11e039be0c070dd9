"""The baseline adapter's own rules (its runs are in the conformance tests)."""

from __future__ import annotations

import numpy as np
import pytest
from decathlon_adapters import baseline
from sklearn.ensemble import HistGradientBoostingClassifier

from decathlon.budgets import load
from decathlon.errors import BudgetError
from decathlon.plugins import make_registry


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("pca_components", 0, "not a whole number of 1 or more"),
        ("pca_components", 2.5, "not a whole number of 1 or more"),
        ("max_iter", -5, "not a whole number of 1 or more"),
        ("learning_rate", 0, "not a number above 0"),
        ("learning_rate", -0.1, "not a number above 0"),
    ],
)
def test_an_option_out_of_range_is_refused_in_one_line_before_any_task(
    key: str, value: float, words: str
) -> None:
    budgets, adapter = load(), make_registry().get("baseline")
    budgets.options("quick", adapter, {"max_iter": 20})  # in range: passes
    with pytest.raises(BudgetError, match=f"adapter 'baseline': option {key}: .* is {words}"):
        budgets.options("quick", adapter, {key: value})


@pytest.mark.parametrize("only", [0, 1])
def test_a_label_of_one_value_in_train_scores_that_value(only: int) -> None:
    # A chestmnist label all 1 in a small train (or a binary train of one class): the model
    # knows one class, yet predict_proba gives two columns, [1.0, 0.0]. Column 1 was read as
    # P(1): 0.0 for a label that train always has, and the single-label path failed outright
    # (two columns into one).
    x = np.random.default_rng(0).random((30, 4))
    fitted = HistGradientBoostingClassifier(max_iter=5).fit(x, np.full(30, only))
    scores = baseline.class_scores(fitted, x, 2)
    assert scores.shape == (30, 2)
    assert np.allclose(scores[:, only], 1.0) and np.allclose(scores[:, 1 - only], 0.0)
    three = HistGradientBoostingClassifier(max_iter=5).fit(x, np.arange(30) % 2 * 2)
    assert np.allclose(baseline.class_scores(three, x, 3)[:, 1], 0.0)  # class 1 unseen
