"""`dlops report`: fast tests on run dirs written in the contract's format, and one end-to-end
test on real sweeps and a killed run (`@pytest.mark.slow`)."""

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import fast, report, report_json

from dlops.rundir.summary import read as read_summary

ROOT = Path(__file__).resolve().parents[2]


# ---- end to end: real sweeps, a killed run -------------------------------------------------

def train(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A seed x model sweep, a sweep with a failed job, and a run killed after one epoch."""
    cwd = tmp_path_factory.mktemp("e2e")
    # five training batches an epoch: enough to rank the CNN jobs, a third of the time
    sweep = train(["-m", "seed=1,2", "model=mlp,cnn", *fast(2), "+trainer.limit_train_batches=5"], cwd)
    assert sweep.wait(timeout=300) == 0, sweep.stderr.read()
    failing = train(["-m", "model.optimizer.lr=-1", "trainer.max_epochs=2"], cwd)
    failing.wait(timeout=120)
    killed = train([*fast(50), "name='<script>alert(1)</script>'"], cwd)
    deadline = time.time() + 120
    while time.time() < deadline and killed.poll() is None:
        summaries = list((cwd / "outputs").glob("*/*/summary.json"))
        if summaries and (read_summary(summaries[0].parent) or {}).get("epochs_completed", 0) >= 1:
            break
        time.sleep(0.1)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    return cwd


@pytest.mark.slow
def test_end_to_end_sweep_report_matches_summaries(trained: Path, capsys) -> None:
    (sweep_dir,) = [p for p in (trained / "multirun").glob("*/*")
                    if sum(d.is_dir() and d.name.isdigit() for d in p.iterdir()) == 4]
    summaries = {str(p.parent): json.loads(p.read_text()) for p in sweep_dir.glob("*/summary.json")}
    doc = report_json(str(sweep_dir), capsys=capsys)
    rows = doc["runs"]
    assert len(rows) == 4 and doc["varying_overrides"] == ["seed", "model"]
    assert [r["best_val_loss"] for r in rows] == sorted(s["best_metric"]
                                                        for s in summaries.values())
    for row in rows:
        summary = summaries[row["run_dir"]]
        assert row["status"] == "completed" and row["epochs"] == 2
        assert row["final_val_loss"] == summary["last_metrics"]["val_loss"]
        assert {k: row[k] for k in summary["test_metrics"]} == summary["test_metrics"]
    code, out, _ = report(str(sweep_dir), capsys=capsys)
    assert code == 0 and len([line for line in out.splitlines() if str(sweep_dir) in line]) == 4

    groups = report_json(str(sweep_dir), "--group-by", "model", capsys=capsys)["groups"]
    assert sorted(g["model"] for g in groups) == ["cnn", "mlp"]
    for group in groups:
        best = [s["best_metric"] for s in summaries.values() if f"model={group['model']}"
                in s["overrides"]]
        assert group["n"] == 2
        assert group["best_val_loss_mean"] == pytest.approx(statistics.fmean(best), rel=1e-12)
        assert group["best_val_loss_std"] == pytest.approx(statistics.stdev(best), rel=1e-12)
    code, out, _ = report(str(sweep_dir), "--group-by", "model", capsys=capsys)
    table = [line for line in out.splitlines() if line.startswith("│")]
    assert len(table) == 2 and all(" ± " in line for line in table)


@pytest.mark.slow
def test_end_to_end_failed_and_killed_runs_appear_in_html(trained: Path, tmp_path: Path,
                                                          capsys) -> None:
    paths = [str(trained / "multirun"), str(trained / "outputs")]
    rows = report_json(*paths, capsys=capsys)["runs"]
    assert sorted(r["status"] for r in rows) == ["completed"] * 4 + ["failed", "killed"]
    (killed,) = [r for r in rows if r["status"] == "killed"]
    assert killed["epochs"] >= 1 and killed["max_epochs"] == 50
    assert killed["best_val_loss"] == read_summary(killed["run_dir"])["best_metric"]
    html_path = tmp_path / "report.html"
    code, out, err = report(*paths, "--html", str(html_path), capsys=capsys)
    assert code == 0, err
    assert "killed" in out and "failed" in out
    page = html_path.read_text()
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("data:image/png;base64,") >= 1 and "https://" not in page
    assert "model.optimizer.lr must be a number &gt; 0" in page
