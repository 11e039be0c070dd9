"""The conformance check: the built-in baseline passes it; adapters that break the contract fail
it with a message that names the dataset and the reason."""

from __future__ import annotations

from pathlib import Path

import misbehaving
import pytest

from decathlon.conformance import (
    TASK_TYPE_DATASETS,
    assert_conforms,
    check_adapter,
    conformance_checks,
    parametrize_with_checks,
)
from decathlon.errors import DecathlonError
from decathlon.plugins import make_registry


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DECATHLON_HOME", str(tmp_path / "home"))


# Fewer boosting rounds than the default 200 keep this to seconds; the contract (shapes,
# columns, probabilities) does not depend on them.
@parametrize_with_checks(["baseline"], scale_factor=1.0, options={"max_iter": 20})
def test_baseline_conforms(check, tmp_path: Path) -> None:
    result = check(tmp_path)
    assert result.passed
    if check.dataset:  # each dataset ends `ok` with valid scores
        assert result.name.startswith(f"{check.dataset} ("), result.name


def test_each_check_is_its_own_test() -> None:
    """As scikit-learn's parametrize_with_checks: `-k baseline-chestmnist` picks one check."""
    ids = [c.id for c in conformance_checks("baseline")]
    assert ids[:2] == ["baseline-registered", "baseline-imports"]
    # one dataset per task type: binary, multi-class, ordinal, multi-label
    assert ids[2:] == [f"baseline-{flag}" for flag in TASK_TYPE_DATASETS]


def test_a_well_behaved_test_adapter_conforms(tmp_path: Path) -> None:
    registry = make_registry([misbehaving])
    assert all(c.passed for c in assert_conforms("mis_good", tmp_path, registry=registry))


def test_a_failing_check_names_the_adapter_dataset_and_reason(tmp_path: Path) -> None:
    (check,) = [
        c
        for c in conformance_checks(
            "mis_good",
            registry=lambda: make_registry([misbehaving]),
            options={"fail_on": ["retinamnist"]},
        )
        if c.dataset == "retinamnist"
    ]
    with pytest.raises(AssertionError) as caught:
        check(tmp_path)
    message = str(caught.value)
    assert "adapter 'mis_good' fails 1 conformance check(s)" in message
    assert "retinamnist (ordinal-regression): valid scores" in message
    assert "error: RuntimeError: failing on retinamnist as asked" in message


def test_failure_on_one_dataset_names_it(tmp_path: Path) -> None:
    registry = make_registry([misbehaving])
    with pytest.raises(AssertionError) as caught:
        assert_conforms(
            "mis_good", tmp_path, registry=registry, options={"fail_on": ["retinamnist"]}
        )
    message = str(caught.value)
    assert "adapter 'mis_good' fails 1 conformance check(s)" in message
    assert "retinamnist (ordinal-regression): valid scores" in message
    assert "error: RuntimeError: failing on retinamnist as asked" in message
    for other in ("breastmnist", "organamnist", "chestmnist"):
        assert other not in message


def test_invalid_scores_fail_every_dataset(tmp_path: Path) -> None:
    registry = make_registry([misbehaving])
    checks = check_adapter("mis_garbage", tmp_path, registry=registry, options={"mode": "range"})
    failed = {c.name.split(" ")[0]: c.detail for c in checks if not c.passed}
    assert set(failed) == set(TASK_TYPE_DATASETS)
    for detail in failed.values():
        assert detail.startswith("invalid: test scores range over")


def test_an_adapter_whose_module_does_not_import(tmp_path: Path) -> None:
    from decathlon.contract import Adapter
    from decathlon.hookspecs import hookimpl

    class Missing:
        @hookimpl
        def decathlon_register_adapters(self, register) -> None:
            register(
                Adapter(
                    name="ghost",
                    run="no_such_module_anywhere:run",
                    default_budgets={"quick": {"hard_limit_seconds": 60}},
                )
            )

    registry = make_registry([Missing()])
    # Either a failed check or a one-line harness error; both name the module.
    with pytest.raises((AssertionError, DecathlonError)) as caught:
        assert_conforms("ghost", tmp_path, registry=registry, datasets=("breastmnist",))
    assert "no_such_module_anywhere" in str(caught.value)
    assert "\n" not in str(caught.value)
