"""Wall time of a 4-job sweep on this machine: the default (sequential) launcher vs joblib.

    PYTHONPATH=src python bench/bench_sweep.py [--repeats 3] [--n-jobs 2] [-- OVERRIDES...]

Each sweep is `python train.py -m seed=1,2,3,4 <OVERRIDES>` as a fresh process in a temporary
folder: with the default launcher (torch on every core), with the default launcher and one
torch thread (OMP_NUM_THREADS=1), and with `hydra/launcher=joblib hydra.launcher.n_jobs=N`
(joblib gives each worker cores // N threads). The cases alternate so that other load on the
machine falls on all of them. Prints the median wall times and the speedup over the first, and
writes them with each job's duration to bench/results/bench_sweep.json.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# a real training job: 5 epochs over the bundled digits, batch 32 (about 10 s alone, warm)
JOB = ["trainer.max_epochs=5", "datamodule.batch_size=32"]


def sweep(launcher: list[str], threads: str | None, overrides: list[str]) -> dict:
    """Run one 4-job sweep in a temporary folder; its wall time and its jobs' durations."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WANDB_", "HYDRA_")) and k != "OMP_NUM_THREADS"}
    env.update(PYTHONPATH=str(ROOT / "src"), CUDA_VISIBLE_DEVICES="")
    if threads:
        env["OMP_NUM_THREADS"] = threads
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", "seed=1,2,3,4", *launcher,
                        *overrides], cwd=tmp, env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        jobs = [json.loads(p.read_text()) for p in sorted(Path(tmp).rglob("summary.json"))]
    assert [j["status"] for j in jobs] == ["completed"] * 4, [j["status"] for j in jobs]
    return {"wall_s": round(wall, 2), "job_s": [j["duration_s"] for j in jobs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-jobs", type=int, default=2, help="joblib workers")
    parser.add_argument("overrides", nargs="*", default=JOB, help=f"job overrides (default: {JOB})")
    args = parser.parse_args()
    joblib = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.n_jobs}"]
    cases = {"sequential (basic)": ([], None),
             "sequential, OMP_NUM_THREADS=1": ([], "1"),
             f"joblib n_jobs={args.n_jobs}": (joblib, None)}
    runs: dict[str, list[dict]] = {name: [] for name in cases}
    loads = []
    for _ in range(args.repeats):
        for name, (launcher, threads) in cases.items():
            runs[name].append(sweep(launcher, threads, args.overrides))
            loads.append(os.getloadavg()[0])
            print(f"{name}: {runs[name][-1]['wall_s']:.1f} s", flush=True)
    medians = {name: statistics.median(r["wall_s"] for r in rs) for name, rs in runs.items()}
    first = next(iter(medians.values()))
    record = {"command": f"python train.py -m seed=1,2,3,4 {' '.join(args.overrides)}",
              "cpus": os.cpu_count(), "python": platform.python_version(),
              "load_avg_1min_after_each": [round(x, 2) for x in loads], "repeats": args.repeats,
              "median_wall_s": medians,
              "speedup": {name: round(first / m, 2) for name, m in medians.items()}, "runs": runs}
    out = ROOT / "bench" / "results" / "bench_sweep.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\n4-job sweep ({record['command']}), median of {args.repeats}:\n")
    print("| launcher | wall s | speedup |\n| --- | --- | --- |")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.1f} | {record['speedup'][name]}x |")
    print(f"\n{record['cpus']} CPUs; load average (1 min) after each sweep: "
          f"{record['load_avg_1min_after_each']}; wrote {out}")


if __name__ == "__main__":
    main()
