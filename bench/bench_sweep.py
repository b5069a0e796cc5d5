"""Wall time of a 4-job sweep on this machine: the default (sequential) launcher vs joblib.

    PYTHONPATH=src python bench/bench_sweep.py [--repeats 3] [--n-jobs 2] [--workload mlp cnn]

Each sweep is `python train.py -m seed=1,2,3,4 <workload>` as a fresh process in a temporary
folder, for a light workload (the MLP: start-up dominates) and a heavier one (the CNN):
with the default launcher (torch on every core), with the default launcher and one
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
# real training jobs on the bundled digits; with one torch thread here an MLP job takes ~3 s and
# a CNN job ~26 s, after ~9 s of start-up (imports, data) that every process pays once
WORKLOADS = {"mlp": ["trainer.max_epochs=5", "datamodule.batch_size=32"],
             "cnn": ["model=cnn", "trainer.max_epochs=5", "datamodule.batch_size=32"]}


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


def bench(overrides: list[str], repeats: int, n_jobs: int) -> dict:
    """Median wall time of the 4-job sweep per launcher, and the speedup over sequential."""
    joblib = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}"]
    cases = {"sequential (basic)": ([], None),
             "sequential, OMP_NUM_THREADS=1": ([], "1"),
             f"joblib n_jobs={n_jobs}": (joblib, None)}
    runs: dict[str, list[dict]] = {name: [] for name in cases}
    loads = []
    for _ in range(repeats):
        for name, (launcher, threads) in cases.items():
            runs[name].append(sweep(launcher, threads, overrides))
            loads.append(round(os.getloadavg()[0], 2))
            print(f"{name}: {runs[name][-1]['wall_s']:.1f} s", flush=True)
    medians = {name: statistics.median(r["wall_s"] for r in rs) for name, rs in runs.items()}
    first = next(iter(medians.values()))
    return {"command": f"python train.py -m seed=1,2,3,4 {' '.join(overrides)}",
            "median_wall_s": medians,
            "speedup": {name: round(first / m, 2) for name, m in medians.items()},
            "load_avg_1min_after_each": loads, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-jobs", type=int, default=2, help="joblib workers")
    parser.add_argument("--workload", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    args = parser.parse_args()
    record = {"cpus": os.cpu_count(), "python": platform.python_version(), "repeats": args.repeats,
              "workloads": {}}
    for workload in args.workload:
        print(f"-- {workload}", flush=True)
        record["workloads"][workload] = bench(WORKLOADS[workload], args.repeats, args.n_jobs)
    out = ROOT / "bench" / "results" / "bench_sweep.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\n4-job sweeps on {record['cpus']} CPUs, median of {args.repeats}:\n")
    print("| workload | launcher | wall s | speedup |\n| --- | --- | --- | --- |")
    for workload, result in record["workloads"].items():
        for name, seconds in result["median_wall_s"].items():
            print(f"| {workload} | {name} | {seconds:.1f} | {result['speedup'][name]}x |")
    print(f"\nwrote {out} (with each job's duration and the load average after each sweep)")


if __name__ == "__main__":
    main()
