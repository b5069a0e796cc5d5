"""Learning curves from a run's CSV metrics: the seed's two panels, loss and accuracy per epoch."""

from pathlib import Path

METRICS_CSV = Path("csv") / "metrics.csv"


def epoch_metrics(run_dir: str | Path):
    """One row per epoch (train and val values merged) from `run_dir/csv/metrics.csv`."""
    import pandas as pd

    table = pd.read_csv(Path(run_dir) / METRICS_CSV)
    table = table[[c for c in table.columns if not c.startswith("test_")]].dropna(subset=["epoch"])
    return table.groupby("epoch").last().drop(columns=["step"], errors="ignore").dropna(how="all")


def plot_learning_curves(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw loss/val_loss and acc/val_acc per epoch into `out` (default run_dir/plots/learning_curves.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    if not (run_dir / METRICS_CSV).is_file():
        from dlops.errors import ConfigError

        raise ConfigError(f"{run_dir / METRICS_CSV} not found: is {run_dir} a run dir "
                          "with the CSV logger on?")
    table = epoch_metrics(run_dir)
    out = Path(out) if out else run_dir / "plots" / "learning_curves.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, kind in zip(axes, ("loss", "acc"), strict=True):
        for split in ("train", "val"):
            column = f"{split}_{kind}"
            if column in table:
                values = table[column].dropna()
                ax.plot(values.index, values, marker="o", markersize=3, label=column)
        ax.set(xlabel="epoch", ylabel=kind, title="loss" if kind == "loss" else "accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
    figure.suptitle(str(run_dir), fontsize="small")
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out
