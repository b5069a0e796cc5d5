"""The `dlops` command: tools around runs (`dlops --help` lists them)."""

import argparse
import sys
from collections.abc import Sequence

from dlops import __version__


def make_dataset(args: argparse.Namespace) -> None:
    from dlops.data.export import write_image_folder

    counts = write_image_folder(args.dir, args.per_class, args.test_fraction, args.seed)
    print(f"wrote {counts['train']} training and {counts['test']} test images to {args.dir}")
    print(f"train on them: python train.py datamodule=image_folder datamodule.root={args.dir}")


def plot(args: argparse.Namespace) -> None:
    from dlops.readers.curves import plot_learning_curves

    for run_dir in args.run_dirs:
        print(plot_learning_curves(run_dir, args.out if len(args.run_dirs) == 1 else None))


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
        Path(args.curves).mkdir(parents=True, exist_ok=True)
        for metric, png in pngs.items():
            (Path(args.curves) / f"{metric}.png").write_bytes(png)
        print(f"wrote {len(pngs)} learning-curve PNG(s) to {args.curves}", file=sys.stderr)
    if args.html:
        from dlops.readers.report_html import render_html

        Path(args.html).parent.mkdir(parents=True, exist_ok=True)
        Path(args.html).write_text(render_html(result, pngs, labels), encoding="utf-8")
        print(f"wrote {args.html}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dlops", description="Tools for dlops runs. Train with `python train.py`."
    )
    parser.add_argument("--version", action="version", version=f"dlops {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

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
        help="draw a run's learning curves (loss and accuracy per epoch) into a PNG",
        description="Draw the two-panel learning-curve figure (train/val loss, train/val accuracy "
        "per epoch) from RUN_DIR/csv/metrics.csv into RUN_DIR/plots/learning_curves.png.",
    )
    curves.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directory")
    curves.add_argument("--out", help="PNG to write (one run dir only)")
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
                     "without it, runs are grouped by every varying override except seed")
    rep.add_argument("--format", choices=["table", "csv", "md", "json"], default="table",
                     help="table (terminal, default), csv, md (Markdown) or json")
    rep.add_argument("--curves", metavar="DIR", help="write one learning-curve PNG per metric here")
    rep.add_argument("--html", metavar="OUT.html", help="write a self-contained HTML report")
    rep.set_defaults(handler=report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `dlops` command; returns the exit code."""
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
