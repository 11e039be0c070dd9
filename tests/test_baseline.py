"""The baseline adapter's own rules (its runs are in the conformance tests)."""

from __future__ import annotations

import pytest

from decathlon.budgets import load
from decathlon.errors import BudgetError
from decathlon.plugins import make_registry


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("pca_components", 0, "not a whole number of 1 or more"),
        ("pca_components", 2.5, "not a whole number of 1 or more"),
        ("max_iter", -5, "not a whole number of 1 or more"),
        ("learning_rate", 0, "not above 0"),
        ("learning_rate", -0.1, "not above 0"),
    ],
)
def test_an_option_out_of_range_is_refused_in_one_line_before_any_task(
    key: str, value: float, words: str
) -> None:
    budgets, adapter = load(), make_registry().get("baseline")
    budgets.options("quick", adapter, {"max_iter": 20})  # in range: passes
    with pytest.raises(BudgetError, match=f"adapter 'baseline': option {key}: .* is {words}"):
        budgets.options("quick", adapter, {key: value})
