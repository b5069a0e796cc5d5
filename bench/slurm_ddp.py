"""DDP under SLURM, over and over: N consecutive 2-task jobs where SLURM starts both ranks.

    bash .ci/slurm-cluster start   # as root; or any SLURM cluster with a 2-CPU node
    PYTHONPATH=src python bench/slurm_ddp.py [--runs 10]

Each run is `python train.py -m hydra/launcher=submitit_slurm hydra.launcher.tasks_per_node=2
trainer=ddp_cpu trainer.devices=2 trainer.max_epochs=2 datamodule.batch_size=128` in a fresh
folder. A run counts as complete when the sweep exits 0 and its sweep dir holds exactly one run dir,
one summary.json (status completed) and one metrics.csv. Before the fix of `${dlops.hydra_subdir:}`
for ranks > 0, about 1 run in 9 crashed in rank 1 and hung until the time limit (hence the
timeout). Writes bench/results/slurm_ddp.json.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMAND = ["-m", "hydra/launcher=submitit_slurm", "hydra.launcher.tasks_per_node=2",
           "hydra.launcher.timeout_min=5", "trainer=ddp_cpu", "trainer.devices=2",
           "trainer.max_epochs=2", "datamodule.batch_size=128"]


def one_run(folder: Path, timeout: float) -> dict:
    """Run the 2-task sweep once in `folder`; what came of it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    start = time.time()
    try:
        result = subprocess.run([sys.executable, str(ROOT / "train.py"), *COMMAND], cwd=folder, env=env,
                                capture_output=True, text=True, timeout=timeout)
        code = result.returncode
        tail = "" if code == 0 else (result.stdout + result.stderr)[-1500:]
    except subprocess.TimeoutExpired:
        code, tail = None, f"ran over {timeout}s"
    summaries = list(folder.glob("multirun/*/*/*/summary.json"))
    statuses = [json.loads(p.read_text())["status"] for p in summaries]
    return {"exit_code": code, "seconds": round(time.time() - start, 1),
            "run_dirs": len(list(folder.glob("multirun/*/*/*/.hydra"))), "statuses": statuses,
            "metrics_csv": len(list(folder.glob("multirun/*/*/*/csv/metrics.csv"))), "output_tail": tail}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    runs = []
    for n in range(args.runs):
        with tempfile.TemporaryDirectory() as folder:
            runs.append(one_run(Path(folder), args.timeout))
        print(f"run {n + 1}/{args.runs}: {runs[-1]}", flush=True)
    complete = sum(r["exit_code"] == 0 and r["run_dirs"] == 1 and r["statuses"] == ["completed"]
                   and r["metrics_csv"] == 1 for r in runs)
    result = {"command": "python train.py " + " ".join(COMMAND), "runs": runs,
              "complete": complete, "of": args.runs}
    out = ROOT / "bench" / "results" / "slurm_ddp.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{complete} of {args.runs} consecutive 2-task runs complete, one run dir each; {out}")


if __name__ == "__main__":
    main()
