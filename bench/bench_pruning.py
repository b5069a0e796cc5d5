"""What pruning saves in an Optuna search: the same 20-trial search with pruning on and off.

    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/bench_pruning.py [--trials 20] [--epochs 6] [--seed 0]

Each arm is one `python train.py -m hparams_search=mnist_optuna` in a fresh folder (a new study),
with the same sampler seed: `hydra.sweeper.sampler.seed=SEED`, so both arms draw the same first
`n_startup_trials` (5) random trials; after that TPE suggests from what each arm has seen, which
includes the pruned trials' reports. Pruning on is the config's default (MedianPruner,
n_startup_trials=5, n_warmup_steps=1); off is `hydra.sweeper.pruner=null`. Measured from the run
dirs and the study: epochs trained in total (each trial's `epochs_completed`), the best value of
`monitor` (val_loss) found, the trials' statuses, and wall time. Writes
bench/results/bench_pruning.json and bench/results/bench_pruning.md.
"""

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def search(arm: list[str], trials: int, epochs: int, seed: int) -> dict:
    """One search in a temporary folder: its trials, epochs trained, best value and wall time."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_"))}
    env.update(PYTHONPATH=str(ROOT / "src"), CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", "hparams_search=mnist_optuna",
                        "hydra.sweep.dir=study", f"hydra.sweeper.n_trials={trials}",
                        f"hydra.sweeper.sampler.seed={seed}", f"trainer.max_epochs={epochs}", "test=false",
                        *arm], cwd=tmp, env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        study = Path(tmp) / "study"
        runs = [json.loads((study / str(n) / "summary.json").read_text()) for n in range(trials)]
        with sqlite3.connect(study / "optuna.db") as db:
            states = [s for (s,) in db.execute("SELECT state FROM trials ORDER BY number")]
        best = json.loads((study / "best.json").read_text())
    rows = [{"trial": n, "status": r["status"], "study_state": states[n],
             "epochs": r["epochs_completed"], "best": r["best_metric"], "overrides": r["overrides"]}
            for n, r in enumerate(runs)]
    return {"wall_s": round(wall, 1), "epochs_trained": sum(r["epochs"] for r in rows),
            "best_value": best["best"], "best_trial": best["job"],
            "statuses": dict(Counter(r["status"] for r in rows)), "trials": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    arms = {"pruning on (MedianPruner)": [], "pruning off (pruner=null)": ["hydra.sweeper.pruner=null"]}
    results = {name: search(arm, args.trials, args.epochs, args.seed) for name, arm in arms.items()}
    on, off = results.values()
    same = sum(a["overrides"] == b["overrides"] for a, b in zip(on["trials"], off["trials"], strict=True))
    lines = [f"{args.trials}-trial search, `trainer.max_epochs={args.epochs}`, sampler seed {args.seed}, "
             f"OMP_NUM_THREADS=1; {same} of {args.trials} trials drew the same parameters in both arms",
             "", "| arm | epochs trained | best val_loss | best trial | statuses | wall time |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(r["statuses"].items()))
        lines.append(f"| {name} | {r['epochs_trained']} of {args.trials * args.epochs} | "
                     f"{r['best_value']:.4f} | {r['best_trial']} | {statuses} | {r['wall_s']:.0f} s |")
    lines.append(f"\nepochs trained with pruning: {on['epochs_trained'] / off['epochs_trained']:.0%} of "
                 f"those without; wall time: {on['wall_s'] / off['wall_s']:.0%}")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_pruning.md").write_text(text)
    meta = {"command": " ".join(["python", "bench/bench_pruning.py", *sys.argv[1:]]),
            "python": platform.python_version(), "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
            "trials": args.trials, "epochs": args.epochs, "seed": args.seed, "same_parameters": same}
    (RESULTS / "bench_pruning.json").write_text(json.dumps({**meta, "arms": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
