"""MedMNIST+ image sizes (64, 128, 224): metadata, names, budgets, adapters' sizes, the whole path.

The whole-path tests generate MedMNIST-format files at each size, serve them from a real HTTP
server on 127.0.0.1 named by a metadata override (``DECATHLON_INFO``), and run the command line:
download, MD5, materialize, run the baseline adapter, score, write the leaderboard, compare.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from decathlon import cli, compare, datasets, leaderboard, metrics
from decathlon.datasets import Catalog, dataset_file, file_md5
from decathlon.errors import DataError, LeaderboardError
from decathlon.synthetic import bundled_info, make_medmnist_npz, write_info, write_tiny

#: medmnist 3.0.2's INFO["pathmnist"] entries, as published.
PATHMNIST_302 = {
    28: ("pathmnist.npz", "a8b06965200029087d5bd730944a56c1"),
    64: ("pathmnist_64.npz", "55aa9c1e0525abe5a6b9d8343a507616"),
    128: ("pathmnist_128.npz", "ac42d08fb904d92c244187169d1fd1d9"),
    224: ("pathmnist_224.npz", "2c51a510bcdc9cf8ddb2af93af1eadec"),
}
SMALL_SET = ("breastmnist", "retinamnist", "chestmnist")  # binary, ordinal (RGB), multi-label


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DECATHLON_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(cli.console, "width", 240)


def main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# ------------------------------------------------------------------------- metadata and names


def test_bundled_metadata_holds_medmnist_302_urls_and_md5s_per_size() -> None:
    catalog = Catalog.load()
    for size, (name, md5) in PATHMNIST_302.items():
        info = catalog.info("pathmnist", size)
        assert info.size == size and info.md5 == md5
        assert info.url == f"https://zenodo.org/records/10519652/files/{name}?download=1"
    for flag in catalog.flags:
        md5s = {catalog.info(flag, size).md5 for size in datasets.SIZES}
        assert len(md5s) == 4 and all(re.fullmatch("[0-9a-f]{32}", m) for m in md5s)
        assert catalog.info(flag, 224).url.endswith(f"/{flag}_224.npz?download=1")
    with pytest.raises(DataError, match="unknown image size 32; MedMNIST publishes 28, 64"):
        catalog.info("pathmnist", 32)


def test_file_and_evaluator_names_follow_medmnist(tmp_path: Path) -> None:
    assert dataset_file(tmp_path, "pathmnist").name == "pathmnist.npz"
    assert dataset_file(tmp_path, "pathmnist", 128).name == "pathmnist_128.npz"
    name = metrics.evaluator_filename("pathmnist", "test", 0.91234, 0.8, "run1", 128)
    assert name == "pathmnist_128_test_[AUC]0.912_[ACC]0.800@run1.csv"
    assert metrics.evaluator_filename("pathmnist", "val", 0.5, 0.5, "r").startswith("pathmnist_val")


# ------------------------------------------------------------------------- loading streams


def test_load_checks_headers_and_memory_maps_images(tmp_path: Path) -> None:
    meta = bundled_info()
    write_tiny(tmp_path / "data", ["retinamnist"], meta, image_size=128)
    catalog = Catalog.load(write_info(meta, tmp_path / "info.json"))
    data = datasets.load(
        catalog, "retinamnist", tmp_path / "data", size=128, cache_root=tmp_path / "c"
    )
    for split in datasets.SPLITS:
        images = data.arrays[f"{split}_images"]
        n = 60 if split == "train" else 30
        assert isinstance(images, np.memmap) and images.shape == (n, 128, 128, 3)
        assert not isinstance(data.arrays[f"{split}_labels"], np.memmap)
    with np.load(data.path) as npz:  # the streamed copy is the archive's array, byte for byte
        np.testing.assert_array_equal(npz["val_images"], data.arrays["val_images"])
    assert data.files["train_images"].parent.name == f"retinamnist_128-{data.md5[:12]}"
    # The same file at the wrong size is refused from its header, with the shape it expected.
    (tmp_path / "data" / "retinamnist_128.npz").rename(tmp_path / "data" / "retinamnist_64.npz")
    meta["datasets"]["retinamnist"]["MD5_64"] = file_md5(tmp_path / "data/retinamnist_64.npz")
    catalog = Catalog.load(write_info(meta, tmp_path / "info.json"))
    with pytest.raises(DataError) as err:
        datasets.load(catalog, "retinamnist", tmp_path / "data", size=64, download=False)
    assert str(err.value) == (
        "retinamnist_64.npz: train_images has shape (60, 128, 128, 3); expected (60, 64, 64, 3)"
    )


def test_generated_files_stream_into_the_published_format(tmp_path: Path) -> None:
    path = tmp_path / "chestmnist_64.npz"
    sizes = {"train": 40, "val": 20, "test": 20}
    make_medmnist_npz(path, "chestmnist", "multi-label, binary-class", 1, 14, sizes, 3, 64)
    with np.load(path, allow_pickle=False) as npz:
        assert npz.files == [f"{s}_{k}" for s in datasets.SPLITS for k in ("images", "labels")]
        assert npz["train_images"].shape == (40, 64, 64) and npz["train_images"].dtype == np.uint8
        labels = npz["test_labels"]
        assert labels.shape == (20, 14) and set(np.unique(labels)) == {0, 1}
        assert all(len(set(labels[:, j])) == 2 for j in range(14))


def test_a_generated_file_that_fails_midway_leaves_nothing(tmp_path: Path) -> None:
    """Writing stopped by an error (a full disk; here a split too small for its classes) left
    its hidden half-written ``.NAME.tmp`` behind: up to gigabytes at 224, which nothing
    removed and which made the folder one that ``generate`` refuses."""
    sizes = {"train": 40, "val": 20, "test": 3}  # retinamnist has 5 classes
    with pytest.raises(ValueError, match="test size 3 is too small"):
        make_medmnist_npz(
            tmp_path / "retinamnist_64.npz", "retinamnist", "ordinal-regression", 3, 5, sizes, 3, 64
        )
    assert list(tmp_path.iterdir()) == []


def test_generated_data_names_no_file_of_another_size(tmp_path: Path) -> None:
    """``generate --size 64`` kept the published URL and MD5 of the real files at 28, 128 and
    224 in its info.json: a run at another size on the generated folder downloaded the real
    file (16 GB for pathmnist at 224) into it, only to refuse it for the generated split
    sizes. Only the generated size is named now, and a run at another size says so at once."""
    from decathlon.synthetic import write_catalog

    data_dir, info_path = write_catalog(tmp_path / "gen", ["breastmnist"], image_size=64)
    entry = json.loads(info_path.read_text())["datasets"]["breastmnist"]
    assert sorted(k for k in entry if k.startswith(("url", "MD5"))) == ["MD5_64", "url_64"]
    catalog = Catalog.load(info_path)
    assert datasets.load(catalog, "breastmnist", data_dir, size=64, download=False).md5
    with pytest.raises(DataError) as err:
        datasets.load(catalog, "breastmnist", data_dir, size=224, progress=False)
    assert str(err.value) == (
        f"breastmnist_224.npz is not in {data_dir} and {info_path} names no URL for it; put it"
        " there or pass --mirror URL"
    )
    assert sorted(p.name for p in data_dir.glob("*.npz")) == ["breastmnist_64.npz"]


# ------------------------------------------------------------------------- adapters and budgets


def test_an_adapter_that_declares_only_28_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for extra in ([], ["--run-dir", str(tmp_path / "r")]):
        command = "run" if extra else "plan"
        code, _, err = main(capsys, command, "--adapter", "autosklearn", "--size", "128", *extra)
        line = one_line_error(code, err)
        assert "adapter 'autosklearn' does not take 128x128 images" in line
        assert "declares sizes 28" in line
    assert not (tmp_path / "r").exists()  # nothing ran, nothing written
    with pytest.raises(SystemExit) as exit_info:  # argparse's own usage error
        cli.main(["plan", "--adapter", "baseline", "--size", "96"])
    assert exit_info.value.code == 2
    assert "image size must be one of 28, 64, 128, 224, got '96'" in capsys.readouterr().err


def test_declared_sizes_of_the_built_in_adapters() -> None:
    from decathlon.plugins import make_plugin_manager

    registry = make_plugin_manager()
    sizes = {name: registry.get(name).sizes for name in registry.adapters}
    every = (28, 64, 128, 224)
    assert sizes["baseline"] == every and sizes["automl_vision"] == every
    for name in ("resnet18_28", "resnet18_224", "resnet50_28", "resnet50_224"):
        assert sizes[name] == every
    assert sizes["autosklearn"] == (28,) and sizes["autokeras"] == (28,)


def test_budgets_per_size_and_plan_shows_them(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    budgets = tmp_path / "budgets.toml"
    budgets.write_text(
        "[profiles.paper]\n[profiles.quick]\n"
        "[quick.baseline]\nhard_limit_seconds = [300, 900, 1800]\n"
        "[quick.baseline.sizes.224]\nhard_limit_seconds = [1200, 3600, 7200]\n",
        encoding="utf-8",
    )
    args = ("plan", "--adapter", "baseline", "--profile", "quick", "--budgets", str(budgets))
    code, out28, _ = main(capsys, *args, "--datasets", "breastmnist,pathmnist")
    assert code == 0 and "28x28 images" in out28 and "limit 300s" in out28
    code, out224, _ = main(capsys, *args, "--datasets", "breastmnist,pathmnist", "--size", "224")
    assert code == 0 and "224x224 images" in out224
    assert "limit 1200s" in out224 and "limit 7200s" in out224 and "limit 300s" not in out224
    budgets.write_text(
        "[profiles.paper]\n[profiles.quick]\n[quick.baseline]\nhard_limit_seconds = 300\n"
        "[quick.baseline.sizes.225]\nhard_limit_seconds = 600\n",
        encoding="utf-8",
    )
    code, _, err = main(capsys, *args)
    line = one_line_error(code, err)
    assert "unknown image size '225' under sizes" in line and "Sizes: 28, 64, 128, 224" in line


def test_paper_budgets_scale_the_28_stem_resnets_with_the_pixels(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out28, _ = main(capsys, "plan", "--adapter", "resnet18_28", "--datasets", "breastmnist")
    code, out224, _ = main(
        capsys, "plan", "--adapter", "resnet18_28", "--datasets", "breastmnist", "--size", "224"
    )
    assert code == 0 and "100 epochs" in out224
    limit = re.compile(r"(\d+)h(\d+)m")
    (h28, m28), (h224, m224) = limit.search(out28).groups(), limit.search(out224).groups()
    assert int(h224) * 60 + int(m224) >= 60 * (int(h28) * 60 + int(m28))


# ------------------------------------------------------------------------- the whole path


def _serve(served: Path, base: str, flags: tuple[str, ...], size: int, root: Path) -> Path:
    """Generate ``flags`` at ``size`` into the served folder; an info.json whose URLs and MD5s
    at that size point at the server. Returns the info.json."""
    meta = bundled_info()
    write_tiny(served, flags, meta, image_size=size)
    for flag in flags:
        meta["datasets"][flag][f"url_{size}"] = f"{base}/{flag}_{size}.npz"
    return write_info(meta, root / f"info_{size}.json")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize(
    ("size", "flags"),
    [(64, SMALL_SET), (128, SMALL_SET), (224, datasets.DECATHLON_FLAGS)],
)
def test_whole_path_at_size(
    size: int,
    flags: tuple[str, ...],
    http_server: tuple[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base, served = http_server
    info_path = _serve(served, base, flags, size, tmp_path)
    monkeypatch.setenv("DECATHLON_INFO", str(info_path))
    data_dir, run_dir = tmp_path / "data", tmp_path / "run"
    code, out, err = main(
        capsys, "run", "--adapter", "baseline", "--profile", "quick", "--size", str(size),
        "--datasets", ",".join(flags), "--data-dir", str(data_dir), "--run-dir", str(run_dir),
        "--no-progress", "--jobs", "1",
    )  # fmt: skip
    assert code == 0, err
    meta = json.loads(info_path.read_text())["datasets"]
    for flag in flags:  # downloaded over HTTP under the published name and MD5-checked
        path = data_dir / f"{flag}_{size}.npz"
        assert file_md5(path) == meta[flag][f"MD5_{size}"]
        assert (data_dir / f"{flag}_{size}.npz.md5ok").read_text().split()[2] == file_md5(path)
    assert not (data_dir / f"{flags[0]}.npz").exists()

    rows = _rows(run_dir / "leaderboard.csv")
    assert list(rows[0]) == list(leaderboard.COLUMNS)
    assert {r["size"] for r in rows} == {str(size)}
    tasks = [r for r in rows if r["dataset"] != leaderboard.SUMMARY_DATASET]
    assert len(tasks) == 3 * len(flags) and {r["status"] for r in tasks} == {"ok"}
    record = json.loads((run_dir / "config.json").read_text())
    assert record["size"] == size and record["config"]["size"] == size

    for flag in flags:  # the images the worker read: materialized, memory-mappable, this size
        (folder,) = (tmp_path / "home" / "arrays").glob(f"{flag}_{size}-*")
        images = np.load(folder / "test_images.npy", mmap_mode="r")
        assert images.shape[1:3] == (size, size)
        evaluator = run_dir / "tasks" / flag / "seed0" / "evaluator"
        names = sorted(p.name for p in evaluator.iterdir())
        assert [n.split("_[AUC]")[0] for n in names] == [
            f"{flag}_{size}_{split}" for split in ("test", "train", "val")
        ]

    text = compare.compare_command([run_dir], None, bootstrap=0, width=240)
    assert f"run/baseline@{size}" in text
    if len(flags) == 10:
        (summary,) = [r for r in rows if r["dataset"] == leaderboard.SUMMARY_DATASET]
        assert summary["status"] == "ok" and summary["size"] == str(size)
        board = compare.read_leaderboard(run_dir)
        (method,) = compare.methods_of(board)
        assert method.size == size and method.complete
        assert abs(method.mean("auc") - float(summary["auc"])) < 1e-5


def test_compare_groups_by_size_and_refuses_mixed_files(tmp_path: Path) -> None:
    from test_compare import write_run

    small = write_run(tmp_path, "small", {"baseline": 0.0})
    large = write_run(tmp_path, "large", {"baseline": 0.05}, size=128)
    text = compare.compare_command([small, large], None, bootstrap=0, width=240)
    assert "=== Image size 28x28 ===" in text and "=== Image size 128x128 ===" in text
    first, second = text.split("=== Image size 128x128 ===")
    assert "small/baseline" in first and "large/baseline@128" not in first
    assert "large/baseline@128" in second and "small/baseline" not in second
    # Statistics are per size: two single-method groups, never one two-method test.
    assert "Wilcoxon" not in text
    with pytest.raises(LeaderboardError, match="image sizes 28, 128, and a table never mixes"):
        compare.compare_command([small, large], None, tmp_path / "out", ["md"], bootstrap=0)
    assert not (tmp_path / "out").exists()
    only = compare.compare_command([small, large], None, bootstrap=0, width=240, size=128)
    assert "large/baseline@128" in only and "small/baseline" not in only
    with pytest.raises(LeaderboardError, match="no results at image size 64"):
        compare.compare_command([small, large], None, bootstrap=0, size=64)
    methods = compare.collect([small, large])
    with pytest.raises(LeaderboardError, match="never averaged or ranked together"):
        compare.comparison_table(methods)


def test_show_filters_by_size_and_old_files_read_as_28(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from test_compare import write_run

    run = write_run(tmp_path, "large", {"baseline": 0.0}, size=64)
    code, out, _ = main(capsys, "show", str(run), "--size", "64")
    assert code == 0 and "large/baseline@64" in out
    line = one_line_error(*main(capsys, "show", str(run), "--size", "224")[::2])
    assert "no results at image size 224 (the inputs hold sizes 64)" in line
    # A leaderboard written before the size column existed is read as 28.
    old = tmp_path / "old.csv"
    rows = _rows(run / "leaderboard.csv")
    columns = [c for c in leaderboard.COLUMNS if c != "size"]
    with old.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    (method,) = compare.methods_of(compare.read_leaderboard(old))
    assert method.size == 28


# ------------------------------------------------------------------------- --reference plus

#: Typed from the study's own table images (end-to-end VGG16, the first row of each dataset's
#: table), independently of the transcription in the reference file: percent, ACC at 28, 64, 128,
#: 224, then AUC at 28, 64, 128, 224.
E2E_VGG16 = {
    "pathmnist": (88.93, 93.83, 94.85, 94.73, 98.57, 99.34, 99.42, 99.33),
    "chestmnist": (94.79, 94.82, 94.79, 94.83, 76.16, 78.59, 80.07, 80.92),
    "dermamnist": (76.58, 79.53, 81.80, 81.55, 92.69, 94.36, 95.71, 95.51),
    "octmnist": (77.50, 81.93, 90.50, 90.30, 95.84, 97.50, 98.73, 99.17),
    "pneumoniamnist": (84.78, 89.26, 87.13, 87.39, 97.04, 98.69, 98.55, 98.47),
    "retinamnist": (54.17, 55.75, 62.00, 64.17, 75.35, 80.63, 85.26, 87.82),
    "breastmnist": (85.26, 87.82, 89.32, 88.03, 87.48, 90.21, 92.40, 91.11),
    "organamnist": (93.19, 96.44, 94.24, 94.61, 99.47, 99.79, 99.75, 99.75),
    "organcmnist": (91.35, 93.51, 92.54, 93.37, 99.32, 99.64, 99.61, 99.65),
    "organsmnist": (78.87, 81.60, 82.36, 82.06, 97.64, 98.06, 98.11, 97.89),
}
#: The study's configurations: training scheme x backbone (the reference file's adapter names).
PLUS_SCHEMES = ("e2e", "lp", "knn")
PLUS_MODELS = {
    "vgg16": "VGG16",
    "alexnet": "AlexNet",
    "resnet18": "ResNet-18",
    "densenet121": "DenseNet-121",
    "efficientnet_b4": "EfficientNet-B4",
    "vit_b16": "ViT-B/16",
    "clip_vit_b16": "CLIP ViT-B/16",
    "eva02_vit_b16": "EVA-02 ViT-B/16",
    "dino_vit_b16": "DINO ViT-B/16",
    "sam_vit_b16": "SAM ViT-B/16",
}
OTHER_TABLES = Path(__file__).with_name("data") / "medmnist_plus_other.json"
OTHER = ("bloodmnist", "tissuemnist")  # the study's two datasets that are not in the decathlon


def test_plus_reference_is_in_the_project_format() -> None:
    path = compare.reference_path("plus")
    with path.open(newline="") as handle:
        assert next(csv.reader(handle)) == list(leaderboard.COLUMNS)
    board = compare.read_leaderboard(path)
    assert len(board.rows) == 3 * 10 * 4 * 10  # schemes x backbones x sizes x datasets
    assert set(board.rows["size"]) == set(datasets.SIZES)
    methods = compare.methods_of(board)
    assert len(methods) == 120 and all(m.complete for m in methods)
    expected = {f"{s}_{m}" for s in PLUS_SCHEMES for m in PLUS_MODELS}
    assert {m.adapter for m in methods} == expected
    for m in methods:  # the study publishes no AUC for k-NN
        assert m.unreported("auc") == m.adapter.startswith("knn_")
        assert not m.unreported("acc")


def test_plus_decathlon_means_are_the_published_numbers_averaged() -> None:
    methods = compare.collect([], "plus")
    by_key = {(m.adapter, m.size): m for m in methods}
    for i, size in enumerate(datasets.SIZES):
        method = by_key[("e2e_vgg16", size)]
        for flag, published in E2E_VGG16.items():
            assert method.test(flag, "acc") == pytest.approx(published[i] / 100, abs=1e-9)
            assert method.test(flag, "auc") == pytest.approx(published[4 + i] / 100, abs=1e-9)
        acc = np.mean([published[i] for published in E2E_VGG16.values()]) / 100
        auc = np.mean([published[4 + i] for published in E2E_VGG16.values()]) / 100
        assert method.mean("acc") == pytest.approx(acc, abs=1e-9)
        assert method.mean("auc") == pytest.approx(auc, abs=1e-9)
    table = compare.comparison_table([m for m in methods if m.size == 128])
    row = table[table["adapter"] == "e2e_vgg16"].iloc[0]
    assert row["decathlon_acc"] == pytest.approx(0.86953, abs=1e-9)  # mean of the ten at 128
    knn = table[table["adapter"] == "knn_vgg16"].iloc[0]
    assert np.isnan(knn["decathlon_auc"]) and np.isnan(knn["rank_auc"])
    assert not np.isnan(knn["decathlon_acc"]) and not np.isnan(knn["rank_acc"])


def test_plus_transcription_reproduces_the_studys_average_table() -> None:
    """The study's Average table is the mean over its 12 datasets: the ten decathlon ones here
    plus bloodmnist and tissuemnist (kept beside this test). Every one of its 200 published
    cells is reproduced to its rounding, which a misread digit above the second decimal of any
    transcribed value would break."""
    other = json.loads(OTHER_TABLES.read_text())
    scheme_names = {"e2e": "end_to_end", "lp": "linear_probing", "knn": "knn"}
    methods = compare.collect([], "plus")
    by_key = {(m.adapter, m.size): m for m in methods}
    checked = 0
    for scheme, name in scheme_names.items():
        for slug, model in PLUS_MODELS.items():
            for k, metric in enumerate(("acc", "auc")):
                for i, size in enumerate(datasets.SIZES):
                    published = other["average"][name][model][4 * k + i]
                    if published is None:
                        assert scheme == "knn" and metric == "auc"
                        continue
                    method = by_key[(f"{scheme}_{slug}", size)]
                    ours = [100 * method.test(flag, metric) for flag in datasets.DECATHLON_FLAGS]
                    extra = [other[f][name][model][4 * k + i] for f in OTHER]
                    assert abs(np.mean(ours + extra) - published) <= 0.005 + 1e-9, (
                        scheme,
                        model,
                        metric,
                        size,
                    )
                    checked += 1
    assert checked == 200


def test_compare_a_run_beside_plus_at_its_size(tmp_path: Path) -> None:
    from test_compare import write_run

    run = write_run(tmp_path, "mine", {"baseline": 0.0}, size=64)
    text = compare.compare_command([run], "plus", bootstrap=0, width=240, size=64)
    assert "mine/baseline@64" in text and "paper_plus/e2e_vgg16@64" in text
    assert "@128" not in text and "=== Image size" not in text
    assert "Not in the AUC test (no AUC published): paper_plus/knn_vgg16@64" in text
