"""`dlops report --html` opened in a real headless Chromium from file://, with the network off.

Needs Debian's `chromium` (`apt-get install chromium`; `.ci/run` installs it) and the `playwright`
Python package (the dev extra) to drive it; Playwright's own browser downloads are never used.
Skipped, with the reason, where either is missing.
"""

import importlib.util
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers import write_run

from dlops.cli import main

# what a root user in a container needs for a headless Chromium that reaches nothing on its own
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    """The system Chromium; where it cannot be had, skip saying why (fail in CI, which installs it)."""
    missing = None
    if importlib.util.find_spec("playwright") is None:
        missing = "the playwright package is not installed (pip install -e '.[dev]')"
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        missing = missing or "no Chromium on this machine: apt-get install chromium (.ci/run does, as root)"
    if missing and os.environ.get("CI") == "true":
        pytest.fail(f"the browser test must run in CI: {missing}")
    if missing:
        pytest.skip(missing)
    return path


def png(path: Path, title: str) -> None:
    """A real PNG drawn by matplotlib, as the evaluation callback writes them."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(2, 2))
    figure.subplots().imshow([[5, 1], [2, 7]], cmap="Blues")
    figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=50)


@pytest.fixture
def report_page(tmp_path: Path) -> Path:
    """A sweep of three runs (one failed, one named with markup) reported as HTML."""
    sweep = tmp_path / "multirun" / "2026-01-01" / "10-00-00"
    write_run(sweep / "0", ["seed=1", "model=mlp"], [0.5, 0.3])
    write_run(sweep / "1", ["seed=1", "model=cnn", "name=<b>x</b>"], [0.4, 0.2])
    write_run(sweep / "2", ["seed=2", "model=cnn"], [], status="failed")
    for job in ("0", "1"):
        png(sweep / job / "plots" / "confusion_matrix.png", f"cm {job}")
        png(sweep / job / "plots" / "roc.png", f"roc {job}")
    page = tmp_path / "report.html"
    assert main(["report", str(sweep), "--metric", "val_loss", "--metric", "train_loss",
                 "--html", str(page)]) == 0
    return page


@contextmanager
def opened(page_file: Path, profile: Path) -> Iterator[tuple[Any, list[str], list[str]]]:
    """`page_file` open in a fresh headless Chromium with the network off; also yields the console
    errors and the URLs requested, as they come."""
    from playwright.sync_api import sync_playwright

    executable = chromium()
    errors: list[str] = []
    fetched: list[str] = []
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=executable, args=CHROMIUM_FLAGS, headless=True, offline=True)
        try:
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: fetched.append(r.url))
            page.goto(page_file.as_uri(), wait_until="load")
            yield page, errors, fetched
        finally:
            context.close()


def test_html_report_renders_in_chromium_offline_with_every_image_and_table(report_page: Path,
                                                                           tmp_path: Path) -> None:
    with opened(report_page, tmp_path / "profile") as (page, errors, fetched):
        images = page.eval_on_selector_all(
            "img", "els => els.map(i => ({alt: i.alt, done: i.complete, width: i.naturalWidth}))")
        tables = page.eval_on_selector_all(
            "table", "els => els.map(t => ({head: t.tHead.innerText, rows: t.tBodies[0].rows.length}))")
        headings = page.eval_on_selector_all("h2, h3", "els => els.map(h => h.innerText)")
        bold = page.eval_on_selector_all("b", "els => els.length")
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    assert errors == []  # no console errors: no blocked resource, no script error
    assert fetched == [report_page.as_uri()]  # the page alone: images are inline
    # two learning curves, and a confusion matrix and a ROC for each of the two runs with plots
    assert [i["alt"] for i in images] == ["val_loss", "train_loss", "confusion matrix", "ROC",
                                          "confusion matrix", "ROC"]
    assert all(i["done"] and i["width"] > 0 for i in images), images  # every image decoded
    assert tables[0]["rows"] == 3 and "best_val_loss" in tables[0]["head"]  # the leaderboard
    assert any("model" in t["head"] for t in tables[1:])  # the groups
    assert "Learning curves" in headings and bold == 0  # a name with markup stays text
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000


def test_clicking_a_column_header_sorts_the_table_in_chromium(report_page: Path, tmp_path: Path) -> None:
    with opened(report_page, tmp_path / "profile") as (page, errors, _):
        leaderboard = page.locator("table").first

        def column(name: str) -> list[str]:
            index = leaderboard.locator("th").all_inner_texts().index(name)
            return [row.locator("td").nth(index).inner_text()
                    for row in leaderboard.locator("tbody tr").all()]

        def click(name: str) -> None:
            leaderboard.locator("th", has_text=name).first.click()

        click("run_dir")  # away from the ranking by best_val_loss: job 0, 1, 2
        by_dir = column("best_val_loss")
        click("best_val_loss")
        ascending = column("best_val_loss")
        click("best_val_loss")
        descending = column("best_val_loss")
        sort_state = leaderboard.locator("th[aria-sort]").all_inner_texts()
        click("model")
        models = column("model")
    assert errors == []  # the script ran under the page's CSP (its hash), without errors
    assert by_dir == ["0.3000", "0.2000", "-"]
    assert ascending == ["0.2000", "0.3000", "-"]  # as numbers; no value last
    assert descending == ["0.3000", "0.2000", "-"]  # reversed; no value still last
    assert [s.rstrip(" ▲▼") for s in sort_state] == ["best_val_loss"]
    assert models == ["cnn", "cnn", "mlp"]
