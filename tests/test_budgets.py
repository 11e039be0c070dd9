"""Budgets: the paper's protocol as budgets.toml writes it, hard limits, scale factor, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from decathlon import budgets
from decathlon.contract import Adapter, Budget
from decathlon.datasets import Catalog
from decathlon.errors import BudgetError

PROJECT_FILE = Path(__file__).resolve().parents[1] / "decathlon" / "budgets.toml"
CATALOG = Catalog.load()  # the published metadata bundled with the harness
FLAGS = CATALOG.flags


def adapter(name: str, **kwargs) -> Adapter:
    return Adapter(name=name, run="somewhere:run", **kwargs)


@pytest.fixture(scope="module")
def real() -> budgets.Budgets:
    return budgets.load(PROJECT_FILE, datasets=FLAGS)


def resolve(b: budgets.Budgets, profile: str, name: str, flag: str, **kwargs) -> Budget:
    return b.resolve(profile, adapter(name), CATALOG.info(flag), **kwargs)


# --------------------------------------------------------------------------- the real file


def test_scales_are_the_published_image_counts() -> None:
    scale = {flag: CATALOG.info(flag).scale for flag in FLAGS}
    assert scale["breastmnist"] == 780
    assert scale["dermamnist"] == 10_015
    assert scale["organamnist"] == 58_830
    assert scale["pathmnist"] == 107_180
    assert scale["pneumoniamnist"] == 5_856


@pytest.mark.parametrize(
    ("flag", "seconds", "tier"),
    [
        ("breastmnist", 7200, 0),  # 780 images: below 10,000
        ("pneumoniamnist", 7200, 0),
        ("retinamnist", 7200, 0),
        ("dermamnist", 14400, 1),  # 10,015: from 10,000 to 50,000
        ("organcmnist", 14400, 1),
        ("organsmnist", 14400, 1),
        ("organamnist", 21600, 2),  # 58,830: above 50,000
        ("pathmnist", 21600, 2),
        ("octmnist", 21600, 2),
        ("chestmnist", 21600, 2),
    ],
)
def test_autosklearn_paper_hours(real: budgets.Budgets, flag: str, seconds: int, tier: int) -> None:
    b = resolve(real, "paper", "autosklearn", flag)
    assert b.time_seconds == seconds and b.tier == tier
    assert b.hard_limit_seconds == seconds + 900  # the file's grace for auto-sklearn
    assert b.trials is None and b.epochs is None and b.node_hours is None


@pytest.mark.parametrize(
    ("flag", "node_hours"),
    [
        ("breastmnist", 1),
        ("retinamnist", 1),
        ("pneumoniamnist", 2),
        ("dermamnist", 2),
        ("organsmnist", 2),
        ("organcmnist", 2),
        ("organamnist", 3),
        ("pathmnist", 3),
        ("octmnist", 3),
        ("chestmnist", 3),
    ],
)
def test_automl_vision_node_hours(real: budgets.Budgets, flag: str, node_hours: int) -> None:
    b = resolve(real, "paper", "automl_vision", flag)
    assert b.node_hours == node_hours
    assert b.hard_limit_seconds == (21600, 43200, 64800)[node_hours - 1]


def test_trial_and_epoch_budgets(real: budgets.Budgets) -> None:
    for flag in FLAGS:
        keras = resolve(real, "paper", "autokeras", flag)
        assert (keras.trials, keras.epochs, keras.time_seconds) == (20, 20, None)
        for name in ("resnet18_28", "resnet18_224", "resnet50_28", "resnet50_224"):
            resnet = resolve(real, "paper", name, flag)
            assert resnet.epochs == 100 and resnet.trials is None
            assert resnet.hard_limit_seconds > 0
    assert resolve(real, "paper", "autokeras", "pathmnist").hard_limit_seconds == 172800


@pytest.mark.parametrize("name", ["autogluon", "flaml"])
@pytest.mark.parametrize("profile", ["paper", "quick"])
def test_autogluon_and_flaml_get_autosklearns_budgets(
    real: budgets.Budgets, name: str, profile: str
) -> None:
    for flag in FLAGS:
        assert resolve(real, profile, name, flag) == resolve(real, profile, "autosklearn", flag)


def test_every_adapter_table_resolves_for_every_dataset(real: budgets.Budgets) -> None:
    for profile, tables in real.tables.items():
        for name in tables:
            for flag in FLAGS:
                b = resolve(real, profile, name, flag)
                assert b.hard_limit_seconds > 0
                if b.time_seconds is not None:
                    assert b.hard_limit_seconds > b.time_seconds
                assert b.describe()


def test_quick_profile_is_small(real: budgets.Budgets) -> None:
    for name in real.tables["quick"]:
        for flag in FLAGS:
            quick = resolve(real, "quick", name, flag)
            paper = resolve(real, "paper", name, flag)
            assert quick.hard_limit_seconds <= paper.hard_limit_seconds
    assert resolve(real, "quick", "autosklearn", "breastmnist").hard_limit_seconds == 120 + 120


def test_scale_factor_scales_times_not_counts(real: budgets.Budgets) -> None:
    sk = resolve(real, "paper", "autosklearn", "dermamnist", scale_factor=0.25)
    assert sk.time_seconds == 3600 and sk.hard_limit_seconds == (14400 + 900) * 0.25
    keras = resolve(real, "paper", "autokeras", "breastmnist", scale_factor=0.5)
    assert (keras.trials, keras.epochs) == (20, 20)
    assert keras.hard_limit_seconds == 21600 * 0.5
    vision = resolve(real, "paper", "automl_vision", "organamnist", scale_factor=2)
    assert vision.node_hours == 6
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(BudgetError, match="scale factor must be a positive number"):
            resolve(real, "paper", "autosklearn", "breastmnist", scale_factor=bad)


def test_memory_override_and_worst_case(real: budgets.Budgets) -> None:
    assert resolve(real, "paper", "baseline", "breastmnist").memory_mb is None
    assert resolve(real, "paper", "baseline", "breastmnist", memory_mb=512).memory_mb == 512
    plan = [resolve(real, "paper", "autosklearn", flag) for flag in FLAGS]
    assert budgets.worst_case_seconds(plan) == 3 * 8100 + 3 * 15300 + 4 * 22500


def test_profiles(real: budgets.Budgets) -> None:
    assert {"paper", "quick"} <= set(real.profiles)
    assert real.profile("paper").seeds == (0,)
    assert real.profile("paper").datasets is None  # all ten


# --------------------------------------------------------------------------- written budgets


def write(tmp_path: Path, text: str, name: str = "budgets.toml") -> Path:
    path = tmp_path / name
    path.write_text("[profiles.paper]\n[profiles.quick]\n" + text, encoding="utf-8")
    return path


def test_hard_limit_is_budget_plus_grace(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[paper.a]\ntime_seconds = 100\n"
        "[paper.b]\ntime_seconds = 100\ngrace_seconds = 0\n"
        "[paper.c]\ntrials = 3\nhard_limit_seconds = 50\ngrace_seconds = 10\n"
        "[paper.d]\ntrials = 3\nhard_limit_seconds = [10, 20, 30]\n",
    )
    b = budgets.load(path, datasets=FLAGS)
    breast = CATALOG.info("breastmnist")
    default_grace = budgets.DEFAULT_GRACE_SECONDS
    assert b.resolve("paper", adapter("a"), breast).hard_limit_seconds == 100 + default_grace
    assert b.resolve("paper", adapter("b"), breast).hard_limit_seconds == 100
    assert b.resolve("paper", adapter("c"), breast).hard_limit_seconds == 60
    path_mnist = CATALOG.info("pathmnist")
    assert b.resolve("paper", adapter("d"), path_mnist).hard_limit_seconds == 30


def test_adapter_default_budgets_fill_in(tmp_path: Path) -> None:
    b = budgets.load(write(tmp_path, ""), datasets=FLAGS)
    shipped = adapter("mine", default_budgets={"quick": {"hard_limit_seconds": [5, 6, 7]}})
    assert b.resolve("quick", shipped, CATALOG.info("octmnist")).hard_limit_seconds == 7
    with pytest.raises(BudgetError) as caught:
        b.resolve("paper", shipped, CATALOG.info("octmnist"))
    assert "budgets.toml: no [paper.mine] table" in str(caught.value)
    broken = adapter("broken", default_budgets={"quick": {"hard_limit_second": 5}})
    with pytest.raises(BudgetError, match="Did you mean 'hard_limit_seconds'"):
        b.resolve("quick", broken, CATALOG.info("octmnist"))


def test_options_merge_and_unknown_option(tmp_path: Path) -> None:
    path = write(tmp_path, "[quick.a]\nhard_limit_seconds = 5\n[quick.a.options]\nk = 3\n")
    b = budgets.load(path, datasets=FLAGS)
    a = adapter("a", options={"k": 1, "depth": 2})
    assert b.options("quick", a) == {"k": 3, "depth": 2}
    assert b.options("quick", a, {"depth": 9}) == {"k": 3, "depth": 9}
    with pytest.raises(BudgetError, match="has no option 'dept'. Did you mean 'depth'"):
        b.options("quick", a, {"dept": 9})
    path = write(tmp_path, "[quick.a]\nhard_limit_seconds = 5\n[quick.a.options]\nkk = 3\n")
    with pytest.raises(BudgetError) as caught:
        budgets.load(path, datasets=FLAGS).options("quick", a)
    assert_one_line_naming_the_file(caught.value, "no option 'kk'. Did you mean 'k'?")


# --------------------------------------------------------------------------- mistakes


def assert_one_line_naming_the_file(error: Exception, fragment: str) -> None:
    message = str(error)
    assert "\n" not in message
    assert "budgets.toml" in message
    assert fragment in message, message


MISTAKES = [
    (
        "[paper.baseline]\nhard_limit_second = 5\n",
        "unknown key 'hard_limit_second'. Did you mean 'hard_limit_seconds'?",
    ),
    ("[paper.baseline]\nhard_limit_seconds = -5\n", "hard_limit_seconds must be positive, got -5"),
    ("[paper.baseline]\nhard_limit_seconds = 0\n", "hard_limit_seconds must be positive, got 0"),
    (
        "[paper.baseline]\nhard_limit_seconds = [1, 2]\n",
        "must be one number or three (one per scale tier)",
    ),
    ("[paper.baseline]\nhard_limit_seconds = [1, 2, 3, 4]\n", "must be one number or three"),
    (
        '[paper.baseline]\nhard_limit_seconds = "600"\n',
        "hard_limit_seconds must be a number, got '600'",
    ),
    (
        "[paper.baseline]\nhard_limit_seconds = nan\n",
        "hard_limit_seconds must be a number, got nan",
    ),
    (
        "[paper.baseline]\nhard_limit_seconds = 5\ntrials = 2.5\n",
        "trials must be a whole number, got 2.5",
    ),
    (
        "[paper.baseline]\nhard_limit_seconds = 5\ntrials = true\n",
        "trials must be a whole number, got True",
    ),
    (
        "[paper.baseline]\nhard_limit_seconds = 5\ngrace_seconds = -1\n",
        "grace_seconds must be positive",
    ),
    (
        "[paper.baseline]\nhard_limit_seconds = 5\ntiers = [50000, 10000]\n",
        "tiers must be two increasing positive image counts",
    ),
    ("[paper.baseline]\nhard_limit_seconds = 5\noptions = 3\n", "options must be a table"),
    ("[paper.baseline\nhard_limit_seconds = 5\n", "not valid TOML"),
    ("[paper]\nbaseline = 5\n", "paper.baseline must be a table"),
    ("[papr.baseline]\nhard_limit_seconds = 5\n", "unknown table [papr]"),
    (
        '[profiles.ci]\ndatasets = ["breastmnit"]\n',
        "unknown dataset 'breastmnit'. Did you mean 'breastmnist'?",
    ),
    ("[profiles.ci]\nseed = [0]\n", "unknown key 'seed'. Did you mean 'seeds'?"),
    ("[profiles.ci]\nseeds = [-1]\n", "seeds must be a list of whole numbers from 0 to 4294967295"),
    ('[profiles.ci]\ndatasets = "breastmnist"\n', "datasets must be a list of dataset names"),
    # Named twice: read as once, where one of the two was probably meant to be another.
    (
        '[profiles.ci]\ndatasets = ["breastmnist", "retinamnist", "breastmnist"]\n',
        "[profiles.ci]: datasets names 'breastmnist' twice; name each dataset once",
    ),
    (
        "[profiles.ci]\nseeds = [0, 1, 0]\n",
        "[profiles.ci]: seeds names 0 twice; name each seed once",
    ),
]


@pytest.mark.parametrize(("text", "fragment"), MISTAKES, ids=[f for _, f in MISTAKES])
def test_mistakes_in_the_file_are_one_line_naming_it(
    tmp_path: Path, text: str, fragment: str
) -> None:
    with pytest.raises(BudgetError) as caught:
        budgets.load(write(tmp_path, text), datasets=FLAGS)
    assert_one_line_naming_the_file(caught.value, fragment)


def test_a_dataset_named_by_both_its_names_is_named_twice(tmp_path: Path) -> None:
    """The runner accepts the v1 names too: organmnist_axial is organamnist."""
    text = '[profiles.ci]\ndatasets = ["organamnist", "organmnist_axial"]\n'
    with pytest.raises(BudgetError) as caught:
        budgets.load(write(tmp_path, text), datasets=(*FLAGS, *CATALOG.aliases))
    fragment = "datasets names one dataset twice, as 'organamnist' and 'organmnist_axial'"
    assert_one_line_naming_the_file(caught.value, fragment)


def test_unknown_profile(real: budgets.Budgets) -> None:
    with pytest.raises(BudgetError) as caught:
        real.profile("quik")
    assert_one_line_naming_the_file(caught.value, "unknown profile 'quik'. Did you mean 'quick'?")


def test_unknown_adapter(tmp_path: Path) -> None:
    b = budgets.load(write(tmp_path, "[quick.baselin]\nhard_limit_seconds = 5\n"), datasets=FLAGS)
    with pytest.raises(BudgetError) as caught:
        b.check_adapters(["baseline", "autosklearn"])
    assert_one_line_naming_the_file(
        caught.value, "unknown adapter 'baselin' in [quick.baselin]. Did you mean 'baseline'?"
    )


def test_missing_hard_limit(tmp_path: Path) -> None:
    b = budgets.load(write(tmp_path, "[paper.k]\ntrials = 3\n"), datasets=FLAGS)
    with pytest.raises(BudgetError) as caught:
        b.resolve("paper", adapter("k"), CATALOG.info("breastmnist"))
    assert_one_line_naming_the_file(caught.value, "[paper.k] needs hard_limit_seconds")


def test_missing_file_and_missing_profiles(tmp_path: Path) -> None:
    with pytest.raises(BudgetError) as caught:
        budgets.load(tmp_path / "budgets.toml")
    assert_one_line_naming_the_file(caught.value, "no such budgets file")
    path = tmp_path / "budgets.toml"
    path.write_text("[paper.baseline]\nhard_limit_seconds = 5\n")
    with pytest.raises(BudgetError) as caught:
        budgets.load(path)
    assert_one_line_naming_the_file(caught.value, "needs a [profiles.NAME] table")


def test_a_hard_limit_that_overflows_names_the_file_not_the_scale_factor(
    tmp_path: Path,
) -> None:
    """1e308 s plus 1e308 s of grace is infinite: it was blamed on "the scale factor 1.0"."""
    path = write(tmp_path, "[paper.a]\nhard_limit_seconds = 1e308\ngrace_seconds = 1e308\n")
    b = budgets.load(path, datasets=FLAGS)
    with pytest.raises(BudgetError) as caught:
        b.resolve("paper", adapter("a"), CATALOG.info("breastmnist"))
    assert_one_line_naming_the_file(caught.value, "[paper.a] gives breastmnist a hard limit")
    assert "scale factor" not in str(caught.value)


def test_a_byte_order_mark_is_read_past(tmp_path: Path) -> None:
    """A file saved by a Windows editor starts with a byte-order mark: it was refused as
    "not valid TOML: Invalid statement (at line 1, column 1)", a line that does not say why."""
    path = tmp_path / "budgets.toml"
    path.write_bytes(b"\xef\xbb\xbf[profiles.paper]\n[paper.baseline]\nhard_limit_seconds = 5\n")
    b = budgets.load(path, datasets=FLAGS)
    assert (
        b.resolve("paper", adapter("baseline"), CATALOG.info("breastmnist")).hard_limit_seconds == 5
    )


def test_tier_boundaries() -> None:
    assert budgets.tier_of(9_999, (10_000, 50_000)) == 0
    assert budgets.tier_of(10_000, (10_000, 50_000)) == 1
    assert budgets.tier_of(50_000, (10_000, 50_000)) == 1
    assert budgets.tier_of(50_001, (10_000, 50_000)) == 2
