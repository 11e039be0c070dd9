"""The leaderboard: rows with a fixed column order, written atomically, and the decathlon mean.

One row per (adapter, dataset, size, seed, split), whatever the task's status, plus one
``decathlon`` row per (adapter, size, seed) holding the mean test AUC and ACC over the ten
datasets: status ``ok`` only when all ten are ``ok``, else ``incomplete`` with empty scores and
the missing datasets named. The mean is never taken over fewer than ten, nor over sizes.

This module owns the file format: it writes a leaderboard (:func:`write`), reads it back as
rows (:func:`read`), and reads it validated for comparison (:func:`read_leaderboard`, which
``compare`` and ``show`` use), with the reference leaderboards the package ships
(:func:`reference_path`).
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from decathlon import datasets, files, resources
from decathlon.errors import LeaderboardError, did_you_mean

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

COLUMNS = (
    "run_id",
    "adapter",
    "dataset",
    "size",
    "seed",
    "split",
    "status",
    "auc",
    "acc",
    "task",
    "n_images",
    "profile",
    "budget",
    "hard_limit_s",
    "elapsed_s",
    "data_verified",
    "sealed",
    "device",
    "adapter_version",
    "harness_version",
    "python",
    "environment",
    "finished_at",
    "reason",
    "notes",
)
#: ``not_given``: a train row of a task whose adapter returned no train scores (they are
#: optional); such a row has no scores, and the task's val and test rows are ``ok``.
NOT_GIVEN = "not_given"
STATUSES = ("ok", "timeout", "error", "invalid", NOT_GIVEN)
SPLITS = ("train", "val", "test")
SUMMARY_DATASET = "decathlon"
SUMMARY_STATUSES = ("ok", "incomplete")
#: Columns that files written before they existed lack; read as empty.
OPTIONAL_COLUMNS = ("sealed", "environment")

#: How a seed and a score are written in a leaderboard (what the harness writes; Python's int()
#: and float() take more, which pandas then reads otherwise or not at all).
_INTEGER = re.compile(r"0|[1-9][0-9]*")
_NUMBER = re.compile(
    r"[-+]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|nan|inf|infinity)", re.IGNORECASE
)

# A task's notes (up to rundir.TASK_JSON_LIMIT, 16 MiB of JSON, each quote doubled in CSV) are
# one field; Python's csv module refuses fields over 128 KiB unless told otherwise.
csv.field_size_limit(max(csv.field_size_limit(), 2**26))
METRICS = ("auc", "acc")
#: The columns that identify a row: no two rows of a file share them.
KEY = ["run_id", "adapter", "dataset", "size", "seed", "split"]
#: The ten decathlon datasets, in the papers' order.
DATASETS = datasets.DECATHLON_FLAGS
#: The 2021 paper's names for the organ datasets.
V1_FLAGS = datasets.ALIASES
#: The reference leaderboards the package ships (in ``decathlon/leaderboards/``), by the names
#: ``--reference`` accepts.
REFERENCES = {
    "v1": "medmnist_v1_isbi2021.csv",
    "v2": "medmnist_v2_scidata2023.csv",
    "plus": "medmnist_plus_scirep2025.csv",
}
#: ``adapter_version`` of the published rows in the reference leaderboards.
PUBLISHED = "published"
#: The image sizes a leaderboard's ``size`` column may hold.
SIZES = datasets.SIZES

Row = dict[str, Any]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


def printable(text: str) -> str:
    """``text`` with nothing that acts on a terminal or cannot be written as UTF-8: control
    characters (escape sequences, newlines) become spaces, lone surrogates (undecodable file
    names) their ``\\udcxx`` spelling. For what a task said, and for files from elsewhere."""
    if text.isprintable():
        return text
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(c if c.isprintable() else " " for c in text)


def to_csv(rows: Iterable[Row]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_cell(row.get(column)) for column in COLUMNS])
    return buffer.getvalue()


def write(path: Path, rows: Iterable[Row]) -> None:
    """Write rows (in the given order) to ``path`` atomically: a reader never sees half a file."""
    files.write_text(path, to_csv(rows))


def read(path: Path) -> list[Row]:
    """Rows of a leaderboard CSV as dicts of strings (no checks: see decathlon.compare)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def summarize(rows: Sequence[Row], datasets: Sequence[str]) -> list[Row]:
    """One ``decathlon`` row per (run_id, adapter, size, seed): the mean test scores over
    ``datasets`` (never over several image sizes)."""
    groups: dict[tuple[str, str, str, str], dict[str, Row]] = {}
    for row in rows:
        if row["dataset"] == SUMMARY_DATASET or row["split"] != "test":
            continue
        key = (str(row["run_id"]), str(row["adapter"]), str(row.get("size")), str(row["seed"]))
        groups.setdefault(key, {})[row["dataset"]] = row
    summary = []
    for (run_id, adapter, size, seed), by_dataset in groups.items():
        ok = [by_dataset[d] for d in datasets if by_dataset.get(d, {}).get("status") == "ok"]
        missing = [
            f"{d} ({by_dataset[d]['status']})" if d in by_dataset else f"{d} (not run)"
            for d in datasets
            if by_dataset.get(d, {}).get("status") != "ok"
        ]
        any_row = next(iter(by_dataset.values()))
        complete = not missing
        summary_row: Row = {
            "run_id": run_id,
            "adapter": adapter,
            "dataset": SUMMARY_DATASET,
            "size": size,
            "seed": seed,
            "split": "test",
            "status": "ok" if complete else "incomplete",
            "profile": any_row.get("profile"),
            "device": any_row.get("device"),
            "adapter_version": any_row.get("adapter_version"),
            "harness_version": any_row.get("harness_version"),
            "environment": any_row.get("environment"),
            "elapsed_s": sum(float(r.get("elapsed_s") or 0) for r in by_dataset.values()),
            "data_verified": all(_truthy(r.get("data_verified")) for r in by_dataset.values()),
            "sealed": all(_truthy(r.get("sealed")) for r in by_dataset.values()),
        }
        if complete:
            summary_row["auc"] = sum(float(r["auc"]) for r in ok) / len(ok)
            summary_row["acc"] = sum(float(r["acc"]) for r in ok) / len(ok)
            summary_row["reason"] = f"mean of {len(ok)} datasets"
        else:
            summary_row["reason"] = (
                f"{len(ok)}/{len(datasets)} datasets ok; missing: {', '.join(missing)}"
            )
        summary.append(summary_row)
    return summary


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


# ---------------------------------------------------------------------- reading, validated


@dataclass
class Leaderboard:
    """One validated leaderboard file.

    ``rows`` holds the per-dataset rows (summary rows dropped) with ``seed`` as int and ``auc`` /
    ``acc`` as float (NaN when empty), ``size`` as int. ``run_dir`` is the run directory when
    the file sits in one (where ``tasks/<dataset>/seed<k>/predictions/`` may hold scores);
    ``profile`` is its one profile.
    """

    path: Path
    rows: pd.DataFrame
    run_dir: Path | None
    profile: str


def read_leaderboard(path: Path) -> Leaderboard:
    """Read and check a leaderboard CSV, or the ``leaderboard.csv`` of a run directory.

    Raises :class:`LeaderboardError` with one line naming the file for anything that is not a
    well-formed leaderboard: unreadable or empty file, missing columns, unknown dataset, split or
    status, non-numeric or out-of-range scores, an ``ok`` test row without scores, duplicate
    (run_id, adapter, dataset, size, seed, split) rows, several profiles in one file, no test rows.
    """
    path = Path(path)
    try:
        return _read_leaderboard(path)
    except OSError as exc:  # unreadable: permissions, /proc files, a folder that will not list
        raise LeaderboardError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _read_leaderboard(path: Path) -> Leaderboard:
    import numpy as np  # here: the harness's other paths need no pandas
    import pandas as pd

    from decathlon import rundir  # here: rundir reads this module's names

    run_dir: Path | None = None
    if path.is_dir():
        run_dir, path = path, rundir.leaderboard_path(path)
        if not path.is_file():
            _refuse_a_run_without_results(run_dir)
            raise LeaderboardError(f"{run_dir}: not a run directory (no leaderboard.csv in it)")
    elif not path.is_file():
        if path.name == rundir.LEADERBOARD:
            _refuse_a_run_without_results(path.parent)
        raise LeaderboardError(f"{path}: no such leaderboard file or run directory")
    elif rundir.is_run_dir(path.parent):
        run_dir = path.parent

    _check_whole_rows(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise LeaderboardError(f"{path}: empty file, not a leaderboard") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LeaderboardError(f"{path}: not a leaderboard CSV ({first})") from None

    df.columns = [printable(str(c)).strip() for c in df.columns]
    found = ", ".join(list(df.columns)[:6])  # the file's own, before any is filled in
    df = df.map(printable)  # a file from elsewhere may hold terminal escapes
    if "size" not in df.columns and "run_id" in df.columns:
        # Written before MedMNIST+ sizes existed: every row is at 28.
        df.insert(min(3, len(df.columns)), "size", "28")
    for column in OPTIONAL_COLUMNS:
        if column not in df.columns:
            df[column] = ""
    missing = [c for c in COLUMNS if c not in df.columns]
    if len(missing) == len(COLUMNS) or {"run_id", "dataset", "split"} <= set(missing):
        raise LeaderboardError(
            f"{path}: not a decathlon leaderboard (columns found: {found}; "
            f"expected {', '.join(COLUMNS[:8])}, ...)"
        )
    if missing:
        raise LeaderboardError(f"{path}: missing column(s) {', '.join(missing)}")
    if df.empty:
        raise LeaderboardError(f"{path}: no rows, nothing to compare")
    df = df[list(COLUMNS)].apply(lambda s: s.str.strip())

    def fail(i: int, problem: str) -> LeaderboardError:
        # i is the frame's 0-based row; line 1 is the header.
        return LeaderboardError(f"{path}: line {i + 2}: {problem}")

    for i, row in df.iterrows():
        assert isinstance(i, int)
        dataset, split, status = row["dataset"], row["split"], row["status"]
        if dataset not in DATASETS and dataset != SUMMARY_DATASET:
            hint = (
                f" (the current medmnist flag is '{V1_FLAGS[dataset]}')"
                if dataset in V1_FLAGS
                else "." + did_you_mean(dataset, DATASETS)
            )
            raise fail(i, f"unknown dataset '{dataset}'{hint}")
        if split not in SPLITS:
            raise fail(i, f"unknown split '{split}' (expected train, val or test)")
        allowed = SUMMARY_STATUSES if dataset == SUMMARY_DATASET else STATUSES
        if status not in allowed:
            raise fail(i, f"unknown status '{status}' (expected {', '.join(allowed)})")
        if dataset == SUMMARY_DATASET and split != "test":
            raise fail(i, f"a '{SUMMARY_DATASET}' summary row must have split test, not '{split}'")
        if not _INTEGER.fullmatch(row["seed"]):  # int() also takes "00", "+0", "0_0" and "٠"
            plain = "digits, no sign or leading 0"
            raise fail(i, f"seed '{row['seed']}' is not a plain integer ({plain})")
        seed = int(row["seed"])
        if not 0 <= seed < 2**63:
            raise fail(i, f"seed {seed} is out of range (0 to 2**63 - 1)")
        if row["sealed"] not in ("true", "false", ""):
            raise fail(i, f"sealed '{row['sealed']}' is not true, false or empty")
        if row["size"] not in {str(s) for s in SIZES}:
            choices = ", ".join(str(s) for s in SIZES)
            raise fail(i, f"size '{row['size']}' is not an image size ({choices})")
        for metric in METRICS:
            text = row[metric]
            if text == "":
                continue
            if not _NUMBER.fullmatch(text):  # float() also takes "0.8_6" and "٠.٨٦"
                raise fail(i, f"{metric} '{text}' is not a number")
            value = float(text)
            if not (0.0 <= value <= 1.0):
                raise fail(i, f"{metric} {text} is outside [0, 1]")
        if dataset != SUMMARY_DATASET and status == "ok" and split != "train":
            empty = [m for m in METRICS if row[m] == ""]
            if row["adapter_version"] == PUBLISHED and len(empty) < len(METRICS):
                empty = []  # a published row leaves empty what its source does not report
            if empty:
                raise fail(i, f"status ok but no {' or '.join(empty)} for the {split} split")
        if status == NOT_GIVEN:
            if split != "train":
                raise fail(i, f"status {status} is for train rows only, not {split}")
            if row["auc"] != "" or row["acc"] != "":
                raise fail(i, f"status {status} but the row has scores")

    dup = df.duplicated(KEY, keep=False)
    if dup.any():
        lines = [i + 2 for i in df.index[dup][:2]]
        key = ", ".join(f"{k}={df.loc[df.index[dup][0], k]}" for k in KEY)
        raise LeaderboardError(f"{path}: duplicate rows ({key}) on lines {lines[0]} and {lines[1]}")

    profiles = sorted(set(df["profile"]))
    if len(profiles) > 1:
        raise LeaderboardError(
            f"{path}: mixed profiles {', '.join(repr(p) for p in profiles)}; a leaderboard holds "
            "one profile (split it and compare the files)"
        )
    rows = df[df["dataset"] != SUMMARY_DATASET].copy()
    if not (rows["split"] == "test").any():
        found = ", ".join(sorted(set(rows["split"]))) or "none"
        raise LeaderboardError(f"{path}: no test rows (splits found: {found}); nothing to compare")

    rows["seed"] = rows["seed"].astype(int)
    rows["size"] = rows["size"].astype(int)
    for metric in METRICS:
        values = pd.to_numeric(rows[metric].replace("", np.nan), errors="coerce")
        # Scores of a failed row are not results, whatever the file says.
        rows[metric] = values.where(rows["status"] == "ok")
    rows = rows.reset_index(drop=True)
    _check_summary_rows(path, df, rows)
    return Leaderboard(path=path, rows=rows, run_dir=run_dir, profile=profiles[0])


def _refuse_a_run_without_results(run_dir: Path) -> None:
    """A run folder (it has its config.json) stopped before any task finished has no
    leaderboard yet: say so, and how to go on, rather than "not a run directory"."""
    from decathlon import rundir  # here: rundir reads this module's names

    if rundir.config_path(run_dir).is_file():
        pid = rundir.holder(run_dir)
        if pid is not None:
            raise LeaderboardError(
                f"{run_dir}: the run is still going (pid {pid}) and no task has finished yet"
                " (no leaderboard.csv); try again once one has"
            )
        raise LeaderboardError(
            f"{run_dir}: the run has no finished task yet (no leaderboard.csv); finish it with"
            f" `run --resume {run_dir}`"
        )


def _check_whole_rows(path: Path) -> None:
    """Refuse a file cut off in the middle of a row (any split): every record has every field.

    The harness rewrites its leaderboard atomically, so a short row means a truncated copy. A
    cut just after the comma before the last field (``notes``, often empty) leaves a row with
    every field: what tells it from a whole row is the end of the file. Every row the harness
    writes ends with a newline (``\n``; ``\r\n`` in files others wrote), so a file whose
    last row has none was cut inside it.
    """
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle, strict=True)
            header = next(reader, None)
            if not header:
                return  # empty: read_leaderboard says so
            last = 0
            for record in reader:
                if record and len(record) != len(header):
                    raise LeaderboardError(
                        f"{path}: line {reader.line_num}: cut off ({len(record)} of"
                        f" {len(header)} fields); the file is truncated or not a leaderboard"
                    )
                last = reader.line_num
            if last and not _ends_with_newline(path):
                raise LeaderboardError(
                    f"{path}: line {last}: cut off (no newline at the end of the file: the row"
                    " may have lost its last fields); the file is truncated (if this row is"
                    " whole, end the file with a newline)"
                )
    except csv.Error as exc:  # e.g. cut off inside a quoted field
        raise LeaderboardError(
            f"{path}: line {reader.line_num}: {exc}; the file is truncated or not a leaderboard CSV"
        ) from None
    except UnicodeDecodeError:
        return  # read_leaderboard says so


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as raw:
        size = raw.seek(0, io.SEEK_END)
        raw.seek(max(0, size - 1))
        return size == 0 or raw.read(1) == b"\n"


def _check_summary_rows(path: Path, df: pd.DataFrame, rows: pd.DataFrame) -> None:
    """Log a warning where a file's own ``decathlon`` row disagrees with the recomputed mean."""
    summary = df[(df["dataset"] == SUMMARY_DATASET) & (df["status"] == "ok")]
    for _, srow in summary.iterrows():
        test = rows[
            (rows["run_id"] == srow["run_id"])
            & (rows["adapter"] == srow["adapter"])
            & (rows["size"] == int(srow["size"]))
            & (rows["seed"] == int(srow["seed"]))
            & (rows["split"] == "test")
            & (rows["status"] == "ok")
        ]
        for metric in METRICS:
            if srow[metric] == "" or len(test) != len(DATASETS):
                continue
            if abs(float(srow[metric]) - float(test[metric].mean())) > 5e-4:
                log.warning(
                    "%s: the decathlon %s of %s/%s seed %s is %s, the ten test rows give %.4f",
                    path,
                    metric,
                    srow["run_id"],
                    srow["adapter"],
                    srow["seed"],
                    srow[metric],
                    test[metric].mean(),
                )


def reference_path(name: str) -> Path:
    """The reference leaderboard for ``--reference NAME`` (``v1``, ``v2`` or ``plus``)."""
    if name not in REFERENCES:
        raise LeaderboardError(
            f"unknown reference '{name}' (choose {', '.join(REFERENCES)})"
            + did_you_mean(name, REFERENCES)
        )
    path = resources.data_file("leaderboards", REFERENCES[name])
    if not path.is_file():
        raise LeaderboardError(f"{path}: reference leaderboard missing from this installation")
    return path
