"""``compare`` and ``show``: what the command line calls."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from decathlon import files, rundir
from decathlon.compare.base import CI_COLUMNS, FORMAT_ALIASES, FORMAT_FILES, LabelsFn
from decathlon.compare.bootstrap import bootstrap_table, render_ci
from decathlon.compare.methods import Method, by_size, collect, methods_of, select_size
from decathlon.compare.stats import Significance, significance
from decathlon.compare.table import (
    comparison_table,
    fmt,
    inert,
    make_console,
    render_terminal,
    to_csv,
    to_html,
    to_markdown,
    wrap,
)
from decathlon.errors import LeaderboardError, did_you_mean
from decathlon.leaderboard import (
    DATASETS,
    METRICS,
    SPLITS,
    Leaderboard,
    read_leaderboard,
    reference_path,
)


def compare_command(
    paths: Sequence[Path],
    reference: str | None = None,
    out: Path | None = None,
    formats: Iterable[str] = (),
    plots: bool = False,
    *,
    bootstrap: int = 1000,
    labels_fn: LabelsFn | None = None,
    width: int | None = None,
    color: bool = False,
    datasets: Iterable[str] | None = None,
    report: Path | None = None,
    size: int | None = None,
) -> str:
    """``decathlon compare``: the table, the statistics and the bootstrap intervals, as text.

    ``paths`` are leaderboard CSVs or run directories; ``reference`` (``v1``/``v2``/``plus``)
    adds a published table; ``datasets`` restricts everything to those datasets. Methods at
    different image sizes are never averaged or ranked together: the text holds one section per
    size, and ``size`` keeps only that one. With ``formats`` (``md``, ``html``, ``csv``) or
    ``plots`` the files go to ``out`` (default ``./comparison``): table.md / table.html /
    table.csv (and bootstrap_ci.csv), bars.png, splits_auc.png / splits_acc.png, cd_auc.png /
    cd_acc.png; files need a single size (else a one-line error naming ``--size``). ``bootstrap``
    is the number of resamples (0 turns the intervals off). ``report`` writes the one-page HTML
    report there (:mod:`decathlon.report`), also for a single size. Returns the text for the CLI
    to print.
    """
    wanted = _formats(formats)
    folder = Path(out) if out is not None else Path("comparison")
    targets = [folder / FORMAT_FILES[fmt] for fmt in wanted]
    if "csv" in wanted:
        targets.append(folder / "bootstrap_ci.csv")
    _refuse_overwriting_inputs(paths, targets, report)
    if report is not None:  # before the statistics, the bootstrap and the plots
        from decathlon import report as report_module

        report_module.refuse_unwritable(Path(report))
    if wanted or plots:  # so is --out
        why = files.why_not_writable(folder, make=False) or next(
            (f"{target} is a folder" for target in targets if target.is_dir()), None
        )
        if why:
            raise LeaderboardError(
                f"{folder}: cannot write the comparison's files ({why}); choose another --out"
            )
    everything = collect(list(paths), reference, datasets)
    methods = select_size(everything, size)
    if reference and size is not None:
        _refuse_a_reference_without_the_size(everything, reference, size)
    groups = by_size(methods)
    if len(groups) > 1 and (wanted or plots or report is not None):
        raise LeaderboardError(
            f"the inputs hold image sizes {', '.join(map(str, groups))}, and a table never mixes"
            " sizes: pass --size N to write files for one of them"
        )
    parts: list[str] = []
    for group_size, group in groups.items():
        if len(groups) > 1:
            parts.append(f"=== Image size {group_size}x{group_size} ===")
        table, sigs, ci, notes, text = _compare_group(
            group, bootstrap=bootstrap, labels_fn=labels_fn, width=width, color=color
        )
        parts.extend(text)

    written: list[Path] = []
    if wanted or plots:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for fmt in wanted:
                target = folder / FORMAT_FILES[fmt]
                render = {"md": to_markdown, "html": to_html}.get(fmt)
                files.write_text(target, render(table, methods) if render else to_csv(table))
                written.append(target)
                if fmt == "csv" and not ci.empty:
                    ci_path = folder / "bootstrap_ci.csv"
                    files.write_text(
                        ci_path,
                        inert(ci).to_csv(index=False, lineterminator="\n", float_format="%.6g"),
                    )
                    written.append(ci_path)
        except OSError as exc:
            raise LeaderboardError(
                f"{folder}: cannot write the comparison's files ({exc.strerror or exc});"
                " choose another --out"
            ) from None
        if plots:
            from decathlon.compare.plots import plot_bars, plot_cd, plot_splits

            try:
                written.append(plot_bars(methods, folder / "bars.png"))
                for metric in METRICS:
                    made = plot_splits(methods, folder / f"splits_{metric}.png", metric)
                    if made:
                        written.append(made)
                for sig in sigs:
                    made = plot_cd(sig, folder / f"cd_{sig.metric}.png")
                    if made:
                        written.append(made)
            except OSError as exc:
                raise LeaderboardError(
                    f"{folder}: cannot write the plots ({exc.strerror or exc});"
                    " choose another --out"
                ) from None
    if report is not None:
        from decathlon import report as report_module

        written.append(report_module.write(Path(report), methods, table, sigs, ci, notes))
    if written:
        parts.append("Wrote:\n" + "\n".join(f"  {p}" for p in written))
    return "\n\n".join(parts) + "\n"


def _refuse_a_reference_without_the_size(
    methods: Sequence[Method], reference: str, size: int
) -> None:
    """One line when ``--reference`` has no results at ``--size``: the published rows of the
    other sizes are left out (never compared across sizes), and a table without them would
    pass for a comparison with them."""
    published = reference_path(reference).resolve()
    sizes = sorted({m.size for m in methods if Path(m.source).resolve() == published})
    if sizes and size not in sizes:
        raise LeaderboardError(
            f"--reference {reference} has published results at image size"
            f" {', '.join(map(str, sizes))} only, none at {size} to compare with: leave"
            " --reference out, or pass --reference plus (28, 64, 128 and 224)"
        )


def _refuse_overwriting_inputs(
    paths: Sequence[Path], targets: Sequence[Path], report: Path | None
) -> None:
    """One line, before anything is read or written, when an output would replace an input
    (``compare --report a.csv b.csv`` takes ``a.csv`` as the report's name) or ``--report``
    names an existing file that is not an HTML page."""
    inputs = {
        (Path(p) / rundir.LEADERBOARD if Path(p).is_dir() else Path(p)).resolve(): Path(p)
        for p in paths
    }
    outputs = [(Path(t), "--out", "folder") for t in targets]
    if report is not None:
        outputs.append((Path(report), "--report", "file (report.html)"))
    for target, option, other in outputs:
        source = inputs.get(target.resolve())
        if source is not None:
            raise LeaderboardError(
                f"{option} {target} would overwrite the input {source}; name another {other}"
            )
    if (
        report is not None
        and Path(report).is_file()
        and Path(report).suffix.lower()
        not in (
            ".html",
            ".htm",
        )
    ):
        raise LeaderboardError(
            f"--report {report}: that file exists and is not an HTML page; the report is one"
            " (name a .html file)"
        )


def _compare_group(
    methods: Sequence[Method],
    *,
    bootstrap: int,
    labels_fn: LabelsFn | None,
    width: int | None,
    color: bool,
) -> tuple[pd.DataFrame, list[Significance], pd.DataFrame, list[str], list[str]]:
    """Table, statistics, bootstrap intervals and their notes for methods at one image size,
    and the text."""
    table = comparison_table(methods)
    parts = [render_terminal(table, methods, width=width, color=color).rstrip()]

    sigs = [significance(methods, metric) for metric in METRICS]
    lines = [line for s in sigs for line in s.lines]
    unique = list(dict.fromkeys(lines))  # both metrics may be skipped for the same reason
    columns = width or max(shutil.get_terminal_size((140, 24)).columns, 100)
    parts.append("Statistics:\n" + "\n".join(wrap(line, columns) for line in unique))

    ci = pd.DataFrame(columns=CI_COLUMNS)
    notes: list[str] = []
    if bootstrap > 0:
        ci, notes = bootstrap_table(methods, labels_fn, n_boot=bootstrap)
        lines = []
        if not ci.empty:
            lines.append("Bootstrap 95% CI of test AUC (images resampled):\n" + render_ci(ci))
        lines += [f"  {n}" for n in notes]
        if lines:
            parts.append("\n".join(lines))
    return table, sigs, ci, notes, parts


def show_command(
    run: Path, *, width: int | None = None, color: bool = False, size: int | None = None
) -> str:
    """``decathlon show RUN``: one run's Table-2 view (one per image size; ``size`` keeps one),
    then every row by split with its status."""
    board = read_leaderboard(Path(run))
    methods = select_size(methods_of(board), size)
    if size is not None:
        board.rows = board.rows[board.rows["size"] == size].reset_index(drop=True)
    parts = []
    for group in by_size(methods).values():
        table = comparison_table(group)
        parts.append(render_terminal(table, group, width=width, color=color).rstrip())
    parts.append(_render_rows(board, width=width, color=color).rstrip())
    return "\n\n".join(parts) + "\n"


def _render_rows(board: Leaderboard, *, width: int | None, color: bool) -> str:
    """Every row of a run, one line per (adapter, seed, dataset); fits 100 columns, the reason
    wrapping in the room left (scores under two-line headers: ``train`` over ``AUC``)."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    console = make_console(width, color)
    sizes_shown = "/".join(str(s) for s in sorted(set(board.rows["size"])))
    table = Table(
        title=escape(f"{board.path} (profile {board.profile}, size {sizes_shown})"),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    rows = board.rows
    several = rows["adapter"].nunique() > 1
    if several:
        table.add_column("adapter", no_wrap=True)
    sizes = rows["size"].nunique() > 1
    if sizes:
        table.add_column("size", no_wrap=True, justify="right")
    table.add_column("seed", no_wrap=True, justify="right")
    table.add_column("dataset", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for metric in METRICS:
        for split in SPLITS:
            table.add_column(f"{split}\n{metric.upper()}", justify="right", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    table.add_column("reason", overflow="fold", ratio=1, min_width=12)
    keys = ["run_id", "adapter", "size", "seed"]
    for (_, adapter, size, seed), group in rows.groupby(keys, sort=False):
        # Names and reasons are text from the file, not rich markup ("[/data/x]" in a reason).
        lead = ([escape(str(adapter))] if several else []) + ([str(size)] if sizes else [])
        for dataset in DATASETS:
            cell = group[group["dataset"] == dataset].set_index("split")
            if cell.empty:
                table.add_row(*lead, str(seed), dataset, "not run")
                continue
            status = cell.loc["test", "status"] if "test" in cell.index else "no test row"
            values = [
                fmt(metric, cell.loc[split, metric]) if split in cell.index else ""
                for metric in METRICS
                for split in SPLITS
            ]
            elapsed = cell.loc["test", "elapsed_s"] if "test" in cell.index else ""
            try:
                elapsed = f"{float(elapsed):.0f}s"
            except ValueError:
                pass
            reasons = sorted({r for r in cell["reason"] if r})
            reason = escape("; ".join(reasons))
            table.add_row(*lead, str(seed), dataset, status, *values, elapsed, reason)
    console.print(table)
    return console.export_text(styles=color)


def _formats(formats: Iterable[str]) -> list[str]:
    out: list[str] = []
    for raw in formats:
        fmt = FORMAT_ALIASES.get(raw.lower().lstrip("."), raw.lower().lstrip("."))
        if fmt not in FORMAT_FILES:
            raise LeaderboardError(
                f"unknown format '{raw}' (choose md, html or csv)" + did_you_mean(raw, FORMAT_FILES)
            )
        if fmt not in out:
            out.append(fmt)
    return out
