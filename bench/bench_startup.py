"""Start-up of `python train.py`: --help, --cfg job, time to the first training step, end to end.

Each round runs, in fresh processes from a temporary directory:

  --help              wall time (dlops' own help page), also as `python -m dlops train --help`,
                      beside Hydra's own page (--hydra-help), which composes the config
  --cfg job           wall time
  python train.py     the default run (bundled digits, 10 epochs, logging, checkpoints, test),
                      end to end
  the same run with bench/epoch_timer.py added: when fit starts, the first training step,
                      fit ends (unix times against the moment the process was started)

and checks which heavy packages each path imports (`python -X importtime`).

    python bench/bench_startup.py [--rounds 3] [--light]

Writes bench/results/startup.json and startup.md (startup-threads1.* with --threads 1; with
--light, only the commands that train nothing: startup-light.*).
"""

import argparse
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

from common import PYTHON, ROOT, check, env, machine, save, spread, stats, timed

TRAIN = str(ROOT / "train.py")
HEAVY = ("torch", "pytorch_lightning", "torchvision", "torchmetrics", "tensorboard", "wandb",
         "matplotlib", "pandas")


# the commands that train nothing: (key, the arguments after `python`)
LIGHT = (("help", [TRAIN, "--help"]), ("dlops_help", ["-m", "dlops", "train", "--help"]),
         ("hydra_help", [TRAIN, "--hydra-help"]), ("cfg_job", [TRAIN, "--cfg", "job"]))


def heavy_imports(args: list[str], cwd: Path) -> list[str]:
    """The top-level heavy packages that `python ARGS` imports."""
    result = subprocess.run([PYTHON, "-X", "importtime", *args], cwd=cwd, env=env(),
                            capture_output=True, text=True)
    modules = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)$", result.stderr, re.M)
    packages = {m.split(".")[0] for m in modules}
    return [name for name in HEAVY if name in packages]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads in every run (OMP_NUM_THREADS); default: torch's own")
    parser.add_argument("--light", action="store_true", help="only the commands that train nothing")
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    commands = LIGHT if args.light else (*LIGHT, ("train", [TRAIN]))
    walls: dict[str, list[float]] = {key: [] for key, _ in commands}
    if not args.light:
        walls.update(first_step=[], fit_start=[], fit=[], after_fit=[])
    cpu: dict[str, list[float]] = {key: [] for key, _ in commands}
    with tempfile.TemporaryDirectory(prefix="dlops-startup-") as tmp:
        cwd = Path(tmp)
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}", flush=True)
            for key, command in commands:
                log = cwd / f"{key}-{r}.log"
                _, wall, cpu_s, code = timed([PYTHON, *command], cwd, log)
                check(code, f"python {' '.join(command)}", log)
                walls[key].append(wall)
                cpu[key].append(cpu_s)
                print(f"  {key:10s} {wall:6.2f} s (CPU {cpu_s:.2f} s)", flush=True)
            if args.light:
                continue
            timing, log = cwd / f"timing-{r}.json", cwd / f"timed-{r}.log"
            start, wall, _, code = timed([PYTHON, TRAIN, "+callbacks.epoch_timer._target_="
                                       "epoch_timer.EpochTimer",
                                       f"+callbacks.epoch_timer.path={timing}"], cwd, log)
            check(code, "python train.py (timed)", log)
            times = json.loads(timing.read_text())
            walls["fit_start"].append(times["fit_start"] - start)
            walls["first_step"].append(times["first_step"] - start)
            walls["fit"].append(times["fit_end"] - times["fit_start"])
            walls["after_fit"].append(start + wall - times["fit_end"])
            print(f"  first step {walls['first_step'][-1]:6.2f} s", flush=True)
        imports = {" ".join(command[1:] if command[0] == TRAIN else command): heavy_imports(command, cwd)
                   for _, command in commands}
    results = {"rounds": args.rounds, "threads": args.threads, "machine": machine(),
               "seconds": {k: stats(v) for k, v in walls.items()},
               "cpu_seconds": {k: stats(v) for k, v in cpu.items()}, "heavy_imports": imports}
    name = "startup-light" if args.light else f"startup-threads{args.threads}" if args.threads else "startup"
    save(name, results, markdown(results, args.light))


def markdown(results: dict, light: bool = False) -> str:
    s, c, m = results["seconds"], results["cpu_seconds"], results["machine"]
    rows = [
        ("`python train.py --help` (dlops' page)", s["help"], c["help"]),
        ("`python -m dlops train --help`", s["dlops_help"], c["dlops_help"]),
        ("`python train.py --hydra-help` (Hydra's page: composes the config)", s["hydra_help"],
         c["hydra_help"]),
        ("`python train.py --cfg job`", s["cfg_job"], c["cfg_job"]),
    ]
    rows += [] if light else [
        ("`python train.py`: process start to `trainer.fit`", s["fit_start"], None),
        ("`python train.py`: process start to first training step", s["first_step"], None),
        ("`python train.py`: fit (10 epochs of 3,612 images, validation, checkpoints)", s["fit"],
         None),
        ("`python train.py`: after fit (test of the best checkpoint, summary, exit)",
         s["after_fit"], None),
        ("`python train.py` end to end (default config)", s["train"], c["train"]),
    ]
    lines = [f"Start-up, {results['rounds']} interleaved rounds, {m['cpu_count']} CPU cores, "
             f"torch {m['torch']} ({m['torch_threads']} threads), no GPU. Seconds, median "
             "(min-max). CPU: the process's user + system time, less disturbed than wall time "
             "by other processes on a shared machine.", "",
             "| what | wall seconds | CPU seconds |", "|---|---|---|"]
    lines += [f"| {what} | {spread(v)} | {spread(cv) if cv else ''} |" for what, v, cv in rows]
    lines += ["", "Heavy packages imported:", ""]
    lines += [f"- {k}: {', '.join(v) or 'none'}" for k, v in results["heavy_imports"].items()]
    threads = f" --threads {results['threads']}" if results["threads"] else ""
    command = f"python bench/bench_startup.py --rounds {results['rounds']}{threads}{' --light' * light}"
    lines += ["", f"Command: `{command}`; "
              f"1-min load average at the end: {m['load_average_1min']:.2f}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
