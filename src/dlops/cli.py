"""The `dlops` command: tools around runs (`dlops --help` lists them)."""

import argparse
import os
import sys
from collections.abc import Sequence

from dlops import __version__


def train(args: list[str]) -> int:
    """`dlops train ...`: everything after `train` goes to the training entry (dlops/launch.py)."""
    from dlops.launch import run

    sys.path.insert(0, os.getcwd())  # the user's modules in the current folder, as `python -m` finds them
    run(args, entry=["train"])
    return 0


def completion(args: argparse.Namespace) -> None:
    from dlops.completion import bash_script

    print(bash_script(build_parser()))


def make_dataset(args: argparse.Namespace) -> None:
    from dlops.data.export import write_image_folder

    counts = write_image_folder(args.dir, args.per_class, args.test_fraction, args.seed)
    print(f"wrote {counts['train']} training and {counts['test']} test images to {args.dir}")
    print(f"train on them: dlops train datamodule=image_folder datamodule.root={args.dir}")


def plot(args: argparse.Namespace) -> None:
    from dlops.readers.curves import plot_runs

    for path in plot_runs(args.run_dirs, args.out):
        print(path)


def report(args: argparse.Namespace) -> None:
    from pathlib import Path

    from dlops.readers.discover import load_runs
    from dlops.readers.report import build_report
    from dlops.readers.report_text import print_rich, render_text, run_label

    result = build_report(load_runs(args.paths), args.metric or (), args.sort, args.reverse,
                          args.filter or (), args.group_by)
    grouped = args.group_by is not None
    if args.format == "table":
        print_rich(result, grouped)
    else:
        sys.stdout.write(render_text(result, args.format, grouped))
    if not (args.curves or args.html):
        return
    from dlops.readers.curves import curve_pngs

    labels = [run_label(run, result.varying) for run in result.runs]
    pngs = curve_pngs(result.runs, labels, result.metrics)
    if args.curves:
        from dlops.rundir.safe_read import safe_file_name

        Path(args.curves).mkdir(parents=True, exist_ok=True)
        for metric, png in pngs.items():  # metric names come from the runs' files: never a path
            (Path(args.curves) / f"{safe_file_name(metric)}.png").write_bytes(png)
        print(f"wrote {len(pngs)} learning-curve PNG(s) to {args.curves}", file=sys.stderr)
    if args.html:
        from dlops.readers.report_html import render_html

        Path(args.html).parent.mkdir(parents=True, exist_ok=True)
        Path(args.html).write_text(render_html(result, pngs, labels), encoding="utf-8")
        print(f"wrote {args.html}", file=sys.stderr)


def check_run(args: argparse.Namespace) -> None:
    """Refuse a dir that is not a run, a missing checkpoint, or a config naming code that is not
    trusted, before the model is built; with --trust, say what will be built."""
    from omegaconf import OmegaConf

    from dlops.inference import trust
    from dlops.inference.restore import check_run_dir, compose_run_config, find_checkpoint

    # the user's modules in the current folder, as `dlops train` finds them (trust still decides
    # which of the config's classes may be built)
    sys.path.insert(0, os.getcwd())
    trust.allow_all(args.trust)
    run_dir = check_run_dir(args.run_dir)
    find_checkpoint(run_dir, args.ckpt)
    config = OmegaConf.to_container(compose_run_config(run_dir, getattr(args, "overrides", ())))
    if args.trust and (named := trust.untrusted(config)):
        print(f"dlops {args.command}: --trust: building what {run_dir}'s config names outside the "
              f"trusted packages: {', '.join(named)}", file=sys.stderr)


def check_inputs(inputs: list[str]) -> None:
    """Refuse an input that is no file or folder (a FIFO would block, /dev/zero never ends)."""
    import os
    import stat

    from dlops.errors import ConfigError

    kinds = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device",
             stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}
    for name in inputs:
        try:
            kind = kinds.get(stat.S_IFMT(os.stat(name).st_mode))
        except OSError:
            continue  # absent or not to be looked at: predict says so
        if kind:
            raise ConfigError(f"{name} is {kind}, not an image file or a folder of them; give image "
                              "files or folders.")


def check_out(out: str | None, run_dir: str, force: bool) -> None:
    """Refuse a `--out` that is a folder or not a plain file, one that exists (without --force),
    and one inside a run dir other than its predict/ folder: a run's files are its record."""
    import os
    from pathlib import Path

    from dlops.errors import ConfigError
    from dlops.rundir import layout

    if out in (None, "-"):
        return
    path = Path(out)
    if path.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file name, e.g. --out "
                          f"{path / 'predictions.csv'}.")
    if os.path.lexists(path) and not (path.is_file() or path.is_symlink()):
        raise ConfigError(f"--out {out} exists and is not a regular file; give a file name.")
    real = path.resolve()
    for folder in real.parents:
        if (folder / layout.HYDRA_CONFIG).exists() or (folder / layout.SUMMARY).exists():
            if not real.is_relative_to(folder / layout.PREDICT):
                raise ConfigError(f"--out {out} is inside the run dir {folder}, whose files are the run's "
                                  f"record; write elsewhere, or leave out --out for "
                                  f"{Path(run_dir) / layout.PREDICT}/<date>_<time>/predictions.csv.")
            break
    if os.path.lexists(path) and not force:
        raise ConfigError(f"--out {out} exists; add --force to replace it, or give another file name.")


def evaluate(args: argparse.Namespace) -> None:
    check_run(args)
    progress("eval", f"loading {args.run_dir}: torch, Lightning, the model and the data")
    from dlops.inference.evaluate import evaluate_run, print_table

    print_table(evaluate_run(args.run_dir, args.ckpt, args.overrides))


def predict(args: argparse.Namespace) -> None:
    check_inputs(args.inputs)
    check_out(args.out, args.run_dir, args.force)
    check_run(args)
    progress("predict", f"loading {args.run_dir}: torch, Lightning and the model")
    from dlops.inference.predict import predict_run

    out = predict_run(args.run_dir, args.inputs, args.ckpt, args.out)
    if out != "-":
        print(f"wrote {out}")


def progress(command: str, line: str) -> None:
    """A line saying what a command is doing now, on stderr (stdout keeps its results)."""
    print(f"dlops {command}: {line}", file=sys.stderr, flush=True)


def export(args: argparse.Namespace) -> None:
    check_run(args)
    from dlops.extras import require

    require("export", "dlops export")
    progress("export", f"loading {args.run_dir}: torch, Lightning, the model and its data")
    from dlops.inference.export import describe_export, export_run, log_run_export, summary_entry

    model_json, cfg = export_run(args.run_dir, args.ckpt, args.format, lambda line: progress("export", line))
    print(f"{args.run_dir}: {describe_export(summary_entry(model_json, model_json.parent.parent))}")
    for line in log_run_export(model_json.parent.parent, cfg):
        print(line)


def serve(args: argparse.Namespace) -> None:
    from dlops.extras import require

    require("serve", "dlops serve")
    from dlops.serve.app import Limits  # imports no torch
    from dlops.serve.server import serve as run_server

    try:
        run_server(args.run_dir, args.host, args.port, Limits(
            args.max_upload_bytes, args.max_pixels, args.max_concurrency, args.timeout, args.workers,
            args.batch_wait_ms))
    except KeyboardInterrupt:  # Ctrl-C while loading, before the server's own handler is set
        print("stopped by SIGINT", flush=True)


def add_after_training(commands: argparse._SubParsersAction) -> None:
    """eval, predict, export, serve: what a finished run can do (README "After training")."""
    ckpt = {"default": "best", "metavar": "best|last|PATH",
            "help": "checkpoint to use: the run's best (default), last.ckpt, or a file"}
    trust = {"action": "store_true", "help": "build whatever the run's .hydra/config.yaml names, also "
             "code outside dlops, torch, Lightning and DLOPS_TRUSTED_PACKAGES: for your own runs only"}
    ev = commands.add_parser(
        "eval", help="test a run's checkpoint again, on its own test split or other data",
        description="Evaluate a run's checkpoint with the run's own config through trainer.test; "
        "OVERRIDES (e.g. datamodule=image_folder datamodule.root=DIR) choose other data. Writes "
        "RUN/eval/<date>_<time>/metrics.json (+ confusion matrix and ROC for classifiers).")
    ev.add_argument("run_dir", metavar="RUN", help="run directory")
    ev.add_argument("overrides", nargs="*", metavar="OVERRIDES", help="Hydra overrides, key=value")
    ev.add_argument("--ckpt", **ckpt)
    ev.add_argument("--trust", **trust)
    ev.set_defaults(handler=evaluate)

    pr = commands.add_parser(
        "predict", help="class probabilities for image files, as CSV",
        description="Predict image files (or folders of them) with a run's model: a CSV with path, "
        "predicted class and one probability column per class. Models that are not image "
        "classifiers predict through their predict_step and datamodule's predict_dataloader.")
    pr.add_argument("run_dir", metavar="RUN", help="run directory")
    pr.add_argument("inputs", nargs="*", metavar="INPUT", help="image file or folder")
    pr.add_argument("--out", metavar="FILE", help="CSV to write ('-' = stdout); default "
                    "RUN/predict/<date>_<time>/predictions.csv")
    pr.add_argument("--force", action="store_true", help="replace the --out file if it exists")
    pr.add_argument("--ckpt", **ckpt)
    pr.add_argument("--trust", **trust)
    pr.set_defaults(handler=predict)

    ex = commands.add_parser(
        "export", help="export a run's model to ONNX, verified against torch",
        description="Write RUN/export/model.onnx (dynamic batch; classifiers answer class probabilities, "
        "image classifiers take raw 0-255 pixels) and model.json, after checking onnxruntime against "
        "torch on the run's data. The input is exported from the model's example_input_array, else from "
        "its data's batches (a tensor, or a tuple starting with one).")
    ex.add_argument("run_dir", metavar="RUN", help="run directory")
    ex.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
    ex.add_argument("--ckpt", **ckpt)
    ex.add_argument("--trust", **trust)
    ex.set_defaults(handler=export)

    se = commands.add_parser(
        "serve", help="serve a run's ONNX export over HTTP (FastAPI + onnxruntime, no torch)",
        description="Serve RUN/export/model.onnx: GET /health, GET /metadata (what the model takes), "
        "POST /predict with JSON {\"inputs\": [row, ...]} (any model) or an image (image classifiers: "
        "multipart field 'file'); API docs at /docs. README \"Serving\" lists the limits.")
    se.add_argument("run_dir", metavar="RUN", help="run directory, exported with `dlops export`")
    se.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    se.add_argument("--port", type=int, default=8000, help="port (0 = any free one)")
    se.add_argument("--workers", type=int, default=1,
                    help="server processes sharing the port, each decoding and running the model in a "
                    "thread of its own (default 1; more pay only where cores are idle)")
    se.add_argument("--batch-wait-ms", type=float, default=0.0, metavar="MS",
                    help="how long a request waits for others to batch with (default 0: it is batched "
                    "with those that arrived while the model was busy)")
    se.add_argument("--max-upload-bytes", type=int, default=4 * 1024 * 1024,
                    help="larger request bodies are answered 413 (default 4 MiB)")
    se.add_argument("--max-pixels", type=int, default=None, help="larger images are refused from their "
                    "header, before decoding (default: 256x the model's input, 1 to 16 megapixels)")
    se.add_argument("--max-concurrency", type=int, default=64,
                    help="requests in progress at once, per worker process; more are answered 503 "
                    "(default 64)")
    se.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                    help="a request's head and body must arrive within it, else the connection is "
                    "closed (default 10)")
    se.set_defaults(handler=serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dlops", description="Train PyTorch Lightning models from composed Hydra configs, one "
        "run directory per run, and work with the runs afterwards."
    )
    parser.add_argument("--version", action="version", version=f"dlops {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(  # parsed by dlops/launch.py: `main` hands it everything after `train`
        "train", add_help=False, help="train a model: dlops train [--config-dir DIR] [-m] "
        "[KEY=VALUE ...] (dlops train --help lists the config groups and options)")
    shell = commands.add_parser(
        "completion", help="print a shell completion script: eval \"$(dlops completion bash)\"",
        description="Print the script that completes dlops' commands and their flags, and for "
        "`dlops train` the config groups, options and keys (through Hydra). Add "
        "`eval \"$(dlops completion bash)\"` to ~/.bashrc.")
    shell.add_argument("shell", choices=["bash"], help="the shell (bash)")
    shell.set_defaults(handler=completion)

    make = commands.add_parser(
        "make-dataset",
        help="write the bundled MNIST digits as DIR/{train,test}/<digit>/*.png",
        description="Write the 5,000 bundled MNIST digits into the image-folder layout that "
        "`datamodule=image_folder` reads: DIR/train/<digit>/*.png and DIR/test/<digit>/*.png.",
    )
    make.add_argument("dir", help="folder to write (created; must be empty or absent)")
    make.add_argument("--per-class", type=int, default=100, help="images per digit, train + test (max 500)")
    make.add_argument("--test-fraction", type=float, default=0.2, help="share of each digit for test/")
    make.add_argument("--seed", type=int, default=0, help="which images are drawn")
    make.set_defaults(handler=make_dataset)

    curves = commands.add_parser(
        "plot",
        help="draw runs' learning curves (loss, accuracy, ... per epoch) into PNGs",
        description="Draw each run's learning curves (one panel per kind of metric: train and val "
        "loss, accuracy, ... per epoch) from RUN_DIR/csv/metrics.csv into "
        "RUN_DIR/plots/learning_curves.png. PATHs are run dirs, sweep dirs or folders of them, "
        "as for `dlops report`.",
    )
    curves.add_argument("run_dirs", nargs="+", metavar="PATH", help="run dir, sweep dir or a folder of them")
    curves.add_argument("--out", help="PNG to write instead (refused when PATHs hold more than one run)")
    curves.set_defaults(handler=plot)

    rep = commands.add_parser(
        "report",
        help="compare runs: leaderboard, mean ± std over seeds, learning curves, HTML",
        description="Compare the runs found in PATHs (run dirs, sweep dirs, or folders of them "
        "such as outputs/ and multirun/, searched recursively). Prints a leaderboard ranked by "
        "the monitored metric, with the overrides that differ between the runs.",
    )
    rep.add_argument("paths", nargs="+", metavar="PATH",
                     help="run dir, sweep dir or a folder of them")
    rep.add_argument("--metric", action="append", metavar="NAME",
                     help="metric to show and plot (repeat for more; the first ranks the runs); "
                     "default: the monitored metric")
    rep.add_argument("--sort", metavar="COLUMN", help="rank by this column or metric instead "
                     "(metrics in their mode, other columns ascending)")
    rep.add_argument("--reverse", action="store_true", help="reverse the ranking")
    rep.add_argument("--filter", action="append", metavar="KEY=VALUE",
                     help="keep runs whose status or override KEY equals VALUE (KEY!=VALUE drops "
                     "them); repeat: all must hold, several values of one key: any")
    rep.add_argument("--group-by", action="append", metavar="KEYS",
                     help="show mean ± std per group of these override keys (comma-separated); "
                     "without it, runs are grouped by every varying override except seed, "
                     "name and tags")
    rep.add_argument("--format", choices=["table", "csv", "md", "json"], default="table",
                     help="table (terminal, default), csv, md (Markdown) or json")
    rep.add_argument("--curves", metavar="DIR", help="write one learning-curve PNG per metric here")
    rep.add_argument("--html", metavar="OUT.html", help="write a self-contained HTML report")
    rep.set_defaults(handler=report)
    add_after_training(commands)
    parser.set_defaults(subcommands=commands.choices)  # {name: parser}, for `dlops completion`
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `dlops` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        return train(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from dlops.errors import ConfigError

    try:
        args.handler(args)
    except ConfigError as exc:
        print(f"dlops {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # e.g. a ConfigError of a datamodule, wrapped by hydra's instantiate
        from dlops.lifecycle.failures import user_message

        if user_message(exc) is None:
            raise
        print(f"dlops {args.command}: error: {user_message(exc)}", file=sys.stderr)
        return 2
    finally:
        if getattr(args, "trust", False):  # --trust counts for this one command
            from dlops.inference import trust

            trust.allow_all(False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
