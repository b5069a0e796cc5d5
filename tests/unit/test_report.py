"""`dlops report`: fast tests on run dirs written in the contract's format, and one end-to-end
test on real sweeps and a killed run (`@pytest.mark.slow`)."""

import csv
import io
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import report, report_json, write_run

from dlops.readers.discover import find_run_dirs, load_run
from dlops.readers.report_sort import script_source
from dlops.rundir.liveness import process_alive
from dlops.rundir.summary import read as read_summary

ROOT = Path(__file__).resolve().parents[2]


def test_finds_run_dirs_recursively_and_tolerates_odd_folders(tmp_path: Path) -> None:
    write_run(tmp_path / "outputs" / "2026-01-01" / "10-00-00", ["seed=1"], [0.5])
    write_run(tmp_path / "multirun" / "d" / "t" / "10", ["seed=10"], [0.5])
    write_run(tmp_path / "multirun" / "d" / "t" / "2", ["seed=2"], [0.5])
    (tmp_path / "multirun" / "d" / "empty").mkdir()
    (tmp_path / "multirun" / "d" / "t" / "2" / "checkpoints" / "nested").mkdir(parents=True)
    write_run(tmp_path / "multirun" / "d" / "t" / "2" / "wandb" / "inner", ["x=1"], [0.1])
    found = find_run_dirs([tmp_path, tmp_path / "multirun"])  # overlapping paths: once each
    names = [p.relative_to(tmp_path.resolve()).as_posix() for p in found]
    assert names == ["multirun/d/t/2", "multirun/d/t/10", "outputs/2026-01-01/10-00-00"]


def test_reads_older_runs_without_summary_and_broken_summaries(tmp_path: Path, capsys) -> None:
    write_run(tmp_path / "old", ["seed=1"], [0.5, 0.4], summary=False)
    write_run(tmp_path / "broken", ["seed=2"], [0.3])
    (tmp_path / "broken" / "summary.json").write_text('{"status": "compl')  # half a file
    (tmp_path / "hydra_only" / ".hydra").mkdir(parents=True)  # died before writing anything
    old = load_run(tmp_path / "old")
    assert (old.status, old.overrides, old.epochs) == ("unknown", {"seed": "1"}, 2)
    assert old.last_metrics["val_loss"] == 0.4 and old.test_metrics["test_acc"] == 0.6
    doc = report_json(str(tmp_path), capsys=capsys)
    rows = {Path(r["run_dir"]).name: r for r in doc["runs"]}
    assert set(rows) == {"old", "broken", "hydra_only"}
    assert rows["broken"]["best_val_loss"] == 0.3  # from its CSV
    assert rows["old"]["best_val_loss"] == 0.4 and rows["old"]["final_val_loss"] == 0.4
    assert rows["hydra_only"]["status"] == "unknown" and rows["hydra_only"]["best_val_loss"] is None


def test_leaderboard_shows_varying_overrides_sorted_by_monitor(sweep: Path, capsys) -> None:
    doc = report_json(str(sweep), capsys=capsys)
    rows = doc["runs"]
    assert doc["varying_overrides"] == ["seed", "model"]
    assert doc["shared_overrides"] == {"trainer.max_epochs": "2"}
    assert [r["best_val_loss"] for r in rows] == [0.2, 0.26, 0.3, 0.34, None]
    assert [r["status"] for r in rows][-1] == "failed"  # failed runs stay, at the bottom
    for row in rows:
        summary = read_summary(row["run_dir"])
        assert row["best_val_loss"] == summary["best_metric"]
        assert row["test_acc"] == summary["test_metrics"].get("test_acc")
        assert row["duration_s"] == summary["duration_s"]
        assert "trainer.max_epochs" not in row
    code, out, _ = report(str(sweep), capsys=capsys)  # the rich table, in the same order
    assert code == 0
    lines = [line for line in out.splitlines() if "multirun" in line]
    assert [line.split("│")[-2].strip()[-1] for line in lines] == ["2", "3", "0", "1", "4"]
    assert "failed" in lines[-1] and "trainer.max_epochs=2" in out


def test_sort_metric_and_filter_options(sweep: Path, capsys) -> None:
    rows = report_json(str(sweep), "--metric", "val_acc", capsys=capsys)["runs"]
    assert [r["best_val_acc"] for r in rows][:4] == pytest.approx([0.8, 0.74, 0.7, 0.66])
    rows = report_json(str(sweep), "--sort", "seed", "--reverse", capsys=capsys)["runs"]
    assert [r["seed"] for r in rows] == ["3", "2", "2", "1", "1"]
    doc = report_json(str(sweep), "--filter", "status=completed", "--filter", "model=cnn",
                      capsys=capsys)
    assert [r["seed"] for r in doc["runs"]] == ["1", "2"]
    assert doc["shared_overrides"]["model"] == "cnn"  # no longer varies: not a column
    rows = report_json(str(sweep), "--filter", "seed!=1", "--filter", "status=completed",
                       "--filter", "status=failed", capsys=capsys)["runs"]
    assert sorted(r["seed"] for r in rows) == ["2", "2", "3"]


@pytest.mark.parametrize("args, message", [
    (["--filter", "colour=red"], "no run has 'colour'"),
    (["--filter", "status"], "must look like key=value"),
    (["--filter", "status=diverged"], "no run matches status=diverged"),
    (["--sort", "speed"], "--sort 'speed' is not a column"),
    (["--group-by", "optimizer"], "--group-by 'optimizer'"),
    (["--metric", "val_los"], "--metric 'val_los': no run recorded it; choose one of test_acc"),
])
def test_bad_options_get_one_message(sweep: Path, capsys, args: list[str], message: str) -> None:
    code, out, err = report(str(sweep), *args, capsys=capsys)
    assert code == 2 and out == "" and message in err and "Traceback" not in err


def test_bad_paths_get_one_message(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    for path, message in [("missing", "does not exist"), ("file.txt", "is not a folder"),
                          ("empty", "no run dirs found")]:
        code, _, err = report(str(tmp_path / path), capsys=capsys)
        assert code == 2 and message in err


def test_group_by_gives_mean_std_and_count_over_completed_runs(sweep: Path, capsys) -> None:
    doc = report_json(str(sweep), capsys=capsys)  # default: every varying override but seed
    groups = {g["model"]: g for g in doc["groups"]}
    assert list(groups) == ["cnn", "mlp"]  # best mean first
    assert groups["cnn"]["n"] == 2 and groups["cnn"]["statuses"] == "2 completed"
    assert groups["mlp"]["n"] == 2 and groups["mlp"]["statuses"] == "2 completed, 1 failed"
    assert groups["mlp"]["best_val_loss_mean"] == pytest.approx(0.32)
    assert groups["mlp"]["best_val_loss_std"] == pytest.approx(statistics.stdev([0.30, 0.34]))
    assert groups["cnn"]["test_acc_mean"] == pytest.approx(1 - 0.23)
    code, out, _ = report(str(sweep), "--group-by", "model", "--format", "csv", capsys=capsys)
    table = list(csv.DictReader(io.StringIO(out)))
    assert [r["model"] for r in table] == ["cnn", "mlp"]
    assert float(table[0]["best_val_loss_mean"]) == pytest.approx(0.23)
    code, out, _ = report(str(sweep), "--group-by", "model", capsys=capsys)
    assert "0.2300 ± 0.0424" in out and "0.3200 ± 0.0283" in out and "multirun" not in out


def test_runs_named_apart_are_grouped_by_their_settings_alone(tmp_path: Path, capsys) -> None:
    write_run(tmp_path / "0", ["seed=1", "model=cnn", "name=first"], [0.4, 0.2])
    write_run(tmp_path / "1", ["seed=2", "model=cnn", "tags=[a]"], [0.4, 0.3])
    write_run(tmp_path / "2", ["seed=1", "model=mlp"], [0.5, 0.4])
    doc = report_json(str(tmp_path), capsys=capsys)
    assert [(g["model"], g["n"]) for g in doc["groups"]] == [("cnn", 2), ("mlp", 1)]
    assert set(doc["groups"][0]) >= {"model"} and not {"name", "tags", "seed"} & set(doc["groups"][0])


def test_markdown_and_csv_formats(sweep: Path, capsys) -> None:
    code, out, _ = report(str(sweep), "--format", "md", capsys=capsys)
    lines = out.splitlines()
    assert lines[0] == "**5 runs ranked by best_val_loss (min first)**"
    assert lines[2].startswith("| seed | model | status | epochs | best_val_loss |")
    assert "| 1 | cnn | completed | 2/3 | 0.2000 |" in out
    assert "grouped by model" in out  # seeds merge into groups: the aggregate follows
    code, out, _ = report(str(sweep), "--format", "csv", capsys=capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 5 and float(rows[0]["best_val_loss"]) == 0.2 and rows[4]["test_acc"] == ""


def test_diverged_run_shows_its_best_finite_value_and_nan_final(sweep: Path, capsys) -> None:
    write_run(sweep / "5", ["seed=9", "model=mlp", "trainer.max_epochs=2"], [0.1, float("nan")],
              status="diverged", best_metric=None)
    rows = report_json(str(sweep), capsys=capsys)["runs"]
    assert [r["status"] for r in rows] == ["diverged"] + ["completed"] * 4 + ["failed"]
    assert rows[0]["best_val_loss"] == 0.1 and rows[0]["final_val_loss"] is None  # NaN: null
    code, out, _ = report(str(sweep), "--format", "md", capsys=capsys)
    assert "| 9 | mlp | diverged | 2/3 | 0.1000 | nan |" in out


def test_running_run_whose_process_is_gone_shows_as_killed(tmp_path: Path, capsys) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_run(tmp_path / "killed", ["seed=1"], [0.5], status="running", pid=dead.pid)
    write_run(tmp_path / "alive", ["seed=2"], [0.4], status="running", pid=os.getpid(),
              started_at_unix=time.time())
    write_run(tmp_path / "elsewhere", ["seed=3"], [0.3], status="running", pid=dead.pid,
              host="another-host")
    write_run(tmp_path / "reused", ["seed=4"], [0.6], status="running", pid=os.getpid(),
              started_at_unix=time.time() - 10 * 24 * 3600)  # our pid, but the run is older
    statuses = {Path(r["run_dir"]).name: r["status"]
                for r in report_json(str(tmp_path), capsys=capsys)["runs"]}
    assert statuses == {"killed": "killed", "alive": "running", "elsewhere": "running",
                        "reused": "killed"}
    assert process_alive(os.getpid()) and not process_alive(dead.pid)


def test_curves_and_html_are_self_contained_and_escaped(sweep: Path, tmp_path: Path,
                                                        capsys) -> None:
    evil = "<script>alert('x')</script>"
    write_run(sweep / "5", ["seed=1", f"name={evil}", "trainer.max_epochs=2"], [0.7, 0.6])
    plots = sweep / "0" / "plots"
    plots.mkdir()
    (plots / "confusion_matrix.png").write_bytes(b"\x89PNG\r\n\x1a\nconfusion")
    html_path, curves = tmp_path / "report" / "out.html", tmp_path / "curves"
    code, _, err = report(str(sweep), "--metric", "val_loss", "--metric", "train_loss",
                          "--html", str(html_path), "--curves", str(curves), capsys=capsys)
    assert code == 0, err
    for metric in ("val_loss", "train_loss"):
        assert (curves / f"{metric}.png").read_bytes().startswith(b"\x89PNG")
    page = html_path.read_text()
    assert evil not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert page.count("data:image/png;base64,") == 3  # two curves + one confusion matrix
    assert "http://" not in page and "https://" not in page
    assert page.count("<script") == 1 and f"script-src {script_source()}" in page  # the sorter only
    assert "bad &lt;lr&gt;" in page  # the failed run's error message, escaped
    assert "6 runs ranked by best_val_loss" in page and "grouped by model<" in page  # name: a label


def test_report_imports_no_torch_or_plotting(sweep: Path) -> None:
    code = ("import sys; from dlops.cli import main; main(['report', sys.argv[1], '--format', "
            "'json']); heavy = {'torch', 'pytorch_lightning', 'matplotlib', 'pandas'}; "
            "sys.exit(sorted(heavy & set(sys.modules)) or 0)")
    result = subprocess.run([sys.executable, "-c", code, str(sweep)], capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert result.returncode == 0, result.stderr


# ---- end to end: real sweeps, a killed run -------------------------------------------------

# fewer batches than an epoch of the bundled digits, to keep these tests near a minute


def train(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)




def test_a_metric_named_like_a_column_never_overwrites_it(tmp_path: Path, capsys) -> None:
    like_columns = {"status": 1.0, "epochs": 9.0, "duration_s": 3.0, "run_dir": 4.0, "best_val_loss": 5.0}
    run_dir = write_run(tmp_path / "run", ["seed=1"], [0.5, 0.4],
                        test_metrics={"test_loss": 0.41, **like_columns})
    [row] = report_json(str(tmp_path), capsys=capsys)["runs"]
    assert row["status"] == "completed" and row["epochs"] == 2 and row["duration_s"] == 12.5
    assert Path(row["run_dir"]) == run_dir.resolve() and row["best_val_loss"] == 0.4
    assert row["test_loss"] == 0.41


# ---- any metric name, the runs' own direction, the resolved config --------------------------

def slash_run(run_dir: Path, overrides: list[str], val_acc: list[float], test_acc: float,
              **fields) -> Path:
    """A run whose model logs `train/loss`, `val/acc` and `test/acc` (Lightning-template style)."""
    write_run(run_dir, overrides, [1 - v for v in val_acc], monitor="val/acc", mode="max",
              best_metric=max(val_acc), last_metrics={"val/acc": val_acc[-1], "train/loss": 0.1},
              test_metrics={"test/acc": test_acc}, **fields)
    with open(run_dir / "csv" / "metrics.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["epoch", "step", "train/loss", "val/acc", "test/acc"])
        for epoch, acc in enumerate(val_acc):
            writer.writerow([epoch, epoch, 1 - acc, acc, ""])
        writer.writerow([len(val_acc), len(val_acc), "", "", test_acc])
    return run_dir


def test_report_shows_and_sorts_by_slash_named_test_and_val_metrics(tmp_path: Path, capsys) -> None:
    slash_run(tmp_path / "a", ["seed=1"], [0.7, 0.9], test_acc=0.85)
    slash_run(tmp_path / "b", ["seed=2"], [0.8, 0.6], test_acc=0.95)
    doc = report_json(str(tmp_path), capsys=capsys)
    assert [(r["seed"], r["best_val/acc"], r["test/acc"]) for r in doc["runs"]] == [
        ("1", 0.9, 0.85), ("2", 0.8, 0.95)]  # the monitor, max first: the runs' own mode
    rows = report_json(str(tmp_path), "--sort", "test/acc", capsys=capsys)["runs"]
    assert [r["seed"] for r in rows] == ["2", "1"]  # accuracy: larger first
    rows = report_json(str(tmp_path), "--metric", "train/loss", "--sort", "val/acc", capsys=capsys)["runs"]
    assert [r["seed"] for r in rows] == ["1", "2"] and rows[0]["final_val/acc"] == 0.9
    code, out, _ = report(str(tmp_path), "--sort", "test/acc", capsys=capsys)
    assert code == 0 and "ranked by test/acc (max first)" in out


def test_report_direction_follows_metric_names_and_each_runs_own_mode(tmp_path: Path, capsys) -> None:
    write_run(tmp_path / "a", ["seed=1"], [0.5, 0.4], monitor="val/score", mode="max", best_metric=0.9,
              last_metrics={"val/score": 0.9, "val_mae": 3.0}, test_metrics={"test/score": 0.7})
    write_run(tmp_path / "b", ["seed=2"], [0.5, 0.4], monitor="val/score", mode="max", best_metric=0.8,
              last_metrics={"val/score": 0.8, "val_mae": 2.0}, test_metrics={"test/score": 0.9})
    doc = report_json(str(tmp_path), "--metric", "val/score", "--metric", "val_mae", capsys=capsys)
    assert doc["metrics"] == {"val/score": "max", "val_mae": "min"}
    assert [r["seed"] for r in doc["runs"]] == ["1", "2"]
    rows = report_json(str(tmp_path), "--sort", "test/score", capsys=capsys)["runs"]
    assert [r["seed"] for r in rows] == ["2", "1"]  # test/score as its run's val/score: max
    rows = report_json(str(tmp_path), "--metric", "val_mae", "--sort", "final_val_mae", capsys=capsys)["runs"]
    assert [r["seed"] for r in rows] == ["2", "1"]  # an error: smaller first


def test_report_compares_the_resolved_config_so_a_default_shows_its_value(tmp_path: Path,
                                                                          capsys) -> None:
    used = {"trainer.max_epochs": 3, "model": "mlp", "debug": None, "model.optimizer.lr": 0.0001}
    write_run(tmp_path / "a", ["trainer.max_epochs=3"], [0.5], config=used)
    write_run(tmp_path / "b", ["debug=fast"], [0.4],
              config={**used, "trainer.max_epochs": 1, "debug": "fast"})
    write_run(tmp_path / "c", ["model.optimizer.lr=1e-4"], [0.3], config=used)
    doc = report_json(str(tmp_path), capsys=capsys)
    values = {Path(r["run_dir"]).name: (r["trainer.max_epochs"], r["debug"]) for r in doc["runs"]}
    assert values == {"a": ("3", "null"), "b": ("1", "fast"), "c": ("3", "null")}
    assert doc["varying_overrides"] == ["trainer.max_epochs", "debug"]
    assert doc["shared_overrides"] == {"model.optimizer.lr": "0.0001"}  # 1e-4 as the runs used it
    rows = report_json(str(tmp_path), "--filter", "trainer.max_epochs=3",
                       "--filter", "model.optimizer.lr=1e-4", capsys=capsys)["runs"]
    assert sorted(Path(r["run_dir"]).name for r in rows) == ["a", "c"]  # any config key, as numbers
    groups = report_json(str(tmp_path), "--group-by", "model", capsys=capsys)["groups"]
    assert [(g["model"], g["n"]) for g in groups] == [("mlp", 3)]


def test_html_report_hides_mean_and_std_when_no_group_has_two_runs(sweep: Path, tmp_path: Path,
                                                                   capsys) -> None:
    page = tmp_path / "one.html"
    assert report(str(sweep / "0"), str(sweep / "2"), "--html", str(page), capsys=capsys)[0] == 0
    assert "mean ± std" not in page.read_text()  # two runs, two groups of one
    assert report(str(sweep), "--html", str(page), capsys=capsys)[0] == 0
    assert "mean ± std over completed runs, grouped by model" in page.read_text()


def test_learning_curves_are_drawn_for_any_separator(tmp_path: Path) -> None:
    from dlops.readers.curves import curve_panels, plot_learning_curves

    assert curve_panels(["val/acc", "train/loss", "val/loss", "test/acc", "epoch", "lr-Adam", "train.acc"]) \
        == {"loss": ["train/loss", "val/loss"], "acc": ["train.acc", "val/acc"]}
    run_dir = slash_run(tmp_path / "run", ["seed=1"], [0.7, 0.9], test_acc=0.85)
    out = plot_learning_curves(run_dir)
    assert out == run_dir / "plots" / "learning_curves.png" and out.stat().st_size > 10_000


def test_dlops_plot_takes_sweep_dirs_and_refuses_out_for_several_runs(sweep: Path, tmp_path: Path,
                                                                      capsys) -> None:
    from dlops.cli import main

    assert main(["plot", str(sweep)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 5
    assert all((sweep / job / "plots" / "learning_curves.png").is_file() for job in "01234")
    assert main(["plot", str(sweep), "--out", str(tmp_path / "x.png")]) == 2
    assert "--out names one PNG, but 5 run dirs were found" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
    assert main(["plot", str(sweep / "1"), "--out", str(tmp_path / "x.png")]) == 0
    assert (tmp_path / "x.png").stat().st_size > 10_000
    (tmp_path / "empty").mkdir()
    assert main(["plot", str(tmp_path / "empty")]) == 2 and "no run dirs found" in capsys.readouterr().err
