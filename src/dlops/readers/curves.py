"""Learning curves from csv/metrics.csv: one run's two-panel figure, and many runs overlaid."""

import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from dlops.errors import ConfigError
from dlops.readers.discover import METRICS_CSV, Run, read_curves
from dlops.rundir.metrics import stage, without_stage
from dlops.rundir.safe_read import Unreadable

MAX_LEGEND = 20  # more runs than this: the legend would hide the plot
MAX_PANELS = 4  # kinds of metric in one run's learning curves (loss first)


def curve_panels(names: Iterable[str]) -> dict[str, list[str]]:
    """The panels of a run's learning curves: kind of metric (`loss`, `acc`; loss first) -> the
    training and validation names drawn in it (`train/loss`, `val/loss`), whatever the separator."""
    panels: dict[str, list[str]] = {}
    for name in sorted(names, key=lambda n: (stage(n) != "train", n)):
        if stage(name) in ("train", "val"):
            panels.setdefault(without_stage(name), []).append(name)
    kinds = sorted(panels, key=lambda kind: (kind != "loss", kind))[:MAX_PANELS]
    return {kind: panels[kind] for kind in kinds}


def plot_learning_curves(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """One panel per kind of metric the model logged for training and validation (`train_loss`
    and `val_loss` in one panel, then `*_acc`, `*_mae`, ...; any separator: `train/loss`), per
    epoch of one run (epochs numbered from 0, as Lightning numbers them).

    Written to `out` (default `run_dir/plots/learning_curves.png`); returns the path.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    run_dir = Path(run_dir)
    if not (run_dir / METRICS_CSV).is_file():
        raise ConfigError(f"{run_dir / METRICS_CSV} not found: is {run_dir} a run dir "
                          "with the CSV logger on?")
    try:
        curves = read_curves(run_dir / METRICS_CSV, run_dir)
    except Unreadable as exc:
        raise ConfigError(f"cannot read the learning curves of {run_dir}: {exc}") from None
    panels = curve_panels(curves)
    kinds = list(panels)
    out = Path(out) if out else run_dir / "plots" / "learning_curves.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(5 * max(len(kinds), 1), 4), layout="constrained")
    for ax, kind in zip(figure.subplots(1, max(len(kinds), 1), squeeze=False)[0], kinds, strict=False):
        for name in panels[kind]:
            points = [(e, v) for e, v in curves[name] if math.isfinite(v)]
            if points:
                epochs, values = zip(*points, strict=True)
                ax.plot(epochs, values, marker="o", markersize=3, label=_plain(name))
        ax.set(xlabel="epoch", ylabel=_plain(kind), title=_plain(kind))
        ax.grid(alpha=0.3)
        ax.legend()
    figure.suptitle(_plain(str(run_dir)), fontsize="small")
    figure.savefig(out, dpi=100)
    return out


def plot_runs(paths: Sequence[str | Path], out: str | Path | None = None) -> list[Path]:
    """`dlops plot`: the learning curves of every run found in `paths` (run dirs, sweep dirs or
    folders of them, as `dlops report` takes), each into its own `plots/learning_curves.png`;
    `out` names the one PNG to write instead, so it takes exactly one run. Runs without a metrics
    CSV are skipped when several were found (a job that failed before its first epoch)."""
    from dlops.readers.discover import find_run_dirs

    run_dirs = find_run_dirs(paths)
    if not run_dirs:
        raise ConfigError(f"no run dirs found in {', '.join(map(str, paths))} "
                          "(a run dir holds summary.json or .hydra/)")
    if out is not None and len(run_dirs) > 1:
        raise ConfigError(f"--out names one PNG, but {len(run_dirs)} run dirs were found in "
                          f"{', '.join(map(str, paths))}: name one run dir, or drop --out to draw "
                          "each run's plots/learning_curves.png")
    if len(run_dirs) == 1:
        return [plot_learning_curves(run_dirs[0], out)]
    return [plot_learning_curves(d) for d in run_dirs if (d / METRICS_CSV).is_file()]


def plot_curves(metric: str, curves: Sequence[tuple[str, Sequence[tuple[int, float]]]]) -> bytes:
    """A PNG of `metric` against epoch, one line per (label, points); empty curves are skipped."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    from matplotlib.ticker import MaxNLocator

    # NaN and infinities (a diverged run) would break the axis limits: drawn as gaps
    curves = [(label, [(e, v) for e, v in points if math.isfinite(v)]) for label, points in curves]
    drawn = [(label, points) for label, points in curves if points]
    legend = 0 < len(drawn) <= MAX_LEGEND
    # the legend goes below the plot, one line per run: the figure grows with it
    figure = Figure(figsize=(8, 4.2 + (0.2 * len(drawn) if legend else 0)), layout="constrained")
    axes = figure.subplots()
    for label, points in drawn:
        epochs, values = zip(*points, strict=True)
        axes.plot(epochs, values, marker="o", markersize=3, linewidth=1.2, label=_plain(label))
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel(_plain(metric))
    axes.grid(alpha=0.3)
    if not drawn:
        axes.text(0.5, 0.5, _plain(f"no run logged {metric}"), ha="center", va="center",
                  transform=axes.transAxes)
    if legend:
        figure.legend(loc="outside lower center", fontsize="small", frameon=False)
    title = metric if len(drawn) <= MAX_LEGEND else f"{metric} ({len(drawn)} runs, no legend)"
    axes.set_title(_plain(title))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _plain(text: str) -> str:
    """`text` as matplotlib shows it literally: `$` would start mathtext; shortened, printable."""
    from dlops.rundir.safe_text import printable

    text = printable(text)
    return (text if len(text) <= 100 else text[:99] + "…").replace("$", r"\$")


def curve_pngs(runs: Sequence[Run], labels: Sequence[str],
               metrics: Sequence[str]) -> dict[str, bytes]:
    """Per metric, the PNG of every run's curve (labels name the runs in the legend)."""
    return {metric: plot_curves(metric, [(label, run.curves.get(metric, []))
                                         for run, label in zip(runs, labels, strict=True)])
            for metric in metrics}
