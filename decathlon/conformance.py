"""The conformance check: proof, on tiny generated data, that an adapter keeps the contract.

In the spirit of scikit-learn's estimator checks, any adapter (built-in or third-party) runs
through the real harness, in its own environment and subprocess, on one generated dataset per
task type, and must end every task ``ok``: scores of the right shape, finite, in [0, 1], for val
and test. Run it with ``python -m decathlon check NAME`` or from a test::

    from decathlon.conformance import assert_conforms
    assert_conforms("my_adapter", tmp_path, scale_factor=0.1)

or, as scikit-learn's ``parametrize_with_checks``, each check as its own pytest test (named
``my_adapter-registered``, ``my_adapter-imports``, ``my_adapter-breastmnist``, ..., so ``-k``
picks one)::

    from decathlon.conformance import parametrize_with_checks

    @parametrize_with_checks(["my_adapter"], scale_factor=0.1)
    def test_conformance(check, tmp_path):
        check(tmp_path)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from decathlon import budgets, environments, files, launcher, leaderboard, rundir, synthetic
from decathlon.errors import DecathlonError
from decathlon.plugins import Registry, make_registry
from decathlon.runner import RunConfig, Runner, check_size

#: The run folder inside a check's work folder (beside its generated ``data/``).
RUN = "run"
#: How long the adapter's module may take to import (TensorFlow's first import is slow).
IMPORT_SECONDS = 300
#: One dataset per task type: binary, multi-class, ordinal, multi-label.
TASK_TYPE_DATASETS = ("breastmnist", "organamnist", "retinamnist", "chestmnist")


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str = ""


def check_adapter(
    name: str,
    workdir: Path,
    *,
    registry: Registry | None = None,
    datasets: Sequence[str] = TASK_TYPE_DATASETS,
    profile: str = "quick",
    scale_factor: float = 1.0,
    options: dict[str, Any] | None = None,
    sizes: dict[str, int] | None = None,
    budgets_path: Path | None = None,
    size: int = 28,
) -> list[Check]:
    """Run the checks; each result says what was checked and, when it failed, why.

    ``sizes`` are the generated splits' image counts; ``size`` the image side (28, 64, 128,
    224), which the adapter must declare (else a one-line error before anything runs).
    """
    registry = registry or make_registry()
    check_size(registry.get(name), size)
    # The options and the budgets file, as the run below will read them: a bad value is one
    # line now, not after the import check (which may build an environment for minutes) and
    # the generated data.
    budgets.load(budgets_path).options(profile, registry.get(name), options)
    _prepare_workdir(workdir)  # before the import check, which may build an environment
    checks = [_check_registered(name, registry), _check_import(registry.get(name), workdir)]
    return checks + _check_datasets(
        name,
        workdir,
        registry=registry,
        datasets=datasets,
        profile=profile,
        scale_factor=scale_factor,
        options=options,
        sizes=sizes,
        budgets_path=budgets_path,
        size=size,
    )


def _prepare_workdir(workdir: Path) -> None:
    """Refuse, before anything is written, a work folder that already holds a check (its
    generated data would be written over, then its run refused) or that cannot be written."""
    if rundir.config_path(workdir / RUN).exists():
        raise DecathlonError(
            f"{workdir} already holds a conformance check (its {RUN}/ folder); choose another"
            " --workdir, or leave --workdir out for a new temporary folder"
        )
    why = files.why_not_writable(workdir)
    if why:
        raise DecathlonError(
            f"{workdir}: cannot write the check's files there ({why}); choose another --workdir"
        )


def _check_registered(name: str, registry: Registry) -> Check:
    registry.get(name)  # an unknown name is a PluginError with a "did you mean"
    return Check("registered", True, f"'{name}' from plugin '{registry.origin[name]}'")


def _check_datasets(
    name: str,
    workdir: Path,
    *,
    registry: Registry,
    datasets: Sequence[str],
    profile: str = "quick",
    scale_factor: float = 1.0,
    options: dict[str, Any] | None = None,
    sizes: dict[str, int] | None = None,
    budgets_path: Path | None = None,
    size: int = 28,
) -> list[Check]:
    """One run of the real harness on generated ``datasets`` at ``size``; a check per dataset."""
    _prepare_workdir(workdir)
    data_dir, info_path = synthetic.write_catalog(workdir / "data", datasets, sizes, size)
    config = RunConfig(
        adapter=name,
        profile=profile,
        size=size,
        datasets=tuple(datasets),
        seeds=(0,),
        scale_factor=scale_factor,
        data_dir=str(data_dir),
        download=False,
        info_path=str(info_path),
        options=dict(options or {}),
        budgets_path=str(budgets_path) if budgets_path else None,
    )
    path = Runner(config, registry).run(workdir / RUN)
    rows = [r for r in leaderboard.read(path) if r["dataset"] != leaderboard.SUMMARY_DATASET]
    checks = []
    for flag in datasets:
        split_rows = {r["split"]: r for r in rows if r["dataset"] == flag}
        test = split_rows.get("test")
        if test is None:
            checks.append(Check(f"{flag}: runs", False, "no row written"))
            continue
        ok = all(split_rows.get(s, {}).get("status") == "ok" for s in ("val", "test"))
        detail = (
            f"test AUC {float(test['auc']):.3f}, ACC {float(test['acc']):.3f}"
            if ok
            else f"{test['status']}: {test['reason']}"
            f" (log: {rundir.task_dir(path.parent, flag, 0) / rundir.LOG})"
        )
        checks.append(Check(f"{flag} ({test['task']}): valid scores", ok, detail))
    return checks


def _check_import(adapter: Any, workdir: Path) -> Check:
    """The adapter's module imports where it runs (its own environment, or the harness's), in a
    process of its own and sealed as its tasks are (:func:`decathlon.launcher.probe`): never in
    this process, where its top-level code could change how the checks below score it."""
    module = adapter.run.partition(":")[0]
    python = (
        environments.build(adapter) if adapter.environment else environments.interpreter(adapter)
    )
    # Mount the packages exactly as the worker does, then import the adapter's module.
    code = launcher.import_check_code(adapter, module)
    workdir.mkdir(parents=True, exist_ok=True)
    passed, last = launcher.probe(
        adapter, python, code, timeout=IMPORT_SECONDS, log_path=workdir / "import.log"
    )
    where = f"{module} in {python}" if adapter.environment else module
    if not passed:
        return Check("imports", False, f"{where}: {last}")
    return Check("imports", True, where)


def assert_conforms(name: str, workdir: Path, **kwargs: Any) -> list[Check]:
    """:func:`check_adapter`, raising ``AssertionError`` that lists every failed check."""
    checks = check_adapter(name, workdir, **kwargs)
    failed = [c for c in checks if not c.passed]
    if failed:
        raise AssertionError(
            f"adapter '{name}' fails {len(failed)} conformance check(s): "
            + "; ".join(f"{c.name}: {c.detail}" for c in failed)
        )
    return checks


RegistryFactory = Callable[[], Registry]


@dataclass(frozen=True)
class ConformanceCheck:
    """One conformance check of one adapter, callable on a work folder: passes silently, or
    raises ``AssertionError`` with what failed and why (as :func:`assert_conforms` words it).

    ``dataset`` is ``None`` for the ``registered`` and ``imports`` checks; otherwise the check
    runs the real harness on that one generated dataset.
    """

    adapter: str
    name: str
    dataset: str | None = None
    registry: Union[Registry, RegistryFactory, None] = field(default=None, compare=False)
    kwargs: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def id(self) -> str:
        return f"{self.adapter}-{self.name}"

    def __call__(self, workdir: Path, **overrides: Any) -> Check:
        registry = self.registry() if callable(self.registry) else self.registry
        registry = registry or make_registry()
        if self.name == "registered":
            result = _check_registered(self.adapter, registry)
        elif self.name == "imports":
            result = _check_import(registry.get(self.adapter), workdir)
        else:
            assert self.dataset is not None
            kwargs = {**self.kwargs, **overrides}
            (result,) = _check_datasets(
                self.adapter, workdir, registry=registry, datasets=(self.dataset,), **kwargs
            )
        if not result.passed:
            raise AssertionError(
                f"adapter '{self.adapter}' fails 1 conformance check(s): "
                f"{result.name}: {result.detail}"
            )
        return result


def conformance_checks(
    name: str,
    *,
    registry: Union[Registry, RegistryFactory, None] = None,
    datasets: Sequence[str] = TASK_TYPE_DATASETS,
    **kwargs: Any,
) -> list[ConformanceCheck]:
    """The checks of :func:`check_adapter` one by one: ``registered``, ``imports``, then one per
    dataset. ``kwargs`` are :func:`check_adapter`'s run settings (``scale_factor``,
    ``options``, ``profile``, ``sizes``, ``budgets_path``). Nothing runs until a check is
    called, so this is cheap at pytest's collection time."""
    return [
        ConformanceCheck(name, "registered", registry=registry),
        ConformanceCheck(name, "imports", registry=registry),
        *(
            ConformanceCheck(name, flag, dataset=flag, registry=registry, kwargs=dict(kwargs))
            for flag in datasets
        ),
    ]


def parametrize_with_checks(
    adapters: Sequence[str],
    *,
    registry: Union[Registry, RegistryFactory, None] = None,
    datasets: Sequence[str] = TASK_TYPE_DATASETS,
    **kwargs: Any,
) -> Any:
    """A ``pytest.mark.parametrize`` over every conformance check of every adapter named, as
    scikit-learn's ``parametrize_with_checks``: the test gets one :class:`ConformanceCheck` as
    ``check`` and calls it with a work folder; each check is its own test, named
    ``ADAPTER-CHECK`` (``baseline-registered``, ``baseline-breastmnist``, ...)."""
    import pytest

    checks = [
        check
        for adapter in adapters
        for check in conformance_checks(adapter, registry=registry, datasets=datasets, **kwargs)
    ]
    return pytest.mark.parametrize("check", checks, ids=[c.id for c in checks])
