"""Budgets: reading ``budgets.toml`` and resolving what one adapter may spend on one dataset.

The file holds one table per profile (``[profiles.NAME]``) and one per profile and adapter
(``[NAME.ADAPTER]``). A value given as a list of three applies to the three scale tiers that
``tiers`` cuts; a dataset's scale is its total number of images (train + val + test). A
``sizes`` sub-table (``[NAME.ADAPTER.sizes.224]``) overrides any of those values for one image
size (MedMNIST+ 64, 128, 224): an epoch at 224 costs about 64 times one at 28.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from decathlon import resources
from decathlon.contract import Adapter, Budget, DatasetInfo
from decathlon.datasets import ALIASES
from decathlon.errors import BudgetError, did_you_mean

#: Keys an adapter's budget table may hold.
BUDGET_KEYS = (
    "tiers",
    "time_seconds",
    "trials",
    "epochs",
    "node_hours",
    "hard_limit_seconds",
    "grace_seconds",
    "memory_mb",
    "options",
    "sizes",
)
#: Image sizes a ``sizes`` sub-table may name.
SIZE_KEYS = ("28", "64", "128", "224")
PROFILE_KEYS = ("description", "datasets", "seeds")
MAX_SEED = 2**32 - 1
_INT_KEYS = ("trials", "epochs", "memory_mb")
DEFAULT_TIERS = (10_000, 50_000)
DEFAULT_GRACE_SECONDS = 300.0


def default_budgets_path() -> Path:
    """``./budgets.toml`` when the working directory has one, else the one the package ships."""
    here = Path.cwd() / "budgets.toml"
    if here.is_file():
        return here
    return resources.data_file("budgets.toml")


@dataclass(frozen=True)
class Profile:
    name: str
    description: str = ""
    datasets: tuple[str, ...] | None = None  # None: all ten
    seeds: tuple[int, ...] = (0,)


@dataclass
class Budgets:
    """The parsed file: profiles and the raw per-adapter tables, checked for shape."""

    path: Path
    profiles: dict[str, Profile]
    tables: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def profile(self, name: str) -> Profile:
        if name not in self.profiles:
            raise BudgetError(
                f"{self.path.name}: unknown profile '{name}'.{did_you_mean(name, self.profiles)}"
                f" Profiles: {', '.join(self.profiles)}"
            )
        return self.profiles[name]

    def table(self, profile: str, adapter: Adapter) -> dict[str, Any]:
        """The adapter's budget table for a profile: the file's, else the adapter's default."""
        self.profile(profile)
        table = self.tables.get(profile, {}).get(adapter.name)
        if table is None:
            table = adapter.default_budgets.get(profile)
            if table is None:
                raise BudgetError(
                    f"{self.path.name}: no [{profile}.{adapter.name}] table, and adapter"
                    f" '{adapter.name}' ships no default budget for profile '{profile}'; add one"
                )
            _check_table(table, f"adapter '{adapter.name}' default budget for '{profile}'")
        return table

    def file_options(self, profile: str, adapter: str) -> dict[str, Any]:
        """The options this file itself gives ``adapter`` under ``profile`` (never those of the
        adapter's own default budget, which its author wrote)."""
        options = self.tables.get(profile, {}).get(adapter, {}).get("options")
        return dict(options) if isinstance(options, dict) else {}

    def resolve(
        self,
        profile: str,
        adapter: Adapter,
        info: DatasetInfo,
        *,
        scale_factor: float = 1.0,
        memory_mb: int | None = None,
    ) -> Budget:
        """The budget of ``adapter`` on the dataset ``info`` under ``profile``.

        ``scale_factor`` multiplies every time (seconds, node hours, hard limit); trial and epoch
        counts stay as written. ``memory_mb`` overrides the table's memory cap.
        """
        if not (scale_factor > 0 and math.isfinite(scale_factor)):
            raise BudgetError(f"the scale factor must be a positive number, got {scale_factor}")
        table = self.table(profile, adapter)
        per_size = table.get("sizes", {}).get(str(info.size))
        if per_size:
            table = {**table, **per_size}
        tiers = table.get("tiers", DEFAULT_TIERS)
        tier = tier_of(info.scale, tiers)

        def pick(key: str) -> Any:
            value = table.get(key)
            return value[tier] if isinstance(value, list) else value

        time_seconds = pick("time_seconds")
        node_hours = pick("node_hours")
        hard = pick("hard_limit_seconds")
        grace = pick("grace_seconds")
        if hard is None:
            if time_seconds is None:
                where = f"[{profile}.{adapter.name}]"
                raise BudgetError(
                    f"{self.path.name}: {where} needs hard_limit_seconds (a wall-clock cap) when"
                    " it has no time_seconds"
                )
            hard = time_seconds + (DEFAULT_GRACE_SECONDS if grace is None else grace)
        elif grace is not None:
            hard = hard + grace
        if not math.isfinite(float(hard)):
            raise BudgetError(
                f"{self.path.name}: [{profile}.{adapter.name}] gives {info.flag} a hard limit"
                " too large to be a number of seconds (its time and grace added); give a"
                " smaller one"
            )
        if not math.isfinite(float(hard) * scale_factor):
            raise BudgetError(
                f"the scale factor {scale_factor} makes the hard limit of {adapter.name} on"
                f" {info.flag} infinite; choose a smaller one"
            )
        return Budget(
            hard_limit_seconds=float(hard) * scale_factor,
            time_seconds=None if time_seconds is None else float(time_seconds) * scale_factor,
            trials=pick("trials"),
            epochs=pick("epochs"),
            node_hours=None if node_hours is None else float(node_hours) * scale_factor,
            memory_mb=memory_mb if memory_mb is not None else pick("memory_mb"),
            tier=tier,
        )

    def options(
        self, profile: str, adapter: Adapter, overrides: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The adapter's options: its defaults, then the table's ``options``, then overrides."""
        merged = dict(adapter.options)
        for source, values in (
            (
                f"{self.path.name}: [{profile}.{adapter.name}.options]",
                self.table(profile, adapter).get("options"),
            ),
            ("--option", overrides),
        ):
            for key, value in (values or {}).items():
                if key not in adapter.options:
                    known = ", ".join(sorted(adapter.options)) or "none"
                    raise BudgetError(
                        f"{source}: adapter '{adapter.name}' has no option '{key}'."
                        f"{did_you_mean(key, adapter.options)} Options: {known}"
                    )
                kind = _kind(adapter.options[key])
                if kind and (_kind(value) != kind or not _finite(value)):
                    raise BudgetError(
                        f"{source}: option '{key}' of adapter '{adapter.name}' takes {kind},"
                        f" got {value!r}"
                    )
                merged[key] = value
        if adapter.check_options is not None:
            try:
                adapter.check_options(merged)
            except ValueError as error:
                raise BudgetError(f"adapter '{adapter.name}': {error}") from None
        return merged

    def check_adapters(self, known: Iterable[str]) -> None:
        """Refuse tables for adapters that no installed plugin registers."""
        known = list(known)
        for profile, tables in self.tables.items():
            for name in tables:
                if name not in known:
                    raise BudgetError(
                        f"{self.path.name}: unknown adapter '{name}' in [{profile}.{name}]."
                        f"{did_you_mean(name, known)} Installed: {', '.join(sorted(known))}"
                    )


def tier_of(scale: int, tiers: Iterable[int]) -> int:
    """0, 1 or 2: below the first boundary, between the two (inclusive), above the second."""
    low, high = tiers
    if scale < low:
        return 0
    return 1 if scale <= high else 2


def load(path: Path | None = None, *, datasets: Iterable[str] | None = None) -> Budgets:
    """Read and check a budgets file. ``datasets`` are the valid dataset flags."""
    path = Path(path) if path is not None else default_budgets_path()
    if not path.is_file():
        raise BudgetError(f"{path}: no such budgets file; pass --budgets PATH")
    try:
        # utf-8-sig: a byte-order mark (Windows editors write one) is not TOML's "Invalid
        # statement (at line 1, column 1)" but nothing.
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except tomllib.TOMLDecodeError as exc:
        raise BudgetError(f"{path.name}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise BudgetError(
            f"{path.name}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except OSError as exc:
        raise BudgetError(f"{path}: cannot be read ({exc.strerror})") from None
    valid_flags = list(datasets or ())
    raw_profiles = data.pop("profiles", None)
    if not isinstance(raw_profiles, dict) or not raw_profiles:
        raise BudgetError(f"{path.name}: needs a [profiles.NAME] table for each profile")
    profiles = {
        name: _profile(path, name, table, valid_flags) for name, table in raw_profiles.items()
    }
    tables: dict[str, dict[str, dict[str, Any]]] = {}
    for name, adapters in data.items():
        if name not in profiles:
            raise BudgetError(
                f"{path.name}: unknown table [{name}]; adapter budgets go under a profile"
                f" declared in [profiles].{did_you_mean(name, profiles)}"
            )
        if not isinstance(adapters, dict):
            raise BudgetError(f"{path.name}: [{name}] must hold one table per adapter")
        for adapter, table in adapters.items():
            if not isinstance(table, dict):
                raise BudgetError(f"{path.name}: {name}.{adapter} must be a table")
            _check_table(table, f"{path.name}: [{name}.{adapter}]")
        tables[name] = adapters
    return Budgets(path=path, profiles=profiles, tables=tables)


def _profile(path: Path, name: str, table: Any, flags: list[str]) -> Profile:
    where = f"{path.name}: [profiles.{name}]"
    if not isinstance(table, dict):
        raise BudgetError(f"{where} must be a table")
    for key in table:
        if key not in PROFILE_KEYS:
            raise BudgetError(
                f"{where}: unknown key '{key}'.{did_you_mean(key, PROFILE_KEYS)}"
                f" Keys: {', '.join(PROFILE_KEYS)}"
            )
    datasets = table.get("datasets")
    if datasets is not None:
        if not isinstance(datasets, list) or not all(isinstance(d, str) for d in datasets):
            raise BudgetError(f"{where}: datasets must be a list of dataset names")
        if not datasets:
            raise BudgetError(f"{where}: datasets is empty (leave it out for all ten)")
        named: dict[str, str] = {}
        for flag in datasets:
            if flags and flag not in flags:
                raise BudgetError(f"{where}: unknown dataset '{flag}'.{did_you_mean(flag, flags)}")
            # A dataset named twice (or by its v1 name too) is a slip: one of the two was
            # probably meant to be another dataset. The command line's --datasets forgives it.
            key = str(ALIASES.get(flag, flag))
            if key in named:
                same = (
                    f"'{flag}' twice"
                    if named[key] == flag
                    else f"one dataset twice, as '{named[key]}' and '{flag}'"
                )
                raise BudgetError(f"{where}: datasets names {same}; name each dataset once")
            named[key] = flag
        datasets = tuple(datasets)
    seeds = table.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(is_seed(s) for s in seeds):
        raise BudgetError(f"{where}: seeds must be a list of whole numbers from 0 to {MAX_SEED}")
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise BudgetError(f"{where}: seeds names {twice[0]} twice; name each seed once")
    return Profile(name, str(table.get("description", "")), datasets, tuple(seeds))


def _check_table(table: Mapping[str, Any], where: str) -> None:
    for key, value in table.items():
        if key not in BUDGET_KEYS:
            raise BudgetError(
                f"{where}: unknown key '{key}'.{did_you_mean(key, BUDGET_KEYS)}"
                f" Keys: {', '.join(BUDGET_KEYS)}"
            )
        if key == "options":
            if not isinstance(value, dict):
                raise BudgetError(f"{where}: options must be a table")
            continue
        if key == "sizes":
            if not isinstance(value, dict):
                raise BudgetError(f"{where}: sizes must hold one table per image size")
            for size, sub in value.items():
                if size not in SIZE_KEYS:
                    raise BudgetError(
                        f"{where}: unknown image size '{size}' under sizes."
                        f"{did_you_mean(str(size), SIZE_KEYS)} Sizes: {', '.join(SIZE_KEYS)}"
                    )
                if not isinstance(sub, dict):
                    raise BudgetError(f"{where}: sizes.{size} must be a table")
                nested = [k for k in sub if k in ("sizes", "options")]
                if nested:
                    raise BudgetError(
                        f"{where}: sizes.{size} cannot hold {nested[0]}; give budget values only"
                    )
                _check_table(sub, f"{where[:-1]}.sizes.{size}]" if where.endswith("]") else where)
            continue
        if key == "tiers":
            if not (
                isinstance(value, list)
                and len(value) == 2
                and all(isinstance(v, int) and v > 0 for v in value)
                and value[0] < value[1]
            ):
                raise BudgetError(
                    f"{where}: tiers must be two increasing positive image counts, got {value!r}"
                )
            continue
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and len(value) != 3:
            raise BudgetError(
                f"{where}: {key} must be one number or three (one per scale tier), got {value!r}"
            )
        for v in values:
            ok_type = isinstance(v, int) if key in _INT_KEYS else isinstance(v, (int, float))
            if isinstance(v, bool) or not ok_type or not math.isfinite(v):
                kind = "a whole number" if key in _INT_KEYS else "a number"
                raise BudgetError(f"{where}: {key} must be {kind}, got {v!r}")
            if v < 0 or (v == 0 and key != "grace_seconds"):
                raise BudgetError(f"{where}: {key} must be positive, got {v!r}")


def worst_case_seconds(budgets: Iterable[Budget]) -> float:
    """The longest a run can take: the sum of the hard limits."""
    return sum(b.hard_limit_seconds for b in budgets)


def is_seed(value: Any) -> bool:
    """A seed every adapter can take: NumPy's legacy seeding stops at 2**32 - 1."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SEED


def _kind(value: Any) -> str:
    """What an option's default says its values must be: a number or true/false ("" = any)."""
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    return ""


def _finite(value: Any) -> bool:
    """NaN and the infinities pass for numbers (TOML and JSON spell them) but mean none."""
    return not isinstance(value, float) or math.isfinite(value)
