"""One self-contained HTML page to share a comparison: ``compare --report report.html``.

The page holds the comparison table, the statistics, the bootstrap intervals, the plots and the
critical-difference diagrams (PNG images embedded as ``data:`` URIs), and each run's provenance
from its ``config.json`` and leaderboard: versions, the budgets file's hash, the profile, whether
the data files were the published ones, the adapter's environment and the host. It has no
script, no stylesheet, font or image from elsewhere: a browser opening it offline makes no
request but for the file itself.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

import decathlon
from decathlon import compare, files, rundir
from decathlon.compare import Method, Significance
from decathlon.errors import LeaderboardError

log = logging.getLogger(__name__)

_CSS = (
    compare.TABLE_CSS + "body{font-family:sans-serif;margin:24px;max-width:1400px;color:#222}"
    "h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ccc}"
    "h3{font-size:15px}img{max-width:100%;display:block;margin:8px 0 16px}"
    "dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px;font-size:13px}"
    "dt{font-weight:bold}dd{margin:0;word-break:break-all}"
    ".stats li,.notes li{margin:3px 0}code{font-size:12px}"
)


def data_uri(png: bytes) -> str:
    """A PNG as a ``data:`` URI, for an ``<img src>`` that needs no other file."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def plots(methods: Sequence[Method], sigs: Sequence[Significance]) -> list[tuple[str, bytes]]:
    """The comparison's figures as (caption, PNG bytes): bars, train/val/test views, CD diagrams."""
    figures: list[tuple[str, bytes]] = []
    with tempfile.TemporaryDirectory(prefix="decathlon-report-") as tmp:
        folder = Path(tmp)
        made = [("Test AUC and ACC per dataset", compare.plot_bars(methods, folder / "bars.png"))]
        for metric in compare.METRICS:
            made.append(
                (
                    f"{metric.upper()} on the train, val and test splits",
                    compare.plot_splits(methods, folder / f"splits_{metric}.png", metric),
                )
            )
        for sig in sigs:
            made.append(
                (
                    f"Critical-difference diagram, test {sig.metric.upper()} ({sig.test})",
                    compare.plot_cd(sig, folder / f"cd_{sig.metric}.png"),
                )
            )
        for caption, path in made:
            if path is not None:
                figures.append((caption, path.read_bytes()))
    return figures


def provenance(method: Method) -> dict[str, str]:
    """What a method's results came from, as label -> text, for the page's provenance section.

    From the run's ``config.json`` (when the leaderboard sits in a run directory) and the
    leaderboard's own rows; a published reference table names its file.
    """
    facts: dict[str, str] = {"leaderboard": str(method.source), "profile": method.profile}
    facts["seeds"] = ", ".join(map(str, method.seeds))
    rows = _rows_of(method)
    verified = sorted({str(v).lower() for v in rows.get("data_verified", []) if str(v)})
    if method.run_id in compare.REFERENCE_LABELS:
        facts["source"] = "published table (see decathlon/leaderboards/README.md)"
    elif verified:
        facts["data verified"] = (
            "yes: every data file had its published MD5"
            if verified == ["true"]
            else "NO: some data files did not have the published MD5 (--allow-unverified,"
            " or generated files under another metadata file such as DECATHLON_INFO)"
            if "false" in verified
            else ", ".join(verified)
        )
    versions = sorted({str(v) for v in rows.get("adapter_version", []) if str(v)})
    if versions:
        facts["adapter version"] = ", ".join(versions)
    record = _config_record(method)
    if record is None:
        return facts
    try:
        _config_facts(record, facts)
    except (AttributeError, TypeError, ValueError):  # a config.json edited, or from elsewhere
        facts["config.json"] = "malformed: its fields are not of the types the harness writes"
    return facts


def _config_facts(record: dict[str, Any], facts: dict[str, str]) -> None:
    """What a run's ``config.json`` says, added to ``facts``; raises on fields of other types."""
    config = record.get("config", {})
    adapter = record.get("adapter", {})
    budgets = record.get("budgets_file", {})
    host = record.get("host", {})
    facts["started"] = str(record.get("started_at", ""))
    facts["versions"] = ", ".join(f"{k} {v}" for k, v in (record.get("versions") or {}).items())
    if budgets:
        facts["budgets file"] = f"{budgets.get('path', '')} (sha256 {budgets.get('sha256', '')})"
    if config:
        facts["scale factor"] = str(config.get("scale_factor", ""))
        facts["data"] = str(config.get("data_dir") or "default folder")
        if config.get("data_dir_from"):
            facts["data"] += f" (from {config['data_dir_from']})"
        if config.get("info_path"):
            origin = config.get("info_from")
            facts["dataset metadata"] = str(config["info_path"]) + (
                f" (from {origin})" if origin else ""
            )
    facts["adapter options"] = json.dumps(adapter.get("options", {}), sort_keys=True)
    facts["plugin"] = f"{adapter.get('plugin', '')} ({adapter.get('run', '')})"
    environment = adapter.get("environment")
    facts["environment"] = (
        "the harness's own"
        if not environment
        else f"Python {environment.get('python', '?')}: "
        + " ".join(environment.get("requirements") or ())
    )
    built = adapter.get("environment_built")
    if built:
        facts["environment built"] = json.dumps(built, sort_keys=True)
    facts["device"] = str(record.get("device", ""))
    if host:
        gpus = ", ".join(host.get("gpus") or ()) or "none"
        facts["host"] = (
            f"{host.get('platform', '')}; {host.get('cpu', '')}, {host.get('cpu_count', '?')} "
            f"cores, {host.get('memory_gb', '?')} GB; GPUs: {gpus}"
        )


def _config_record(method: Method) -> dict[str, Any] | None:
    if method.run_dir is None:
        return None
    record = rundir.read_config(method.run_dir)  # None when missing or unreadable
    return record if isinstance(record, dict) else None


def _rows_of(method: Method) -> dict[str, list[Any]]:
    try:
        board = compare.read_leaderboard(method.source)
    except LeaderboardError:
        return {}
    rows = board.rows
    mine = rows[(rows["run_id"] == method.run_id) & (rows["adapter"] == method.adapter)]
    return {column: list(mine[column]) for column in mine.columns}


def render(
    methods: Sequence[Method],
    table: pd.DataFrame,
    sigs: Sequence[Significance],
    ci: pd.DataFrame | None = None,
    ci_notes: Sequence[str] = (),
) -> str:
    """The report page as one HTML string (see the module docstring)."""
    esc = html.escape
    chosen = compare.compared_datasets(methods)
    over = (
        "all ten datasets"
        if len(chosen) == len(compare.DATASETS)
        else f"{len(chosen)} datasets ({', '.join(chosen)})"
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>decathlon comparison</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>MedMNIST decathlon: comparison</h1>",
        f"<p>{len(methods)} methods on {esc(over)}. Written {esc(time.strftime('%Y-%m-%d %H:%M'))}"
        f" by decathlon {esc(decathlon.__version__)}.</p>",
        "<h2>Test AUC and ACC</h2>",
        compare.html_table(table, methods),
        "<h2>Statistics</h2>",
        '<ul class="stats">'
        + "".join(
            f"<li>{esc(line)}</li>" for line in dict.fromkeys(x for s in sigs for x in s.lines)
        )
        + "</ul>",
    ]
    if ci is not None and not ci.empty:
        rows = "".join(
            f"<tr><td>{esc(r.method)}</td><td>{esc(r.dataset)}</td><td>{r.auc:.3f}</td>"
            f"<td>{r.ci_low:.3f}</td><td>{r.ci_high:.3f}</td><td>{int(r.n_boot)}</td></tr>"
            for r in ci.itertuples()
        )
        parts += [
            "<h3>Bootstrap 95% intervals of test AUC (images resampled)</h3>",
            "<table><tr><th>method</th><th>dataset</th><th>AUC</th><th>low</th><th>high</th>"
            f"<th>resamples</th></tr>{rows}</table>",
        ]
    if ci_notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{esc(n)}</li>" for n in ci_notes))
        parts.append("</ul>")
    parts.append("<h2>Plots</h2>")
    for caption, png in plots(methods, sigs):
        parts.append(f"<h3>{esc(caption)}</h3>")
        parts.append(f'<img alt="{esc(caption)}" src="{data_uri(png)}">')
    parts.append("<h2>Provenance</h2>")
    groups: dict[tuple[str, str], list[Method]] = {}
    for m in methods:  # one block per run (a published table holds several methods)
        groups.setdefault((m.run_id, str(m.source)), []).append(m)
    for group in groups.values():
        first = group[0]
        title = (
            first.label
            if len(group) == 1
            else f"{first.run_label}: {', '.join(m.adapter for m in group)}"
        )
        parts.append(f"<h3>{esc(title)}</h3><dl>")
        parts += [f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in provenance(first).items()]
        parts.append("</dl>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def refuse_unwritable(path: Path) -> None:
    """Raise :class:`LeaderboardError` in one line when the report cannot be written to
    ``path`` (a folder, or in a folder that cannot be made or written). ``compare`` calls it
    before reading, testing and resampling anything, which can take minutes."""
    path = Path(path)
    folder = path.parent
    why = f"{path} is a folder" if path.is_dir() else files.why_not_writable(folder, make=False)
    if why:
        raise LeaderboardError(f"{path}: cannot write the report ({why}); choose another --report")


def write(
    path: Path,
    methods: Sequence[Method],
    table: pd.DataFrame,
    sigs: Sequence[Significance],
    ci: pd.DataFrame | None = None,
    ci_notes: Sequence[str] = (),
) -> Path:
    """Write the report page to ``path`` (its folder is made); returns ``path``.

    Raises :class:`LeaderboardError` in one line when the file cannot be written.
    """
    path = Path(path)
    page = render(methods, table, sigs, ci, ci_notes)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        files.write_text(path, page)
    except OSError as exc:
        raise LeaderboardError(
            f"{path}: cannot write the report ({exc.strerror or exc}); choose another --report"
        ) from None
    log.info("report written to %s", path)
    return path
