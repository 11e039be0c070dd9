"""``compare --report report.html``: one self-contained page, opened in a real headless Chromium.

The page is made from real runs of the built-in baseline on the three real MedMNIST subsets
(one of them with two seeds) beside the 2021 paper's table. The browser is Debian's Chromium
driven by Playwright (``executable_path``; Playwright's own browser download is not used); it
runs offline-minded (no background networking, no component updates, no sync, a fresh profile).
Every request the page makes is recorded.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from decathlon import cli, compare
from decathlon.compare import DATASETS, METRICS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass(frozen=True)
class Report:
    path: Path
    table: pd.DataFrame  # the comparison table the page shows
    text: str  # what the command printed


@pytest.fixture(scope="module")
def report(real_baseline_runs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Report:
    out = tmp_path_factory.mktemp("report")
    text = compare.compare_command(
        real_baseline_runs, "v1", out, ["csv"], bootstrap=50, report=out / "report.html"
    )
    # The same table in memory (table.csv rounds to six digits, which may move a third decimal).
    table = compare.comparison_table(compare.collect(real_baseline_runs, "v1"))
    assert len(table) == len(pd.read_csv(out / "table.csv"))
    return Report(out / "report.html", table, text)


def chromium() -> str:
    """Debian's Chromium, or skip (fail under CI, where .ci/run installs it)."""
    found = shutil.which("chromium")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        found = None
    if not found:
        reason = "Chromium (Debian package 'chromium') or the playwright package is missing"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; under CI the browser test must run")
        pytest.skip(reason)
    return found


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium context with a fresh profile folder."""
    from playwright.sync_api import sync_playwright

    executable = chromium()
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


def numbers_of(table: pd.DataFrame) -> list[str]:
    """Every value of the comparison table as the page prints it."""
    out = []
    for _, row in table.iterrows():
        for column in [f"{d}_{m}" for d in DATASETS for m in METRICS] + [
            "decathlon_auc",
            "decathlon_acc",
        ]:
            value = row[column]
            if not math.isnan(value):
                sd = row[f"{column}_sd"]
                out.append(f"{value:.3f}" + ("" if math.isnan(sd) else f" ± {sd:.3f}"))
        for column in ("rank_auc", "rank_acc"):
            if not math.isnan(row[column]):
                out.append(f"{row[column]:.2f}")
    return out


def test_report_in_a_real_browser(
    report: Report, browser: Any, tmp_path: Path, http_server: tuple[str, Path]
) -> None:
    requests: list[str] = []
    browser.on("request", lambda request: requests.append(request.url))
    page = browser.new_page()
    page.goto(report.path.as_uri())
    page.wait_for_load_state("load")

    images = page.evaluate(
        "Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete,"
        " width: i.naturalWidth, src: i.src.slice(0, 22)}))"
    )
    # bars, train/val/test for AUC and ACC, and the two critical-difference diagrams
    assert len(images) == 5, images
    for image in images:
        assert image["complete"] and image["width"] > 0, image
        assert image["src"] == "data:image/png;base64,"
    assert any(i["alt"].startswith("Critical-difference diagram, test AUC") for i in images)

    text = page.inner_text("body")
    numbers = numbers_of(report.table)
    assert len(numbers) > 100
    missing = [n for n in numbers if n not in text]
    assert not missing, missing[:5]
    assert "0.9" in text and "seeds/baseline" in text and "paper_v1/automl_vision" in text

    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes().startswith(PNG_MAGIC)
    assert page.evaluate("document.body.scrollHeight") > 900  # the full page, not one screen

    # Served from 127.0.0.1 too: the page itself is the only request.
    base, served = http_server
    shutil.copy(report.path, served / "report.html")
    page.goto(f"{base}/report.html")
    page.wait_for_load_state("load")
    assert page.evaluate("Array.from(document.images).every(i => i.naturalWidth > 0)")

    outside = [
        url
        for url in requests
        if not url.startswith(("file://", "data:"))
        and urllib.parse.urlsplit(url).hostname != "127.0.0.1"
    ]
    assert outside == []
    assert [u for u in requests if not u.startswith("data:")] == [
        report.path.as_uri(),
        f"{base}/report.html",
    ]


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.urls += [v or "" for k, v in attrs if k in ("src", "href", "srcset", "action")]


def test_report_is_self_contained_with_provenance(
    report: Report, real_baseline_runs: list[Path]
) -> None:
    html_text = report.path.read_text()
    parser = _Links()
    parser.feed(html_text)
    assert parser.urls and all(u.startswith("data:image/png;base64,") for u in parser.urls)
    assert not {"script", "link", "iframe", "object", "embed"} & set(parser.tags)
    assert "url(" not in html_text and "@import" not in html_text
    assert f"\n  {report.path}\n" in report.text

    for run in real_baseline_runs:
        record = json.loads((run / "config.json").read_text())
        assert record["budgets_file"]["sha256"] in html_text
        assert f"numpy {record['versions']['numpy']}" in html_text
        assert record["host"]["cpu"] in html_text
    assert "yes: every data file had its published MD5" in html_text
    assert "the harness&#x27;s own" in html_text  # the baseline's environment
    assert "<dt>profile</dt><dd>quick</dd>" in html_text
    # The published table is one provenance block naming its seven methods.
    assert html_text.count("<h3>paper_v1: resnet18_28, resnet18_224") == 1


def test_report_cli_and_an_unwritable_path(
    real_baseline_runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "out" / "page.html"
    args = ["compare", str(real_baseline_runs[0]), "--datasets", "breastmnist,retinamnist"]
    assert cli.main([*args, "--bootstrap", "0", "--report", str(target)]) == 0
    assert str(target) in capsys.readouterr().out
    page = target.read_text()
    assert "mean of 2 datasets" in page and "on 2 datasets (retinamnist, breastmnist)" in page

    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    code = cli.main([*args, "--bootstrap", "0", "--report", str(blocker / "page.html")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"error: {blocker / 'page.html'}: cannot write the report")
    assert blocker.read_text() == "keep me"
