"""The comparison table (scores, decathlon means, mean ranks), its notes, and its renderings:
terminal, Markdown, HTML, CSV."""

from __future__ import annotations

import html
import io
import math
import re
import shutil
import textwrap
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from decathlon.compare.base import REFERENCE_LABELS, SHORT, table_columns
from decathlon.compare.methods import Method
from decathlon.errors import LeaderboardError
from decathlon.leaderboard import DATASETS, METRICS


def _one_size(methods: Sequence[Method]) -> None:
    sizes = sorted({m.size for m in methods})
    if len(sizes) > 1:
        raise LeaderboardError(
            f"methods at image sizes {', '.join(map(str, sizes))} are never averaged or ranked"
            " together; compare one size at a time (--size N)"
        )


def compared_datasets(methods: Sequence[Method]) -> tuple[str, ...]:
    """The datasets a comparison covers (all ten unless ``--datasets`` chose fewer)."""
    return methods[0].datasets if methods else DATASETS


def comparison_table(methods: Sequence[Method]) -> pd.DataFrame:
    """The Table-2 view as a frame with :func:`table_columns` (one row per method).

    All methods must be at one image size (else a one-line :class:`LeaderboardError`).
    """
    _one_size(methods)
    chosen = compared_datasets(methods)
    columns = table_columns(chosen)
    records = []
    for m in methods:
        notes = []
        if len(m.seeds) > 1:
            notes.append(f"mean ± sd over seeds {', '.join(map(str, m.seeds))}")
        if not m.complete:
            notes.append(m.missing_note())
        if m.unsealed:
            notes.append(f"{m.unsealed} rows ran unsealed (no sandbox)")
        if m.unverified:
            notes.append(f"{m.unverified} rows on data files without the published MD5")
        record: dict[str, Any] = {
            "method": m.label,
            "run_id": m.run_id,
            "adapter": m.adapter,
            "size": m.size,
            "seeds": " ".join(map(str, m.seeds)),
            "profile": m.profile,
            "complete": m.complete,
            "n_datasets": len(chosen),
        }
        for d in chosen:
            for metric in METRICS:
                record[f"{d}_{metric}"] = m.test(d, metric)
                record[f"{d}_{metric}_sd"] = m.test_sd(d, metric)
        for metric in METRICS:
            record[f"decathlon_{metric}"] = m.mean(metric)
            record[f"decathlon_{metric}_sd"] = m.mean_sd(metric)
        record["notes"] = "; ".join(notes)
        records.append(record)
    table = pd.DataFrame.from_records(records, columns=columns)
    for metric in METRICS:
        table[f"rank_{metric}"] = _mean_ranks(table, metric, chosen)
    return table[columns]


def _mean_ranks(table: pd.DataFrame, metric: str, chosen: Sequence[str]) -> pd.Series:
    from scipy.stats import rankdata

    ranks = pd.Series(np.nan, index=table.index, dtype=float)
    columns = [f"{d}_{metric}" for d in chosen]
    # Complete methods that report this metric (published kNN rows have no AUC).
    reported = table[columns].notna().all(axis=1)
    complete = table[table["complete"].astype(bool) & reported]
    if complete.empty:
        return ranks
    # At the printed precision, the published tables' own (three decimals), as the best cell is
    # marked: a run's 0.9194 and a published 0.919 are a tie, not ranks 1 and 2.
    values = np.array(
        [
            [float(fmt(c, v)) for c, v in zip(columns, row, strict=True)]
            for row in complete[columns].to_numpy(dtype=float)
        ]
    )
    # Rank within each dataset (column), higher score = rank 1, ties share the mean rank.
    per_dataset = np.column_stack([rankdata(-values[:, j]) for j in range(values.shape[1])])
    ranks.loc[complete.index] = per_dataset.mean(axis=1)
    return ranks


def _datasets_of(table: pd.DataFrame) -> tuple[str, ...]:
    return tuple(d for d in DATASETS if f"{d}_auc" in table.columns)


def value_columns(chosen: Sequence[str] = DATASETS) -> list[str]:
    cols = [f"{d}_{m}" for d in chosen for m in METRICS]
    return [*cols, "decathlon_auc", "decathlon_acc", "rank_auc", "rank_acc"]


def fmt(column: str, value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.2f}" if column.startswith("rank_") else f"{value:.3f}"


def best_cells(table: pd.DataFrame) -> dict[str, set[int]]:
    """Per value column, the row positions holding its best value at the printed precision."""
    best: dict[str, set[int]] = {}
    for column in value_columns(_datasets_of(table)):
        shown = [fmt(column, v) for v in table[column]]
        numbers = [(i, float(s)) for i, s in enumerate(shown) if s]
        if not numbers:
            best[column] = set()
            continue
        pick = min if column.startswith("rank_") else max
        target = pick(v for _, v in numbers)
        best[column] = {i for i, v in numbers if v == target}
    return best


def _cell(
    table: pd.DataFrame, i: int, column: str, methods: Sequence[Method], *, sep: str = " ± "
) -> str:
    """A cell as text: the score (``mean ± sd`` over seeds), else why it is missing."""
    text = fmt(column, table[column].iloc[i])
    if text:
        sd_column = f"{column}_sd"
        if sd_column in table.columns and not pd.isna(table[sd_column].iloc[i]):
            text += f"{sep}{table[sd_column].iloc[i]:.3f}"
        return text
    dataset = column.rsplit("_", 1)[0]
    if dataset in DATASETS:
        return methods[i].missing.get(dataset, "—")
    return "—"


def _mean_header(chosen: Sequence[str]) -> str:
    """The mean's label: 'mean' over the ten, 'mean of N' over a subset."""
    return "mean" if len(chosen) == len(DATASETS) else f"mean of {len(chosen)}"


def _table_notes(table: pd.DataFrame, methods: Sequence[Method]) -> list[str]:
    chosen = compared_datasets(methods)
    notes = []
    for i, m in enumerate(methods):
        if table["notes"].iloc[i]:
            notes.append(f"{m.label}{m.mark}: {table['notes'].iloc[i]}")
    over = (
        "Means are over all ten datasets"
        if len(chosen) == len(DATASETS)
        else f"Means are over the {len(chosen)} datasets chosen with --datasets "
        f"({', '.join(chosen)}), for every method"
        + (", the published ones too" if any(m.run_id in REFERENCE_LABELS for m in methods) else "")
    )
    notes.append(
        f"{over}; † = incomplete (no mean, no rank). Rank = average over "
        "the datasets of the per-dataset rank (1 = best, ties share) among complete methods."
    )
    if any(m.unsealed for m in methods):
        notes.append(
            "‡ = some rows ran without the sandbox (sealed=false): nothing kept that adapter "
            "from the test labels."
        )
    if any(m.unverified for m in methods):
        notes.append(
            "§ = some rows ran on data files without the published MD5 (data_verified=false:"
            " --allow-unverified, or generated files under another metadata file such as"
            " DECATHLON_INFO): not the MedMNIST images."
        )
    if any(len(m.seeds) > 1 for m in methods):
        notes.append(
            "With several seeds a cell is the mean ± the standard deviation over the seeds "
            "(sample sd); ranks and statistics use each dataset's mean over the seeds."
        )
    profiles = sorted({m.profile for m in methods})
    if len(profiles) > 1:
        notes.append(
            f"Profiles differ ({', '.join(profiles)}): the budgets are not the same, so the "
            "comparison is not like for like."
        )
    return notes


def to_markdown(table: pd.DataFrame, methods: Sequence[Method]) -> str:
    """The Table-2 view as a Markdown table (best per column in bold), with its notes."""
    chosen = compared_datasets(methods)
    best = best_cells(table)
    mean = _mean_header(chosen)
    header = ["method"]
    for d in chosen:
        header += [f"{d} AUC", f"{d} ACC"]
    header += [f"{mean} AUC", f"{mean} ACC", "rank AUC", "rank ACC"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, m in enumerate(methods):
        cells = [markdown_text(m.label + m.mark)]
        for column in value_columns(chosen):
            text = _cell(table, i, column, methods)
            cells.append(f"**{text}**" if i in best[column] else text)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines.append("")
    lines += [f"- {markdown_text(note)}" for note in _table_notes(table, methods)]
    return "\n".join(lines) + "\n"


#: What Markdown reads as markup inside a line: emphasis, code, links and images, GFM's
#: strikethrough, escapes; ``_`` only where it can open or close emphasis (``resnet18_28`` stays).
_MARKDOWN_INLINE = re.compile(r"[\\`*\[\]~]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
#: What starts a block at the beginning of a list item: a heading, a list, an ordered list.
_MARKDOWN_BLOCK = re.compile(r"^(#{1,6}|[-+]|[0-9]{1,9}[.)])(?= |$)")


def markdown_text(text: str) -> str:
    """``text`` (a method's name, a note naming one) as Markdown that shows it literally:
    HTML escaped (previewers render raw HTML), Markdown's markup characters backslash-escaped
    (a run named ``[x](https://...)`` was a link in a rendered table.md, ``*x*`` emphasis);
    a table cell's ``|`` is the caller's to escape."""
    text = _MARKDOWN_INLINE.sub(lambda found: "\\" + found[0], html.escape(text, quote=False))
    return _MARKDOWN_BLOCK.sub(lambda found: found[0][:-1] + "\\" + found[0][-1], text, count=1)


def html_table(table: pd.DataFrame, methods: Sequence[Method]) -> str:
    """The Table-2 view as an HTML ``<table>`` and its notes as a list (no page around them)."""
    chosen = compared_datasets(methods)
    best = best_cells(table)
    esc = html.escape
    head1 = ['<th rowspan="2">method</th>']
    head1 += [f'<th colspan="2">{esc(d)}</th>' for d in chosen]
    mean = "decathlon mean" if len(chosen) == len(DATASETS) else f"mean of {len(chosen)} datasets"
    head1 += [f'<th colspan="2">{mean}</th>', '<th colspan="2">mean rank</th>']
    head2 = ["<th>AUC</th><th>ACC</th>"] * (len(chosen) + 2)
    body = []
    for i, m in enumerate(methods):
        cells = [f"<td>{esc(m.label + m.mark)}</td>"]
        for column in value_columns(chosen):
            text = esc(_cell(table, i, column, methods))
            cells.append(f"<td><b>{text}</b></td>" if i in best[column] else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    notes = "".join(f"<li>{esc(n)}</li>" for n in _table_notes(table, methods))
    return (
        f"<table>\n<tr>{''.join(head1)}</tr>\n<tr>{''.join(head2)}</tr>\n"
        + "\n".join(body)
        + f"\n</table>\n<ul>{notes}</ul>\n"
    )


#: The table's style, shared by ``table.html`` and the report page.
TABLE_CSS = (
    "table{border-collapse:collapse;font-family:sans-serif;font-size:13px}"
    "td,th{border:1px solid #bbb;padding:3px 6px;text-align:right}"
    "td{white-space:nowrap}td:first-child{text-align:left}"
)


def to_html(table: pd.DataFrame, methods: Sequence[Method]) -> str:
    """The Table-2 view as a standalone HTML page (two header rows, best per column in bold)."""
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>decathlon comparison</title>\n"
        f"<style>{TABLE_CSS}</style></head><body>\n"
        + html_table(table, methods)
        + "</body></html>\n"
    )


def to_csv(table: pd.DataFrame) -> str:
    """The Table-2 view as CSV with :func:`table_columns` (full precision, empty when missing).

    A name that a spreadsheet would take for a formula (``=HYPERLINK(...)`` in a leaderboard
    from elsewhere) is written with a leading ``'``, as OWASP advises for CSV exports."""
    return inert(table).to_csv(index=False, lineterminator="\n", float_format="%.6g")


def inert(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every text cell that starts like a spreadsheet formula quoted by ``'``."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(
                lambda v: "'" + v if isinstance(v, str) and v[:1] in ("=", "+", "-", "@") else v
            )
    return out


def render_terminal(
    table: pd.DataFrame, methods: Sequence[Method], *, width: int | None = None, color: bool = False
) -> str:
    """The Table-2 view for the terminal, as text: test AUC, then test ACC, one method a line.

    Each metric's columns (datasets, mean, rank) are split over as many tables as it takes to
    fit ``width`` (the terminal's), so that no method name wraps: at 100 columns the ten datasets
    take two tables per metric. The best value per column is marked ``*`` (and bold when
    ``color``).
    """
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    chosen = compared_datasets(methods)
    best = best_cells(table)
    console = make_console(width, color)
    mean = _mean_header(chosen)

    def build(metric: str, columns: list[str], title: str) -> Table:
        rich_table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        rich_table.add_column("method", no_wrap=True)
        for column in columns:
            name = column.rsplit("_", 1)[0]
            header = {"decathlon": mean, "rank": "rank"}.get(name, SHORT.get(name, name))
            rich_table.add_column(header, justify="right", no_wrap=True)
        for i, m in enumerate(methods):
            cells = [escape(m.label + m.mark)]  # a name is text, not rich markup
            for column in columns:
                text = _cell(table, i, column, methods, sep="±")
                cells.append(f"[bold]{text}*[/bold]" if i in best[column] else text)
            rich_table.add_row(*cells)
        return rich_table

    for metric in METRICS:
        columns = [f"{d}_{metric}" for d in chosen] + [f"decathlon_{metric}", f"rank_{metric}"]
        chunks = _fit(console, partial(build, metric, title=""), columns)
        for k, chunk in enumerate(chunks):
            title = f"Test {metric.upper()}" + (f" ({k + 1}/{len(chunks)})" if k else "")
            if len(chunks) > 1 and not k:
                title += f" (1/{len(chunks)})"
            console.print(build(metric, chunk, title))
    for note in [*_table_notes(table, methods), "* best in column"]:
        console.print(wrap(note, console.width), markup=False, highlight=False)
    return console.export_text(styles=color)


def wrap(line: str, width: int, indent: str = "  ") -> str:
    """One note as lines of at most ``width`` characters, indented, continuation indented more."""
    return textwrap.fill(
        line,
        width=width,
        initial_indent=indent,
        subsequent_indent=indent + "  ",
        break_on_hyphens=False,
    )


def _fit(console: Any, build: Callable[[list[str]], Any], columns: list[str]) -> list[list[str]]:
    """Split ``columns`` into consecutive runs whose table fits the console's width."""
    from rich.measure import Measurement

    unbounded = console.options.update_width(100_000)

    def fits(chunk: list[str]) -> bool:
        return Measurement.get(console, unbounded, build(chunk)).maximum <= console.width

    chunks: list[list[str]] = []
    current: list[str] = []
    for column in columns:
        if current and not fits([*current, column]):
            chunks.append(current)
            current = [column]
        else:
            current = [*current, column]
    chunks.append(current)
    # Even out the runs (5 + 5 + ... reads better than 9 + 1) when the even runs fit too.
    if len(chunks) > 1:
        size = math.ceil(len(columns) / len(chunks))
        even = [columns[i : i + size] for i in range(0, len(columns), size)]
        if len(even) == len(chunks) and all(fits(chunk) for chunk in even):
            chunks = even
    return chunks


def make_console(width: int | None, color: bool) -> Any:
    from rich.console import Console

    if width is None:
        width = max(shutil.get_terminal_size((140, 24)).columns, 100)
    return Console(
        record=True,
        file=io.StringIO(),
        width=width,
        force_terminal=color,
        color_system="standard" if color else None,
        highlight=False,
    )
