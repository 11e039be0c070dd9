"""The leaderboard: rows with a fixed column order, written atomically, and the decathlon mean.

One row per (adapter, dataset, size, seed, split), whatever the task's status, plus one
``decathlon`` row per (adapter, size, seed) holding the mean test AUC and ACC over the ten
datasets: status ``ok`` only when all ten are ``ok``, else ``incomplete`` with empty scores and
the missing datasets named. The mean is never taken over fewer than ten, nor over sizes.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from decathlon import files

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

Row = dict[str, Any]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


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
        row: Row = {
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
            row["auc"] = sum(float(r["auc"]) for r in ok) / len(ok)
            row["acc"] = sum(float(r["acc"]) for r in ok) / len(ok)
            row["reason"] = f"mean of {len(ok)} datasets"
        else:
            row["reason"] = f"{len(ok)}/{len(datasets)} datasets ok; missing: {', '.join(missing)}"
        summary.append(row)
    return summary


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"
