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
    from dlops.runs.curves import plot_learning_curves

    for run_dir in args.run_dirs:
        print(plot_learning_curves(run_dir, args.out if len(args.run_dirs) == 1 else None))


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
