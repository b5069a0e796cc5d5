"""How long `.ci/slurm-cluster start --nodes N` takes from a stopped cluster, for N = 1 and 2,
alternately (the packages already installed; every daemon, namespace and link made afresh).

    PYTHONPATH=src python bench/slurm_start.py [--repeats 3]   # as root; stops any running test cluster

The time is from the command's start until every node is idle (`sinfo`). Writes
bench/results/slurm_start.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / ".ci" / "slurm-cluster"


def cluster(*args: str) -> float:
    """Run `.ci/slurm-cluster ARGS`; its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run(["bash", str(CLUSTER), *args], check=True, capture_output=True, timeout=300)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    starts: dict[str, list[float]] = {"1": [], "2": []}
    stops: list[float] = []
    for _ in range(args.repeats):
        for nodes in starts:
            stops.append(cluster("stop"))
            starts[nodes].append(round(cluster("start", "--nodes", nodes), 2))
            print(f"{nodes} node(s): {starts[nodes][-1]} s", flush=True)
    result = {"start_s": starts, "median_start_s": {n: statistics.median(s) for n, s in starts.items()},
              "median_stop_s": round(statistics.median(stops), 2), "load_average": os.getloadavg()}
    out = ROOT / "bench" / "results" / "slurm_start.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["median_start_s"]), out)


if __name__ == "__main__":
    main()
