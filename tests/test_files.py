"""Writing beside a file, then renaming: a reader sees the old file or the new one, never half."""

from __future__ import annotations

from pathlib import Path

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
