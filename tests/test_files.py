"""Writing beside a file, then renaming: a reader sees the old file or the new one, never half."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from decathlon import files


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "leaderboard.csv"
    path.write_text("old\n")
    with pytest.raises(RuntimeError), files.replacing(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["leaderboard.csv"]


def test_a_finished_write_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("old")
    files.write_text(path, "new é")
    assert path.read_text(encoding="utf-8") == "new é"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


# ---------------------------------------------------------------------------- .npy left by a task


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_an_npy_file_reads_back_as_saved() -> None:
    scores = np.random.default_rng(0).dirichlet(np.ones(3), size=7)
    np.testing.assert_array_equal(files.load_npy(_npy(scores)), scores)
    assert files.load_npy(_npy(np.zeros((0, 2)))).shape == (0, 2)


def test_a_header_that_promises_more_than_the_file_holds_is_refused() -> None:
    """np.load allocates what the header declares before reading: a 16-byte file declaring
    shape (10**12, 2) asked the harness for 16 TB and ended the whole run."""
    buffer = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**12, 2)}
    np.lib.format.write_array_header_1_0(buffer, header)
    buffer.write(b"\0" * 16)
    with pytest.raises(ValueError, match=r"declares shape \(1000000000000, 2\)"):
        files.load_npy(buffer.getvalue())
    with pytest.raises(ValueError, match="56 bytes.*holds 55"):  # a byte short, as truncated
        files.load_npy(_npy(np.zeros(7))[:-1])


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"", "not an .npy file"),
        (b"PK\x03\x04 not npy", "not an .npy file"),
        (_npy(np.array([object(), 1], dtype=object)), "Python objects"),
    ],
)
def test_what_is_not_an_npy_array_of_numbers_is_refused(raw: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        files.load_npy(raw)


def test_json_text_takes_the_keys_an_adapters_notes_may_have() -> None:
    """Notes keyed by numpy scalars (counts per label) made json raise, and so did a NaN key
    once ``allow_nan=False`` was set (json.dumps wrote it as "NaN" before): the worker then
    turned a task with valid predictions into an error row."""
    notes = {
        np.int64(3): 1,
        np.float32(0.5): 2,
        float("nan"): 3,
        float("-inf"): 4,
        ("a", 1): 5,
        np.str_("label"): 6,
    }
    assert json.loads(files.json_text(notes)) == {
        "3": 1,
        "0.5": 2,
        "NaN": 3,
        "-Infinity": 4,
        "('a', 1)": 5,
        "label": 6,
    }
