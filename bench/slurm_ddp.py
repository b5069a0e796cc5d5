"""DDP under SLURM, over and over, one node against two: the same 2-rank job (SLURM starts both
ranks) laid out as 2 tasks on one node and as 1 task on each of two nodes, run alternately.

    bash .ci/slurm-cluster start --nodes 2   # as root; or any SLURM cluster with two 2-CPU nodes
    PYTHONPATH=src python bench/slurm_ddp.py [--runs 10] [--epochs 2]

Each run is `python train.py -m hydra/launcher=submitit_slurm LAYOUT trainer=ddp_cpu
trainer.max_epochs=EPOCHS datamodule.batch_size=128 seed=7` in a fresh folder. A run counts as
complete when the sweep exits 0 and its sweep dir holds exactly one run dir, one summary.json
(status completed) and one metrics.csv. `seconds` is the wall time of the whole command (submit,
wait, summary), `job_s` the run's own `duration_s` (imports excluded: from the run's start to its
end). Before the fix of `${dlops.hydra_subdir:}` for ranks > 0, about 1 run in 9 crashed in rank 1
and hung until the time limit (hence the timeout). Writes bench/results/slurm_ddp.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYOUTS = {
    "one node, 2 tasks": ["hydra.launcher.tasks_per_node=2", "trainer.devices=2"],
    "two nodes, 1 task each": ["hydra.launcher.nodes=2", "hydra.launcher.tasks_per_node=1",
                               "trainer.devices=1", "trainer.num_nodes=2"],
}


def command(layout: str, epochs: int) -> list[str]:
    return ["-m", "hydra/launcher=submitit_slurm", "hydra.launcher.timeout_min=5", *LAYOUTS[layout],
            "trainer=ddp_cpu", f"trainer.max_epochs={epochs}", "datamodule.batch_size=128", "seed=7"]


def one_run(folder: Path, layout: str, epochs: int, timeout: float) -> dict:
    """Run the sweep of `layout` once in `folder`; what came of it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    start = time.time()
    try:
        result = subprocess.run([sys.executable, str(ROOT / "train.py"), *command(layout, epochs)],
                                cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)
        code = result.returncode
        tail = "" if code == 0 else (result.stdout + result.stderr)[-1500:]
    except subprocess.TimeoutExpired:
        code, tail = None, f"ran over {timeout}s"
    summaries = [json.loads(p.read_text()) for p in folder.glob("multirun/*/*/*/summary.json")]
    return {"layout": layout, "exit_code": code, "seconds": round(time.time() - start, 1),
            "job_s": summaries[0].get("duration_s") if len(summaries) == 1 else None,
            "host": summaries[0].get("host") if len(summaries) == 1 else None,
            "run_dirs": len(list(folder.glob("multirun/*/*/*/.hydra"))),
            "statuses": [s["status"] for s in summaries],
            "metrics_csv": len(list(folder.glob("multirun/*/*/*/csv/metrics.csv"))), "output_tail": tail}


def complete(run: dict) -> bool:
    return (run["exit_code"] == 0 and run["run_dirs"] == 1 and run["statuses"] == ["completed"]
            and run["metrics_csv"] == 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="in all, alternating the two layouts")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    runs = []
    for n in range(args.runs):
        layout = list(LAYOUTS)[n % len(LAYOUTS)]
        with tempfile.TemporaryDirectory() as folder:
            runs.append(one_run(Path(folder), layout, args.epochs, args.timeout))
        print(f"run {n + 1}/{args.runs}: {runs[-1]}", flush=True)
    layouts = {}
    for layout in LAYOUTS:
        done = [r for r in runs if r["layout"] == layout and complete(r)]
        layouts[layout] = {
            "command": "python train.py " + " ".join(command(layout, args.epochs)),
            "complete": len(done), "of": sum(r["layout"] == layout for r in runs),
            "median_seconds": statistics.median(r["seconds"] for r in done) if done else None,
            "median_job_s": statistics.median(r["job_s"] for r in done) if done else None}
    result = {"layouts": layouts, "runs": runs, "complete": sum(map(complete, runs)), "of": args.runs,
              "load_average": os.getloadavg()}
    out = ROOT / "bench" / "results" / "slurm_ddp.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    for layout, figures in layouts.items():
        print(f"{layout}: {figures['complete']} of {figures['of']} complete, median "
              f"{figures['median_seconds']} s per sweep, {figures['median_job_s']} s per run")
    print(out)


if __name__ == "__main__":
    main()
