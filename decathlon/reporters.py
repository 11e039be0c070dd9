"""What a run shows while it goes: one line per finished task, or a live display, and the
results table at the end. The command line (``cli.py``) picks one; the runner calls it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from decathlon import leaderboard
from decathlon.runner import PlannedTask


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _score(value: Any) -> str:
    return f"{float(value):.3f}" if value not in ("", None) else ""


def results_table(rows: list[dict[str, Any]], title: str = "") -> Table:
    """The test rows of a run, one line each (the decathlon mean is printed under it).

    No reason column: each failure's reason was printed once as its task ended, and the run's
    last line says where they all are.
    """
    table = Table(title=title)
    for column in ("adapter", "dataset", "seed", "status", "AUC", "ACC", "elapsed"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        if row["split"] != "test" or row["dataset"] == leaderboard.SUMMARY_DATASET:
            continue
        elapsed = format_duration(float(row["elapsed_s"])) if row.get("elapsed_s") else ""
        table.add_row(
            escape(row["adapter"]),
            row["dataset"],
            str(row["seed"]),
            row["status"],
            _score(row["auc"]),
            _score(row["acc"]),
            elapsed,
        )
    return table


class PlainReporter:
    """One line per finished task, for logs and pipes; ``prefix`` names the adapter when a
    command runs several."""

    #: What a download during the run draws (``download``'s ``progress``): nothing, here; the
    #: runner's default, for a reporter without it, is a bar on a terminal's stderr.
    download_progress: Any = False

    def __init__(self, out: Console, prefix: str = "") -> None:
        self.out = out
        self.prefix = prefix

    def run_started(self, tasks: Sequence[PlannedTask], done: int) -> None:
        self.out.print(f"{self.prefix}{len(tasks)} tasks, {done} already done")

    def message(self, text: str) -> None:
        self.out.print(text, markup=False)  # paths and reasons hold "[...]": text, not markup

    def task_started(self, task: PlannedTask) -> None:
        pass

    def task_tick(self, task: PlannedTask, elapsed: float) -> None:
        pass

    def task_finished(self, task: PlannedTask, rows: list[dict[str, Any]]) -> None:
        test = next((r for r in rows if r["split"] == "test"), rows[0])
        score = (
            f" AUC {test['auc']:.3f} ACC {test['acc']:.3f}" if test.get("auc") is not None else ""
        )
        self.out.print(
            f"{self.prefix}{task.key}: {test['status']}{score} in "
            f"{format_duration(test.get('elapsed_s') or 0)}"
            + (f" ({test['reason']})" if test.get("reason") else ""),
            markup=False,  # a task's reason is text ("KeyError: '[/x]'"), not rich markup
        )

    def run_finished(self) -> None:
        pass


class RichReporter(PlainReporter):
    """A live display: the current dataset, its elapsed time against its budget, the run's ETA.

    With ``progress`` (from :meth:`make_progress`), several reporters share one display, each
    run a bar named ``label``; whoever made it starts and stops it.
    """

    def __init__(self, out: Console, progress: Progress | None = None, label: str = "run") -> None:
        super().__init__(out, prefix="" if label == "run" else f"{label} ")
        self.shared = progress is not None
        self.progress = progress or self.make_progress(out)
        self.label = label
        self.overall: TaskID | None = None
        self.current: TaskID | None = None
        self.remaining: dict[str, float] = {}
        self.done_seconds = 0.0

    @property
    def download_progress(self) -> Any:
        """A download's bar goes into this display: a second live display would draw over it."""
        return self.progress

    @staticmethod
    def make_progress(out: Console) -> Progress:
        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=out,
        )

    @staticmethod
    def _expected(task: PlannedTask) -> float:
        budget = task.budget
        return budget.time_seconds + 60 if budget.time_seconds else budget.hard_limit_seconds

    def run_started(self, tasks: Sequence[PlannedTask], done: int) -> None:
        if not self.shared:
            self.progress.start()
        self.remaining = {t.key: self._expected(t) for t in tasks}
        self.overall = self.progress.add_task(
            self.label, total=len(tasks), completed=done, detail=""
        )

    def message(self, text: str) -> None:
        self.progress.console.print(text, markup=False)

    def task_started(self, task: PlannedTask) -> None:
        self.current = self.progress.add_task(
            f"{self.prefix}{task.key}",
            total=task.budget.hard_limit_seconds,
            detail=f"budget {task.budget.describe()}",
        )

    def task_tick(self, task: PlannedTask, elapsed: float) -> None:
        rest = sum(v for k, v in self.remaining.items() if k != task.key)
        eta = max(0.0, self._expected(task) - elapsed) + rest
        if self.current is None:  # a tick before task_started: nothing to update
            return
        self.progress.update(
            self.current,
            completed=elapsed,
            detail=f"{format_duration(elapsed)} /"
            f" {format_duration(task.budget.hard_limit_seconds)} limit;"
            f" run ETA at most ~{format_duration(eta)}",
        )

    def task_finished(self, task: PlannedTask, rows: list[dict[str, Any]]) -> None:
        self.remaining.pop(task.key, None)
        if self.current is not None:
            self.progress.remove_task(self.current)
        if self.overall is not None:
            self.progress.advance(self.overall)
        super().task_finished(task, rows)

    def run_finished(self) -> None:
        if not self.shared:
            self.progress.stop()
