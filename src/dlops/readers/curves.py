"""Learning curves from csv/metrics.csv: one run's two-panel figure, and many runs overlaid."""

import io
from collections.abc import Sequence
from pathlib import Path

from dlops.errors import ConfigError
from dlops.readers.discover import METRICS_CSV, Run, read_curves

MAX_LEGEND = 20  # more runs than this: the legend would hide the plot
MAX_PANELS = 4  # kinds of metric in one run's learning curves (loss first)


def plot_learning_curves(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """One panel per kind of metric the model logged for training and validation (`train_loss`
    and `val_loss` in one panel, then `*_acc`, `*_mae`, ...), per epoch of one run.

    Written to `out` (default `run_dir/plots/learning_curves.png`); returns the path.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    run_dir = Path(run_dir)
    if not (run_dir / METRICS_CSV).is_file():
        raise ConfigError(f"{run_dir / METRICS_CSV} not found: is {run_dir} a run dir "
                          "with the CSV logger on?")
    curves = read_curves(run_dir / METRICS_CSV)
    kinds = sorted({name.split("_", 1)[1] for name in curves if name.startswith(("train_", "val_"))},
                   key=lambda kind: (kind != "loss", kind))[:MAX_PANELS]
    out = Path(out) if out else run_dir / "plots" / "learning_curves.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(5 * max(len(kinds), 1), 4), layout="constrained")
    for ax, kind in zip(figure.subplots(1, max(len(kinds), 1), squeeze=False)[0], kinds, strict=False):
        for split in ("train", "val"):
            points = curves.get(f"{split}_{kind}", [])
            if points:
                epochs, values = zip(*points, strict=True)
                ax.plot(epochs, values, marker="o", markersize=3, label=f"{split}_{kind}")
        ax.set(xlabel="epoch", ylabel=kind, title=kind)
        ax.grid(alpha=0.3)
        ax.legend()
    figure.suptitle(str(run_dir), fontsize="small")
    figure.savefig(out, dpi=100)
    return out


def plot_curves(metric: str, curves: Sequence[tuple[str, Sequence[tuple[int, float]]]]) -> bytes:
    """A PNG of `metric` against epoch, one line per (label, points); empty curves are skipped."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    from matplotlib.ticker import MaxNLocator

    drawn = [(label, points) for label, points in curves if points]
    legend = 0 < len(drawn) <= MAX_LEGEND
    # the legend goes below the plot, one line per run: the figure grows with it
    figure = Figure(figsize=(8, 4.2 + (0.2 * len(drawn) if legend else 0)), layout="constrained")
    axes = figure.subplots()
    for label, points in drawn:
        epochs, values = zip(*points, strict=True)
        label = label if len(label) <= 100 else label[:99] + "…"
        axes.plot(epochs, values, marker="o", markersize=3, linewidth=1.2,
                  label=label.replace("$", r"\$"))  # `$` would start mathtext
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel(metric)
    axes.grid(alpha=0.3)
    if not drawn:
        axes.text(0.5, 0.5, f"no run logged {metric}", ha="center", va="center",
                  transform=axes.transAxes)
    if legend:
        figure.legend(loc="outside lower center", fontsize="small", frameon=False)
    title = metric if len(drawn) <= MAX_LEGEND else f"{metric} ({len(drawn)} runs, no legend)"
    axes.set_title(title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def curve_pngs(runs: Sequence[Run], labels: Sequence[str],
               metrics: Sequence[str]) -> dict[str, bytes]:
    """Per metric, the PNG of every run's curve (labels name the runs in the legend)."""
    return {metric: plot_curves(metric, [(label, run.curves.get(metric, []))
                                         for run, label in zip(runs, labels, strict=True)])
            for metric in metrics}
