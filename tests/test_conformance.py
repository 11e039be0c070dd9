"""The conformance check: the built-in baseline passes it; adapters that break the contract fail
it with a message that names the dataset and the reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import misbehaving
import pytest

from decathlon import sandbox
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


@pytest.mark.parametrize("options", [{"max_iter": 0}, {"max_itr": 20}])
def test_a_bad_option_is_refused_before_the_import_check_and_the_data(
    tmp_path: Path, options: dict
) -> None:
    # The run refused it too, but only after the import check (an adapter environment's build:
    # minutes) and the generated data had been written.
    from decathlon.errors import BudgetError

    workdir = tmp_path / "check"
    with pytest.raises(BudgetError, match="adapter 'baseline'"):
        check_adapter("baseline", workdir, options=options)
    assert not workdir.exists()


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


# A plugin whose run module is not the module that registers it: the harness imports the
# registration (``hostile_plugin``), and only a task's worker should import ``.evil``. Imported
# into the harness, ``evil`` makes every task look fine: the row of a worker that failed is
# scored as if it had predicted, and scoring itself is replaced by a perfect one.
_REGISTRATION = """
from decathlon.contract import Adapter
from decathlon.hookspecs import hookimpl


@hookimpl
def decathlon_register_adapters(register):
    register(
        Adapter(
            name="hostile_import",
            run="hostile_plugin.evil:run",
            default_budgets={"quick": {"hard_limit_seconds": 60}},
        )
    )
"""

_EVIL = """
import json, os, subprocess, sys, time

if os.environ.get("HOSTILE_SHOUT"):  # terminal escapes on its last line, then a failure
    sys.stderr.write("\\x1b[31mRED\\x1b[0m \\x1b]0;pwned-title\\x07 Error\\n")
    sys.stderr.flush()
    os._exit(3)
if os.environ.get("HOSTILE_FILL_LOG"):  # its log as long as its file system allows, then exit 3
    low, high = os.fstat(1).st_size, 2**63 - 1
    while low < high:
        middle = (low + high + 1) // 2
        try:
            os.ftruncate(1, middle)
            low = middle
        except OSError:
            high = middle - 1
    os.ftruncate(1, low)
    os._exit(3)
if os.environ.get("HOSTILE_HANG"):  # a daemon of its own, then an import that never ends
    subprocess.Popen(["setsid", "sleep", os.environ["HOSTILE_HANG"]])
    time.sleep(100000)

found = {"pid": os.getpid(), "harness": "decathlon.runner" in sys.modules}
for path in sys.argv[1:] + [os.environ.get("HOSTILE_DATA", "")]:
    try:
        with open(path, "rb") as handle:
            found["read"] = len(handle.read())
    except OSError as exc:
        found["read"] = type(exc).__name__
with open(os.environ["HOSTILE_MARKER"], "a") as handle:
    handle.write(json.dumps(found) + "\\n")
if found["harness"]:
    import decathlon.launcher, decathlon.runner

    decathlon.launcher.failure = lambda *args, **kwargs: None
    def perfect(base, data, predictions, *args, **kwargs):
        return [dict(base, split=s, status="ok", auc=1.0, acc=1.0) for s in ("val", "test")]
    decathlon.runner.score = perfect


def run(task):
    raise RuntimeError("this adapter is broken")
"""


def _hostile_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    package = tmp_path / "plugins" / "hostile_plugin"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(_REGISTRATION)
    (package / "evil.py").write_text(_EVIL)
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    import hostile_plugin

    return make_registry([hostile_plugin])


def test_check_never_imports_the_adapters_run_module_into_the_harness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_catalog: Any
) -> None:
    """A hostile review made `check` pass an adapter that always raises: its run module,
    imported into the harness by the `imports` check, replaced the scoring. The import check
    now runs it in a process of its own, sealed as its tasks are: the adapter fails, the
    harness's functions are its own, and the module could not read the data."""
    import sys

    import decathlon.launcher
    import decathlon.runner

    marker = tmp_path / "marker.jsonl"  # the sealed import cannot write here: no line from it
    monkeypatch.setenv("HOSTILE_MARKER", str(marker))
    monkeypatch.setenv("HOSTILE_DATA", str(tiny_catalog.data_dir / "breastmnist.npz"))
    before = (decathlon.runner.score, decathlon.launcher.failure)
    registry = _hostile_registry(tmp_path, monkeypatch)
    checks = check_adapter("hostile_import", tmp_path / "work", registry=registry)
    assert "hostile_plugin.evil" not in sys.modules
    failed = {c.name.split(" ")[0].rstrip(":") for c in checks if not c.passed}
    assert failed >= set(TASK_TYPE_DATASETS), checks
    assert (decathlon.runner.score, decathlon.launcher.failure) == before
    lines = [json.loads(x) for x in marker.read_text().splitlines()] if marker.exists() else []
    assert not any(line["harness"] for line in lines), lines
    if sandbox.bwrap_problem() is None:  # sealed: the data is not there to read
        size = (tiny_catalog.data_dir / "breastmnist.npz").stat().st_size
        assert all(line["read"] != size for line in lines), lines


def test_an_import_that_never_ends_is_a_failed_check_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module that hangs at import, after starting a daemon in a session of its own: the
    `imports` check fails in one line at its limit (it was a TimeoutExpired traceback after
    300 s, and the daemon kept running), and nothing it started is left."""
    import psutil

    import decathlon.conformance

    monkeypatch.setattr(decathlon.conformance, "IMPORT_SECONDS", 3)
    monkeypatch.setenv("HOSTILE_HANG", "987651")
    monkeypatch.setenv("HOSTILE_MARKER", str(tmp_path / "marker.jsonl"))
    registry = _hostile_registry(tmp_path, monkeypatch)
    checks = check_adapter(
        "hostile_import",
        tmp_path / "work",
        registry=registry,
        datasets=("breastmnist",),
        scale_factor=0.1,  # its task hangs too: until a hard limit of 6 s
    )
    imports = next(c for c in checks if c.name == "imports")
    assert not imports.passed
    assert imports.detail == "hostile_plugin.evil: still importing after 3 s; stopped"

    def daemons() -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter(["cmdline", "status"]):
            if proc.info["cmdline"] == ["sleep", "987651"] and proc.info["status"] != "zombie":
                found.append(proc)
        return found

    gone, alive = psutil.wait_procs(daemons(), timeout=30)
    assert alive == [], alive


def test_an_import_that_makes_its_log_as_long_as_the_file_system_allows_is_a_failed_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_catalog: Any
) -> None:
    """The imports check read the whole log of the import to find its last line: a module that
    made that log (its stdout) as long as the file system allows, one sparse file, stopped the
    check with a MemoryError (or, where memory is overcommitted, had it read terabytes). Only
    the log's end is read now."""
    monkeypatch.setenv("HOSTILE_FILL_LOG", "1")
    registry = _hostile_registry(tmp_path, monkeypatch)
    checks = check_adapter(
        "hostile_import",
        tmp_path / "work",
        registry=registry,
        datasets=("breastmnist",),
        scale_factor=0.1,
    )
    imports = next(c for c in checks if c.name == "imports")
    assert not imports.passed
    assert imports.detail == "hostile_plugin.evil: exit 3"


def test_what_a_failing_import_printed_is_one_printable_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The imports check's line quoted the module's last line of output as it was: escape
    sequences that recolour the user's terminal or retitle its window."""
    monkeypatch.setenv("HOSTILE_SHOUT", "1")
    registry = _hostile_registry(tmp_path, monkeypatch)
    checks = check_adapter(
        "hostile_import",
        tmp_path / "work",
        registry=registry,
        datasets=("breastmnist",),
        scale_factor=0.1,
    )
    imports = next(c for c in checks if c.name == "imports")
    assert not imports.passed
    assert imports.detail.isprintable(), repr(imports.detail)
    assert imports.detail.startswith("hostile_plugin.evil: ") and "RED" in imports.detail
