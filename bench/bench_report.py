"""Time `dlops report` over 200 synthetic run dirs (target: under 5 s, whole process).

    PYTHONPATH=src python bench/bench_report.py [--runs 200] [--repeats 3]

Writes the run dirs to a temporary folder in the run-directory contract's format (summary.json,
csv/metrics.csv with 10 epochs, .hydra/, train.log; 5 failed and 5 killed runs among them),
runs each command as its own process (imports included) and prints the median wall times; the
results also go to bench/results/bench_report.json.
"""

import argparse
import csv
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["epoch", "step", "test_acc", "test_auroc", "test_loss", "train_acc", "train_loss",
           "val_acc", "val_auroc", "val_loss"]


def write_runs(root: Path, count: int, epochs: int = 10) -> None:
    """`count` jobs of a seed x model x lr sweep under root/multirun/<date>/<time>/<job>/."""
    rng = random.Random(0)
    sweep = root / "multirun" / "2026-01-01" / "10-00-00"
    for job in range(count):
        run_dir = sweep / str(job)
        overrides = [f"seed={job % 5}", f"model={'mlp' if job % 2 else 'cnn'}",
                     f"model.optimizer.lr={[0.001, 0.003, 0.01, 0.03][job // 5 % 4]}",
                     f"datamodule.batch_size={[32, 64][job // 20 % 2]}", "trainer.max_epochs=10"]
        status = "failed" if job % 40 == 7 else "running" if job % 40 == 13 else "completed"
        done = epochs if status == "completed" else 3 if status == "running" else 0
        (run_dir / ".hydra").mkdir(parents=True)
        (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
        (run_dir / ".hydra" / "config.yaml").write_text("monitor: val_loss\nmode: min\n")
        (run_dir / "train.log").write_text("[10:00:00][dlops.pipeline][INFO] ...\n")
        rows, loss = [], 0.7 + rng.random() * 0.2
        for epoch in range(done):
            loss *= 0.8 + rng.random() * 0.15
            rows.append({"epoch": epoch, "step": 100 * (epoch + 1), "val_loss": loss,
                         "val_acc": 1 - loss / 2, "val_auroc": 1 - loss / 5})
            rows.append({"epoch": epoch, "step": 100 * (epoch + 1), "train_loss": loss * 0.9,
                         "train_acc": 1 - loss / 2.2})
        test = {"test_loss": loss * 1.05, "test_acc": 1 - loss / 2, "test_auroc": 1 - loss / 5}
        if status == "completed":
            rows.append({"epoch": done, "step": 100 * done, **test})
        (run_dir / "csv").mkdir()
        with open(run_dir / "csv" / "metrics.csv", "w", newline="") as file:
            writer = csv.DictWriter(file, COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        val = [r["val_loss"] for r in rows if "val_loss" in r]
        summary = {
            "schema": 1, "status": status, "name": "train", "run_dir": str(run_dir),
            "job_num": job, "overrides": overrides, "started_at": "2026-01-01T10:00:00+00:00",
            "started_at_unix": 1767261600.0, "updated_at": "2026-01-01T10:01:00+00:00",
            "duration_s": 60.0 + job if status != "running" else None, "seed": job % 5,
            "monitor": "val_loss", "mode": "min", "max_epochs": epochs, "epochs_completed": done,
            "last_metrics": {"val_loss": val[-1]} if val else {},
            "best_metric": min(val) if val else None,
            "test_metrics": test if status == "completed" else {},
            "error": {"type": "ConfigError", "message": "bad lr"} if status == "failed" else None,
            "host": platform.node(), "pid": 2**22 + job,  # no such process: shown as killed
            # the resolved config as runs record it: ~90 keys, the overridden ones among them
            "config": {**{f"group{i // 10}.key{i}": i * 0.5 for i in range(80)},
                       **{o.split("=")[0]: o.split("=")[1] for o in overrides}, "debug": None},
        }
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))


def wall_time(args: list[str], repeats: int) -> float:
    """Median wall time of `python -m dlops.cli report ARGS` as a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "dlops.cli", "report", *args], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_runs(root, args.runs)
        runs = str(root / "multirun")
        cases = {
            "table (terminal)": [runs],
            "--format json": [runs, "--format", "json"],
            "--group-by model --format md": [runs, "--group-by", "model", "--format", "md"],
            "--metric val_acc (best from CSV)": [runs, "--metric", "val_acc", "--format", "csv"],
            "--html (curves for val_loss, train_loss)": [
                runs, "--metric", "val_loss", "--metric", "train_loss", "--format", "csv",
                "--html", str(root / "report.html")],
        }
        results = {name: round(wall_time(case, args.repeats), 3) for name, case in cases.items()}
    record = {"runs": args.runs, "repeats": args.repeats, "cpus": os.cpu_count(),
              "python": platform.python_version(), "load_avg_1min": os.getloadavg()[0],
              "median_wall_s": results}
    out = ROOT / "bench" / "results" / "bench_report.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"dlops report over {args.runs} run dirs, median of {args.repeats} (whole process):\n")
    print("| command | wall s |\n| --- | --- |")
    for name, seconds in results.items():
        print(f"| {name} | {seconds:.2f} |")
    print(f"\nload average (1 min) at the end: {record['load_avg_1min']:.1f}; wrote {out}")


if __name__ == "__main__":
    main()
