"""The dataset registry: metadata, aliases, MD5 checks, loading checks and the .npy cache."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import REAL_FLAGS, TinyData, copy_dataset

from decathlon import datasets as datasets_module
from decathlon.datasets import (
    ALIASES,
    DECATHLON_FLAGS,
    KEYS,
    Catalog,
    dataset_file,
    default_data_dir,
    ensure_file,
    file_md5,
    is_cached,
    load,
    materialize,
)
from decathlon.errors import DataError
from decathlon.synthetic import make_medmnist_npz

# From ../shared/data/medmnist/README.md.
REAL = {
    "breastmnist": {
        "md5": "750601b1f35ba3300ea97c75c52ff8f6",
        "channels": 1,
        "counts": {"train": [147, 399], "val": [21, 57], "test": [42, 114]},
    },
    "pneumoniamnist": {
        "md5": "28209eda62fecd6e6a2d98b1501bb15f",
        "channels": 1,
        "counts": {"train": [1214, 3494], "val": [135, 389], "test": [234, 390]},
    },
    "retinamnist": {
        "md5": "bd4c0672f1bba3e3a89f0e4e876791e4",
        "channels": 3,
        "counts": {
            "train": [486, 128, 206, 194, 66],
            "val": [54, 12, 28, 20, 6],
            "test": [174, 46, 92, 68, 20],
        },
    },
}


# --- the real files -------------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.parametrize("flag", REAL_FLAGS)
def test_real_files_load_and_verify(real_data_dir: Path, tmp_path: Path, flag: str) -> None:
    expected = REAL[flag]
    # A symlink, so the MD5 sidecar lands in tmp_path rather than in the shared folder.
    (tmp_path / f"{flag}.npz").symlink_to(real_data_dir / f"{flag}.npz")
    data = load(Catalog.load(), flag, tmp_path, download=False, progress=False)
    assert data.verified and data.md5 == expected["md5"] == file_md5(real_data_dir / f"{flag}.npz")
    for split, counts in expected["counts"].items():
        images, labels = data.arrays[f"{split}_images"], data.arrays[f"{split}_labels"]
        tail = (28, 28) if expected["channels"] == 1 else (28, 28, 3)
        assert images.shape == (sum(counts), *tail) and images.dtype == np.uint8
        assert labels.shape == (sum(counts), 1) and labels.dtype == np.uint8
        assert np.bincount(labels[:, 0]).tolist() == counts
        assert data.info.n_samples[split] == sum(counts)


@pytest.mark.realdata
def test_mixed_catalog_loads_every_dataset(mixed_catalog: TinyData) -> None:
    for flag in mixed_catalog.catalog.flags:
        data = load(mixed_catalog.catalog, flag, mixed_catalog.data_dir, download=False)
        assert data.verified is (flag in REAL_FLAGS)  # the generated ones are not published
    assert mixed_catalog.catalog.info("breastmnist").n_samples["train"] == 546


# --- the catalog ----------------------------------------------------------------------------


def test_catalog_flags_aliases_and_info() -> None:
    catalog = Catalog.load()
    assert catalog.flags == DECATHLON_FLAGS
    assert len(DECATHLON_FLAGS) == 10
    for alias, flag in ALIASES.items():
        assert catalog.resolve(alias) == flag
        assert catalog.resolve(alias.upper()) == flag
    assert catalog.resolve(" BreastMNIST ") == "breastmnist"
    info = catalog.info("breastmnist")
    assert info.labels == {"0": "malignant", "1": "normal, benign"}
    assert info.n_samples == {"train": 546, "val": 78, "test": 156}
    assert info.md5 == REAL["breastmnist"]["md5"]
    assert info.url.startswith("https://zenodo.org/")
    assert (info.task, info.n_channels, info.n_classes) == ("binary-class", 1, 2)
    chest = catalog.info("chestmnist")
    assert (chest.task, chest.n_classes) == ("multi-label, binary-class", 14)
    assert catalog.info("organmnist_axial").flag == "organamnist"


def test_unknown_dataset_suggests_the_closest() -> None:
    with pytest.raises(DataError) as err:
        Catalog.load().resolve("breastmnit")
    message = str(err.value)
    assert message.startswith("unknown dataset 'breastmnit'. Did you mean 'breastmnist'? Known: ")
    assert "pathmnist" in message and "\n" not in message


def test_catalog_path_env_and_errors(
    tiny_catalog: TinyData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DECATHLON_INFO", str(tiny_catalog.info_path))
    assert Catalog.load().path == tiny_catalog.info_path
    assert Catalog.load().info("breastmnist").n_samples["train"] == 60
    monkeypatch.delenv("DECATHLON_INFO")
    assert Catalog.load().info("breastmnist").n_samples["train"] == 546
    bad = tmp_path / "info.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="info.json: cannot read dataset metadata"):
        Catalog.load(bad)
    bad.write_text(json.dumps({"datasets": {"x": {"task": "binary-class"}}}))
    with pytest.raises(DataError, match="dataset 'x' lacks n_channels, label, n_samples"):
        Catalog.load(bad)


@pytest.mark.parametrize(
    ("key", "value", "said"),
    [
        ("n_samples", {"train": "abc", "val": 1, "test": 1}, "n_samples train 'abc'"),
        ("n_samples", {"train": -5, "val": 1, "test": 1}, "n_samples train -5"),
        ("n_channels", "x", "n_channels 'x'; expected 1 or 3"),
        ("label", ["a", "b"], "label ['a', 'b']"),
        ("task", "regression", "task 'regression'"),
        ("n_classes", "two", "n_classes 'two'"),
        ("MD5", 5, "MD5 5; expected a string"),
        (None, 5, "dataset 'breastmnist' is 5, not an object"),
        ("_v1_to_v2_flag", [1], "'_v1_to_v2_flag' is not an object"),
    ],
)
def test_an_edited_metadata_file_is_one_line(
    tiny_catalog: TinyData, tmp_path: Path, key: str | None, value: object, said: str
) -> None:
    """A value of the wrong kind in an edited info.json (a string where a count goes, a list
    for the label names, a dataset that is not an object) ended plan and run with a ValueError,
    TypeError or AttributeError traceback where it was first used."""
    raw = json.loads(tiny_catalog.info_path.read_text())
    if key is None:
        raw["datasets"]["breastmnist"] = value
    elif key.startswith("_"):
        raw[key] = value
    else:
        raw["datasets"]["breastmnist"][key] = value
    bad = tmp_path / "info.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(DataError) as err:
        Catalog.load(bad).info("breastmnist")
    assert str(err.value).startswith(f"{bad}: ") and said in str(err.value), str(err.value)


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DECATHLON_DATA_DIR", str(tmp_path / "d"))
    assert default_data_dir() == tmp_path / "d"
    monkeypatch.delenv("DECATHLON_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / ".medmnist"


# --- tiny generated data --------------------------------------------------------------------


@pytest.mark.parametrize("resolve", ["this Python's", "Python 3.13's"])
def test_a_data_folder_in_a_loop_of_links_is_one_line_on_every_python(
    resolve: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Path.resolve raised RuntimeError for a loop of links up to Python 3.12, which
    full_data_dir made one line; from 3.13 (the project supports >= 3.11) it returns the path
    in the loop without complaint (os.path.realpath), so a run went on with that folder."""
    if resolve != "this Python's":  # 3.13's Path.resolve, as CPython writes it
        monkeypatch.setattr(
            Path, "resolve", lambda self, strict=False: Path(os.path.realpath(self, strict=strict))
        )
    loop = tmp_path / "loop"
    loop.symlink_to("loop")
    with pytest.raises(DataError, match="its symbolic links lead to no folder"):
        datasets_module.full_data_dir(loop)
    assert datasets_module.full_data_dir(tmp_path / "nowhere" / "d") == tmp_path / "nowhere" / "d"


def test_tiny_catalog_loads_all_ten(tiny_catalog: TinyData) -> None:
    catalog = tiny_catalog.catalog
    assert catalog.flags == DECATHLON_FLAGS
    for flag in catalog.flags:
        assert is_cached(catalog, flag, tiny_catalog.data_dir)
        data = load(catalog, flag, tiny_catalog.data_dir, download=False)
        assert data.verified is False  # generated: its MD5 is its info.json's, not the published
        info = data.info
        for split in ("train", "val", "test"):
            labels = data.arrays[f"{split}_labels"]
            if info.task == "multi-label, binary-class":
                assert labels.shape == (30 if split != "train" else 60, 14)
                assert (labels.min(axis=0) == 0).all() and (labels.max(axis=0) == 1).all()
            else:
                assert set(np.unique(labels)) == set(range(info.n_classes))
    assert not is_cached(catalog, "breastmnist", tiny_catalog.data_dir / "nope")


def test_only_the_published_md5_is_verified(
    tiny_catalog: TinyData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A generated file with the MD5 its own metadata file names (``DECATHLON_INFO``) loads, but
    is not verified: that MD5 says the file is whole, not that it holds the MedMNIST images (a
    run on generated data said ``data_verified=true``). The same file is verified once the
    bundled metadata publishes its MD5."""
    monkeypatch.setenv("DECATHLON_INFO", str(tiny_catalog.info_path))
    catalog = Catalog.load()
    assert catalog.path == tiny_catalog.info_path
    data = load(catalog, "breastmnist", tiny_catalog.data_dir, download=False, images=False)
    assert data.verified is False and data.md5 == catalog.info("breastmnist").md5
    bundled = Catalog.load(datasets_module.BUNDLED_INFO)
    published = datasets_module.published_md5
    assert data.md5 != published("breastmnist") == bundled.info("breastmnist").md5
    assert published("BreastMNIST", 64) == bundled.info("breastmnist", 64).md5
    _, verified = ensure_file(catalog, "retinamnist", tiny_catalog.data_dir, download=False)
    assert verified is False
    monkeypatch.setattr(datasets_module, "BUNDLED_INFO", tiny_catalog.info_path)
    data = load(catalog, "breastmnist", tiny_catalog.data_dir, download=False, images=False)
    assert data.verified is True


def test_generated_signal_is_learnable(tiny_catalog: TinyData) -> None:
    data = load(tiny_catalog.catalog, "organamnist", tiny_catalog.data_dir, download=False)
    x = data.arrays["train_images"].reshape(60, -1).mean(axis=1)
    y = data.arrays["train_labels"][:, 0]
    assert np.corrcoef(x, y)[0, 1] > 0.8


def test_missing_file_without_download(tiny_catalog: TinyData, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="breastmnist.npz is not in .* downloading is off"):
        ensure_file(tiny_catalog.catalog, "breastmnist", tmp_path, download=False)


def test_file_md5_matches_hashlib(tiny_catalog: TinyData) -> None:
    path = dataset_file(tiny_catalog.data_dir, "breastmnist")
    assert file_md5(path, chunk=1000) == hashlib.md5(path.read_bytes()).hexdigest()


# --- MD5 checks and the sidecar cache -------------------------------------------------------


def _other_file(tiny: TinyData, flag: str, data_dir: Path, seed: int = 7) -> Path:
    """A valid file for ``flag`` whose bytes (and so MD5) differ from the catalog's."""
    info = tiny.catalog.info(flag)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = dataset_file(data_dir, flag)
    make_medmnist_npz(
        path, flag, info.task, info.n_channels, info.n_classes, info.n_samples, seed=seed
    )
    return path


def test_bad_md5_refused_then_accepted_unverified(
    tiny_catalog: TinyData, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _other_file(tiny_catalog, "breastmnist", tmp_path)
    published = tiny_catalog.catalog.info("breastmnist").md5
    with pytest.raises(DataError) as err:
        ensure_file(tiny_catalog.catalog, "breastmnist", tmp_path, download=False)
    assert str(err.value) == (
        f"breastmnist.npz: MD5 {file_md5(path)} does not match the published {published};"
        " delete it or pass --redownload, or --allow-unverified to use it anyway"
    )
    with caplog.at_level(logging.WARNING, logger="decathlon.datasets"):
        data = load(tiny_catalog.catalog, "breastmnist", tmp_path, allow_unverified=True)
    assert data.verified is False and data.md5 == file_md5(path)
    assert "does not match the published" in caplog.text


def test_md5_sidecar_cache(tiny_published: TinyData, tmp_path: Path) -> None:
    tiny_catalog = tiny_published
    catalog = tiny_catalog.catalog
    path = copy_dataset(tiny_catalog.data_dir, "breastmnist", tmp_path)
    assert ensure_file(catalog, "breastmnist", tmp_path, download=False) == (path, True)
    sidecar = tmp_path / "breastmnist.npz.md5ok"
    size, mtime, md5 = sidecar.read_text().split()
    st = path.stat()
    assert (int(size), int(mtime), md5) == (st.st_size, st.st_mtime_ns, file_md5(path))
    # A stale hash under the same size and mtime is trusted: proof that nothing was rehashed.
    sidecar.write_text(f"{size} {mtime} {'0' * 32}\n")
    with pytest.raises(DataError, match="MD5 0{32} does not match"):
        ensure_file(catalog, "breastmnist", tmp_path, download=False)
    # A new mtime makes it hash the file again.
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert ensure_file(catalog, "breastmnist", tmp_path, download=False) == (path, True)
    assert sidecar.read_text().split()[2] == file_md5(path)


def test_an_arrays_cache_that_cannot_be_made_is_one_line(
    tiny_published: TinyData, tmp_path: Path
) -> None:
    """A read-only $DECATHLON_HOME (here: a file where the cache folder would be, which stops
    root too) raised the OSError of mkdir; now a DataError that the task's rows carry."""
    copy_dataset(tiny_published.data_dir, "breastmnist", tmp_path)
    (tmp_path / "home").write_text("not a folder")
    with pytest.raises(DataError, match="cannot make the folder .* set DECATHLON_HOME"):
        load(tiny_published.catalog, "breastmnist", tmp_path, cache_root=tmp_path / "home" / "a")
    data = load(tiny_published.catalog, "breastmnist", tmp_path, cache_root=tmp_path / "ok")
    with pytest.raises(DataError, match="cannot make the folder"):
        datasets_module.materialize(data, tmp_path / "home" / "a")


def test_an_arrays_cache_that_takes_no_file_says_what_to_do(
    tiny_published: TinyData, tmp_path: Path
) -> None:
    """A full or read-only arrays cache (here: a folder where the file goes, EISDIR for
    ENOSPC) said only "cannot write train_images.npy: ...", not what would mend it."""
    copy_dataset(tiny_published.data_dir, "breastmnist", tmp_path)
    md5 = file_md5(dataset_file(tmp_path, "breastmnist"))
    (tmp_path / "cache" / f"breastmnist-{md5[:12]}" / "train_images.npy").mkdir(parents=True)
    with pytest.raises(DataError) as err:
        load(tiny_published.catalog, "breastmnist", tmp_path, cache_root=tmp_path / "cache")
    message = str(err.value)
    assert "cannot write train_images.npy: " in message and "\n" not in message
    assert message.endswith("; free space there or set DECATHLON_HOME to a folder you can write")


def test_an_archive_that_cannot_be_read_is_not_called_a_cache_that_cannot_be_written(
    tiny_published: TinyData, tmp_path: Path
) -> None:
    """Streaming the images again for another cache, a source file that had vanished (or an
    EIO reading it) was reported as "cannot write ...; free space there or set
    DECATHLON_HOME": the error now names the archive and a read."""
    copy_dataset(tiny_published.data_dir, "breastmnist", tmp_path)
    data = load(tiny_published.catalog, "breastmnist", tmp_path, cache_root=tmp_path / "cache")
    data.path.unlink()
    with pytest.raises(DataError) as err:
        datasets_module.materialize(data, tmp_path / "other")
    message = str(err.value)
    assert message.startswith(f"{data.path}: cannot read train_images.npy from it: ")
    assert "free space" not in message and "DECATHLON_HOME" not in message


def test_unwritable_sidecar_still_verifies(tiny_published: TinyData, tmp_path: Path) -> None:
    tiny_catalog = tiny_published
    # A folder where the sidecar would go: neither readable nor writable as a file, even as root.
    copy_dataset(tiny_catalog.data_dir, "breastmnist", tmp_path)
    (tmp_path / "breastmnist.npz.md5ok").mkdir()
    assert ensure_file(tiny_catalog.catalog, "breastmnist", tmp_path, download=False)[1]
    assert ensure_file(tiny_catalog.catalog, "breastmnist", tmp_path, download=False)[1]


# --- validation errors ----------------------------------------------------------------------


def _rewrite(tiny: TinyData, flag: str, data_dir: Path, **changes: np.ndarray | None) -> Path:
    """Copy ``flag``'s tiny arrays with ``changes`` (None deletes a key) into ``data_dir``."""
    with np.load(dataset_file(tiny.data_dir, flag)) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    data_dir.mkdir(parents=True, exist_ok=True)
    path = dataset_file(data_dir, flag)
    np.savez(path, **arrays)
    return path


def _load_error(tiny: TinyData, flag: str, data_dir: Path) -> str:
    with pytest.raises(DataError) as err:
        load(tiny.catalog, flag, data_dir, download=False, allow_unverified=True)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{flag}.npz")
    return message


def _arr(tiny: TinyData, flag: str, key: str) -> np.ndarray:
    with np.load(dataset_file(tiny.data_dir, flag)) as npz:
        return npz[key]


def test_wrong_dtype(tiny_catalog: TinyData, tmp_path: Path) -> None:
    images = _arr(tiny_catalog, "breastmnist", "train_images").astype(np.int64)
    _rewrite(tiny_catalog, "breastmnist", tmp_path, train_images=images)
    assert _load_error(tiny_catalog, "breastmnist", tmp_path) == (
        "breastmnist.npz: train_images has dtype int64; expected uint8"
    )


def test_wrong_label_shape_multilabel(tiny_catalog: TinyData, tmp_path: Path) -> None:
    labels = _arr(tiny_catalog, "chestmnist", "val_labels")[:, :1]
    _rewrite(tiny_catalog, "chestmnist", tmp_path, val_labels=labels)
    assert _load_error(tiny_catalog, "chestmnist", tmp_path) == (
        "chestmnist.npz: val_labels has shape (30, 1); expected (30, 14)"
    )


def test_wrong_image_shape_colour(tiny_catalog: TinyData, tmp_path: Path) -> None:
    grey = _arr(tiny_catalog, "retinamnist", "test_images")[..., 0]
    _rewrite(tiny_catalog, "retinamnist", tmp_path, test_images=grey)
    assert _load_error(tiny_catalog, "retinamnist", tmp_path) == (
        "retinamnist.npz: test_images has shape (30, 28, 28); expected (30, 28, 28, 3)"
    )


def test_missing_key(tiny_catalog: TinyData, tmp_path: Path) -> None:
    _rewrite(tiny_catalog, "breastmnist", tmp_path, test_labels=None)
    assert _load_error(tiny_catalog, "breastmnist", tmp_path).startswith(
        "breastmnist.npz: missing test_labels (has "
    )


def test_a_member_without_npy_is_a_missing_key(tiny_catalog: TinyData, tmp_path: Path) -> None:
    """An archive whose member was named "train_images" (no .npy, as np.load also reads) passed
    the key check and then failed opening "train_images.npy" with a KeyError traceback, in the
    loader and in a download's check alike."""
    source = dataset_file(tiny_catalog.data_dir, "breastmnist")
    path = dataset_file(tmp_path, "breastmnist")
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(path, "w") as new:
        for member in old.infolist():
            name = member.filename
            new.writestr(name.removesuffix(".npy") if "train_im" in name else name, old.read(name))
    message = _load_error(tiny_catalog, "breastmnist", tmp_path)
    assert message.startswith("breastmnist.npz: missing train_images (has 'train_images' (not"), (
        message
    )


def test_label_out_of_range(tiny_catalog: TinyData, tmp_path: Path) -> None:
    labels = _arr(tiny_catalog, "breastmnist", "train_labels").copy()
    labels[0, 0] = 2
    _rewrite(tiny_catalog, "breastmnist", tmp_path, train_labels=labels)
    assert _load_error(tiny_catalog, "breastmnist", tmp_path) == (
        "breastmnist.npz: train_labels has values up to 2; expected class ids in [0, 2)"
    )
    chest = _arr(tiny_catalog, "chestmnist", "test_labels").copy()
    chest[3, 5] = 2
    _rewrite(tiny_catalog, "chestmnist", tmp_path, test_labels=chest)
    assert "test_labels has values other than 0 and 1" in _load_error(
        tiny_catalog, "chestmnist", tmp_path
    )


def test_split_size_mismatch(tiny_catalog: TinyData, tmp_path: Path) -> None:
    images = _arr(tiny_catalog, "breastmnist", "val_images")[:-1]
    labels = _arr(tiny_catalog, "breastmnist", "val_labels")[:-1]
    _rewrite(tiny_catalog, "breastmnist", tmp_path, val_images=images, val_labels=labels)
    assert _load_error(tiny_catalog, "breastmnist", tmp_path) == (
        "breastmnist.npz: val has 29 images; the published size is 30"
    )
    _rewrite(tiny_catalog, "breastmnist", tmp_path, val_labels=labels)
    assert _load_error(tiny_catalog, "breastmnist", tmp_path) == (
        "breastmnist.npz: val_images has 30 images but val_labels has 29 rows"
    )


class _Marker:
    """Unpickling this creates a file: the proof that a pickle was executed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def test_object_array_refused_without_executing(tiny_catalog: TinyData, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = np.empty(1, dtype=object)
    evil[0] = _Marker(marker)
    _rewrite(tiny_catalog, "breastmnist", tmp_path / "data", train_labels=evil)
    message = _load_error(tiny_catalog, "breastmnist", tmp_path / "data")
    assert "train_labels is an object array" in message and "refusing" in message
    assert not marker.exists()
    # A bare pickle under the .npz name is refused the same way.
    dataset_file(tmp_path / "data", "breastmnist").write_bytes(pickle.dumps(_Marker(marker)))
    assert "refusing to load it" in _load_error(tiny_catalog, "breastmnist", tmp_path / "data")
    assert not marker.exists()


def test_truncated_or_corrupt_npz(tiny_catalog: TinyData, tmp_path: Path) -> None:
    path = copy_dataset(tiny_catalog.data_dir, "breastmnist", tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = _load_error(tiny_catalog, "breastmnist", tmp_path)
    assert message.startswith("breastmnist.npz: is not a readable .npz (truncated or corrupt?)")
    assert message.endswith("delete it or pass --redownload")
    # An intact zip directory over damaged member data.
    damaged = bytearray(data)
    damaged[200:400] = bytes(200)
    path.write_bytes(bytes(damaged))
    assert zipfile.ZipFile(path).namelist()  # the archive itself still opens
    assert "is not a readable .npz" in _load_error(tiny_catalog, "breastmnist", tmp_path)
    np.save(tmp_path / "x.npy", np.zeros(3, np.uint8))
    os.replace(tmp_path / "x.npy", path)
    assert "not an .npz archive" in _load_error(tiny_catalog, "breastmnist", tmp_path)


@pytest.mark.parametrize("how", ["encrypted", "unknown compression"])
def test_an_encrypted_or_oddly_compressed_member_is_one_line(
    tiny_catalog: TinyData, tmp_path: Path, how: str
) -> None:
    """zipfile raises RuntimeError for an encrypted member and NotImplementedError for a
    compression method it lacks: both ended the load with a traceback."""
    path = copy_dataset(tiny_catalog.data_dir, "breastmnist", tmp_path)
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")  # each central directory entry
    while at >= 0:
        if how == "encrypted":
            data[at + 8] |= 1  # the general purpose flag's "encrypted" bit
        else:
            data[at + 10 : at + 12] = (99).to_bytes(2, "little")  # compression method 99
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))
    message = _load_error(tiny_catalog, "breastmnist", tmp_path)
    assert message.startswith("breastmnist.npz: is not a readable .npz"), message
    assert message.endswith("delete it or pass --redownload")


def test_image_data_shorter_than_its_header_is_refused(
    tiny_catalog: TinyData, tmp_path: Path
) -> None:
    """A whole zip whose images member holds less than its header declares passed every check,
    was streamed into the cache, and failed there: "cannot memory-map it ...; delete <cache
    folder>", which changed nothing (the .npz itself is short), for ever."""
    source = dataset_file(tiny_catalog.data_dir, "breastmnist")
    path = dataset_file(tmp_path / "data", "breastmnist")
    path.parent.mkdir()
    with zipfile.ZipFile(source) as whole, zipfile.ZipFile(path, "w") as short:
        for name in whole.namelist():
            data = whole.read(name)
            short.writestr(name, data[:-500] if name == "train_images.npy" else data)
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as err:
        load(
            tiny_catalog.catalog,
            "breastmnist",
            path.parent,
            allow_unverified=True,
            download=False,
            cache_root=cache,
        )
    assert str(err.value) == (
        "breastmnist.npz: train_images holds 46540 bytes of data but its header declares shape"
        " (60, 28, 28) (47040 bytes): truncated or corrupt; delete it or pass --redownload"
    )
    assert not cache.exists() or not list(cache.rglob("*.npy"))


def test_image_data_longer_than_its_header_is_refused(
    tiny_catalog: TinyData, tmp_path: Path
) -> None:
    """A member holding more than its array (bytes after it, or a zip entry that declares
    terabytes and decompresses to them) passed the checks with --allow-unverified, and every
    byte of it was streamed into the arrays cache, up to a full disk."""
    source = dataset_file(tiny_catalog.data_dir, "breastmnist")
    path = dataset_file(tmp_path / "data", "breastmnist")
    path.parent.mkdir()
    with zipfile.ZipFile(source) as whole, zipfile.ZipFile(path, "w") as longer:
        for name in whole.namelist():
            data = whole.read(name)
            longer.writestr(name, data + bytes(500) if name == "train_images.npy" else data)
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as err:
        load(
            tiny_catalog.catalog,
            "breastmnist",
            path.parent,
            allow_unverified=True,
            download=False,
            cache_root=cache,
        )
    assert str(err.value) == (
        "breastmnist.npz: train_images holds 47540 bytes of data but its header declares shape"
        " (60, 28, 28) (47040 bytes): more than its array; delete it or pass --redownload"
    )
    assert not cache.exists() or not list(cache.rglob("*.npy"))


# --- materialize ----------------------------------------------------------------------------


def test_materialize_round_trip_with_mmap(tiny_catalog: TinyData, tmp_path: Path) -> None:
    data = load(tiny_catalog.catalog, "retinamnist", tiny_catalog.data_dir, download=False)
    paths = materialize(data, tmp_path / "cache")
    folder = tmp_path / "cache" / f"retinamnist-{data.md5[:12]}"
    assert set(paths) == set(KEYS) and all(p.parent == folder for p in paths.values())
    for key, path in paths.items():
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        assert isinstance(arr, np.memmap)
        np.testing.assert_array_equal(arr, data.arrays[key])
        assert arr.dtype == np.uint8
    stamps = {k: p.stat().st_mtime_ns for k, p in paths.items()}
    assert materialize(data, tmp_path / "cache") == paths
    assert {k: p.stat().st_mtime_ns for k, p in paths.items()} == stamps
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{k}.npy" for k in KEYS)
