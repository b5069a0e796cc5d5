"""Epoch time of dlops against a hand-written loop and the conventional torchvision pipeline.

Side by side, interleaved round by round, on the same data (60,000 training and 10,588 validation
images, tiled from the bundled digits when the full MNIST set is absent), model (784-64-128-64-10
dense net, ten classes), batch size 64 and number of epochs:

  hand-written  bench/handwritten.py: uint8 tensors in memory, batches sliced, no framework,
                torch.optim.Adam as usually written
  hand-written, fused Adam
                the same loop with Adam's fused kernel, as dlops' model configs set it: the
                same optimizer step as dlops, so the ratio to it is the framework's cost alone
  dlops         `python train.py` (the real run: logging, checkpoints, validation, test)
  torchvision   the same `python train.py` with torchvision MNIST + ToTensor/Normalize per item
                in a DataLoader (bench/torchvision_mnist.py)

    python bench/bench_epoch.py [--epochs 3] [--rounds 3] [--threads N]

Writes bench/results/epoch.json and epoch.md (epoch-threads1.* with --threads 1).
"""

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from common import (
    BENCH,
    N_TRAIN,
    N_VAL,
    PYTHON,
    ROOT,
    check,
    machine,
    make_data,
    save,
    spread,
    stats,
    timed,
)

VARIANTS = {
    "hand-written": "hand-written PyTorch loop (tensors in memory, sliced batches, plain Adam)",
    "hand-written, fused Adam": "the same hand-written loop with fused Adam (dlops' default)",
    "dlops": "dlops `python train.py`, fit loop",
    "torchvision": "torchvision MNIST + ToTensor/Normalize per item in a DataLoader, same "
                   "Lightning run",
}


def train_command(data: Path, epochs: int, timing: Path, *extra: str) -> list[str]:
    """`python train.py` on the benchmark's data and model, with the epoch timer added."""
    return [
        PYTHON, str(ROOT / "train.py"),
        "datamodule.source=torchvision", f"datamodule.data_dir={data}", "datamodule.download=false",
        "datamodule.positive_digit=null", "datamodule.batch_size=64",
        "model.net.hidden_sizes=[64,128,64]", f"trainer.max_epochs={epochs}",
        "+callbacks.epoch_timer._target_=epoch_timer.EpochTimer",
        f"+callbacks.epoch_timer.path={timing}",
        *extra,
    ]


def run_variant(name: str, data: Path, epochs: int, work: Path, gpu: bool, bf16: bool) -> dict:
    """Run one variant in a fresh process; return its epoch times and process wall time."""
    from epoch_timer import epoch_seconds, train_seconds  # imports torch: after OMP_NUM_THREADS
    work.mkdir(parents=True)
    timing, log = work / "timing.json", work / "output.log"
    if name.startswith("hand-written"):
        cmd = [PYTHON, str(BENCH / "handwritten.py"), str(data), "--epochs", str(epochs),
               "--out", str(timing), *(["--device", "cuda"] if gpu else []),
               *(["--bf16"] if bf16 else []), *(["--fused"] if "fused" in name else [])]
    else:
        extra = ["trainer=gpu"] if gpu else []
        extra += ["trainer.precision=bf16-mixed"] if bf16 else []
        if name == "torchvision":
            extra.append("datamodule._target_=torchvision_mnist.PerItemMNISTDataModule")
        cmd = train_command(data, epochs, timing, *extra)
    _, wall, _, code = timed(cmd, work, log)
    check(code, name, log)
    times = json.loads(timing.read_text())
    if name.startswith("hand-written"):
        epoch_s = [e["epoch_s"] for e in times["epochs"]]
        cpu_s = [e["cpu_s"] for e in times["epochs"]]
        train_s = [e["train_s"] for e in times["epochs"]]
        val_acc = times["epochs"][-1]["val_acc"]
    else:
        epoch_s, train_s = epoch_seconds(times), train_seconds(times)
        cpu_s = epoch_seconds(times, "cpu_")
        summary = json.loads(next(work.glob("outputs/*/*/summary.json")).read_text())
        val_acc = summary["last_metrics"].get("val_acc")
    print(f"  {name:13s} {statistics.median(epoch_s):6.2f} s/epoch  process {wall:6.1f} s  "
          f"val_acc {val_acc:.4f}", flush=True)
    return {"epoch_s": epoch_s, "train_s": train_s, "cpu_s": cpu_s, "process_s": wall,
            "val_acc": val_acc, "threads": times["threads"]}


def summarise(runs: dict[str, list[dict]]) -> dict:
    """Per variant: the median over runs of each run's median epoch; ratios taken round by round."""
    out = {}
    for name, rs in runs.items():
        per_run = [statistics.median(r["epoch_s"]) for r in rs]
        out[name] = {
            "s_per_epoch": stats(per_run),
            "train_s_per_epoch": stats([statistics.median(r["train_s"]) for r in rs]),
            "cpu_s_per_epoch": stats([statistics.median(r["cpu_s"]) for r in rs]),
            "images_per_s": N_TRAIN / statistics.median(per_run),
            "process_s": stats([r["process_s"] for r in rs]),
            "val_acc": stats([r["val_acc"] for r in rs]),
            "threads": sorted({r["threads"] for r in rs}),
        }
    def ratio(a: str, b: str, key: str = "epoch_s") -> dict:
        return stats([statistics.median(x[key]) / statistics.median(y[key])
                      for x, y in zip(runs[a], runs[b], strict=True)])
    out["ratios"] = {"dlops / hand-written": ratio("dlops", "hand-written"),
                     "dlops / hand-written, fused Adam": ratio("dlops", "hand-written, fused Adam"),
                     "hand-written, fused Adam / hand-written": ratio("hand-written, fused Adam",
                                                                      "hand-written"),
                     "torchvision / dlops": ratio("torchvision", "dlops"),
                     "torchvision / hand-written": ratio("torchvision", "hand-written"),
                     "dlops / hand-written, CPU seconds": ratio("dlops", "hand-written", "cpu_s")}
    return out


def markdown(summary: dict, info: dict) -> str:
    m = info["machine"]
    device = (f"GPU {m['gpu']}{', bf16-mixed' if info['bf16'] else ''}" if info["gpu"]
              else "no GPU")
    flags = "".join(f" --{k} {info[k]}" for k in ("epochs", "rounds", "threads") if info[k])
    flags += "".join(f" --{k}" for k in ("gpu", "bf16") if info[k])
    lines = [
        f"Epoch time, {N_TRAIN:,} training + {N_VAL:,} validation images ({info['data']}), "
        f"784-64-128-64-10 dense net, batch 64, {info['epochs']} epochs x {info['rounds']} "
        f"interleaved rounds; {m['cpu_count']} CPU cores, torch {m['torch']}, torch threads: "
        f"{'/'.join(map(str, summary['dlops']['threads']))}, {device}. "
        "Median (min-max) over runs of each run's median epoch; an epoch includes validation, "
        "checkpoints and logging. CPU s/epoch: the process's CPU time (less disturbed by other "
        "processes on a shared machine; with several threads it counts every thread). "
        "vs hand-written: the median of the ratios taken round by round.",
        "",
        "| pipeline | s/epoch | train images/s | vs hand-written | CPU s/epoch | whole process (s) "
        "| val_acc |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, label in VARIANTS.items():
        s = summary[name]
        ratio = summary["ratios"].get(f"{name} / hand-written", {"median": 1.0})["median"]
        lines.append(f"| {label} | {spread(s['s_per_epoch'])} | {s['images_per_s']:,.0f} | "
                     f"{ratio:.2f}x | {spread(s['cpu_s_per_epoch'])} | "
                     f"{spread(s['process_s'], '{:.1f}')} | {s['val_acc']['median']:.4f} |")
    lines += ["", "Ratios measured round by round (same minute, same load): median (min-max)", ""]
    lines += [f"- {k}: {spread(v)}" for k, v in summary["ratios"].items()]
    lines += ["", f"Command: `python bench/bench_epoch.py{flags}`; 1-min load average at the "
              f"end: {m['load_average_1min']:.2f}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads in every run (OMP_NUM_THREADS); default: torch's own")
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="run only these variants (the results need all of them)")
    parser.add_argument("--gpu", action="store_true",
                        help="train on the GPU: trainer=gpu, the hand-written loop on cuda")
    parser.add_argument("--bf16", action="store_true",
                        help="bf16 mixed precision: trainer.precision=bf16-mixed, autocast by hand")
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    runs: dict[str, list[dict]] = {name: [] for name in args.only}
    with tempfile.TemporaryDirectory(prefix="dlops-bench-") as tmp:
        data = Path(tmp) / "data"
        origin = make_data(data)
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}", flush=True)
            names, k = args.only, r % len(args.only)
            for name in names[k:] + names[:k]:  # rotated, so that no variant always goes first
                work = Path(tmp) / f"{name}-{r}"
                runs[name].append(run_variant(name, data, args.epochs, work, args.gpu, args.bf16))
    if len(runs) < len(VARIANTS):
        return
    info = {"data": origin, "epochs": args.epochs, "rounds": args.rounds, "threads": args.threads,
            "gpu": args.gpu, "bf16": args.bf16, "machine": machine()}
    summary = summarise(runs)
    name = "epoch" + "".join(f"-{flag}" for flag in ("gpu", "bf16") if getattr(args, flag))
    name += f"-threads{args.threads}" if args.threads else ""
    save(name, {**info, "summary": summary, "runs": runs}, markdown(summary, info))


if __name__ == "__main__":
    main()
