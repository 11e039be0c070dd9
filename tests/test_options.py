"""The one check of adapter options' ranges and choices, and its one wording."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest

from decathlon import options
from decathlon.errors import BudgetError
from decathlon.options import Choice, Range, check_table
from decathlon.plugins import make_registry


@pytest.mark.parametrize(
    ("rule", "allowed", "refused", "words"),
    [
        (
            Range("k", 1, whole=True),
            [1, 7],
            [0, 2.5, -1, math.nan, True],
            "a whole number of 1 or more",
        ),
        (Range("k", 0, above=True), [0.1, 5], [0, -1, math.nan], "a number above 0"),
        (Range("k", 0, 1, under=True), [0, 0.5], [1, -0.1], "a number from 0 to under 1"),
        (Range("k", 0, 1, above=True), [0.5, 1], [0, 1.5], "a number above 0 and at most 1"),
        (Range("k", 0, 1, zero="none"), [0, 1], [1.5, math.inf], "a number from 0 (none) to 1"),
        (
            Range("k", 2, whole=True, zero="off"),
            [0, 2],
            [1, -3],
            "0 (off) or a whole number of 2 or more",
        ),
        (Choice("k", ("a", "b")), ["a"], ["A", "c", 5], "one of a, b"),
        (Choice("k", ("a", "b"), any_case=True), ["B"], ["c"], "one of a, b"),
    ],
)
def test_a_value_outside_the_table_is_refused_in_one_worded_line(
    rule: Range | Choice, allowed: list[object], refused: list[object], words: str
) -> None:
    for value in allowed:
        check_table({"k": value}, (rule,))
    for value in refused:
        with pytest.raises(ValueError) as raised:
            check_table({"k": value}, (rule,))
        assert str(raised.value) == f"option k: {value!r} is not {words}"


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("baseline", "max_iter", 0),
        ("resnet18_28", "batch_size", 0),
        ("portfolio", "batch_size", 0),
        ("autosklearn", "memory_limit_mb", 0),
        ("autokeras", "batch_size", 0),
        ("flaml", "margin_fraction", -1),
        ("autogluon", "margin_fraction", -1),
    ],
)
def test_every_adapter_words_an_out_of_range_option_the_same_way(
    name: str, key: str, value: float
) -> None:
    from decathlon.budgets import load

    adapter = make_registry().get(name)
    with pytest.raises(BudgetError, match=rf"^adapter '{name}': option {key}: {value} is not a "):
        load().options("quick", adapter, {key: value})


def test_the_module_is_python_39_valid() -> None:
    # Imported inside auto-sklearn's Python 3.9 environment.
    ast.parse(Path(options.__file__).read_text(), feature_version=(3, 9))


def test_a_whole_number_past_floats_range_is_compared_not_a_traceback() -> None:
    """``--option batch_size=`` and 400 digits (JSON reads a Python int) stopped the harness
    with an OverflowError traceback: float() cannot take it."""
    huge = 10**400
    check_table({"n": huge}, (Range("n", 1, whole=True),))
    with pytest.raises(ValueError, match="is not a whole number of 1 or less"):
        check_table({"n": huge}, (Range("n", high=1, whole=True),))
    with pytest.raises(ValueError, match="is not a number from 0 to 1"):
        check_table({"n": -huge}, (Range("n", 0, 1),))
