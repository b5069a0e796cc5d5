"""Compare runs: filter, rank and group them into the leaderboard and its aggregation over seeds.

Rows hold raw values (floats, ints, strings, None), so that CSV and JSON give the numbers of
the runs' own summary.json files; `dlops.readers.report_text` formats them for people.
"""

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dlops.errors import ConfigError
from dlops.readers.discover import Run
from dlops.rundir.metrics import infer_mode, stage, without_stage

TEST_METRICS = ("test_loss", "test_acc", "test_auroc")  # shown first, in this order, when present


@dataclass
class Table:
    """A titled table: column names and one dict of raw values per row."""

    title: str
    columns: list[str]
    rows: list[dict[str, Any]]


@dataclass
class Report:
    """Everything `dlops report` shows, computed once and rendered in any format."""

    runs: list[Run]  # in leaderboard order
    metrics: list[str]  # the chosen metrics; the first one ranks the runs
    modes: dict[str, str]  # metric -> min | max
    varying: list[str]  # override keys whose values differ between the runs
    shared: dict[str, str]  # overrides every run has with the same value
    leaderboard: Table
    groups: Table
    groups_merge: bool  # whether grouping puts several runs in one row


def build_report(runs: Sequence[Run], metrics: Sequence[str] = (), sort: str | None = None,
                 reverse: bool = False, filters: Sequence[str] = (),
                 group_by: Sequence[str] | None = None) -> Report:
    """Filter, rank and group `runs` (see `dlops report --help` for the options)."""
    runs = filter_runs(runs, filters)
    metrics = list(dict.fromkeys(metrics)) or [_most_common_monitor(runs)]
    tests = [m for m in TEST_METRICS if any(m in run.test_metrics for run in runs)]
    tests += sorted({k for run in runs for k in run.test_metrics} - set(tests))
    evals = sorted({k for run in runs for k in run.eval_metrics})  # beside the run's own
    if sort and sort not in metrics + tests + evals and _recorded(sort, runs):  # --sort val/acc
        metrics.append(sort)
    check_metrics(metrics, runs)
    modes = {m: metric_mode(m, runs) for m in metrics}
    varying = varying_overrides(runs)
    rows = [leaderboard_row(run, varying, metrics, modes) for run in runs]
    chosen = [f"{kind}_{m}" for m in metrics for kind in ("best", "final")]
    # a metric named like a column (`status`, `run_dir`) is the run's data, never that column
    fixed = {*varying, *chosen, "status", "epochs", "max_epochs", "duration_s", "run_dir"}
    scores = [*chosen, *(m for m in [*tests, *evals] if m not in fixed)]
    columns = [*varying, "status", "epochs", "max_epochs", *scores, "duration_s", "run_dir"]
    rows = [{c: row.get(c) for c in columns} for row in rows]

    column = sort_column(sort or metrics[0], columns)
    descending = column_mode(column, modes, runs) == "max"
    order = sort_order([row[column] for row in rows], descending != reverse)
    runs, rows = [runs[i] for i in order], [rows[i] for i in order]

    keys = group_keys(group_by, varying, runs)
    values = [*scores, "duration_s"]
    groups = aggregate(runs, rows, keys, values)
    if column in values:  # best group first, by the mean of the ranking column
        ranked = sort_order([g[f"{column}_mean"] for g in groups], descending != reverse)
        groups = [groups[i] for i in ranked]
    group_columns = [*keys, "n", "statuses", *(f"{c}_{s}" for c in values for s in ("mean", "std"))]
    first = "max" if descending != reverse else "min"
    title = f"{len(runs)} runs ranked by {column} ({first} first)"
    grouped_by = ", ".join(keys) if keys else "all runs"
    return Report(
        runs=runs, metrics=metrics, modes=modes, varying=varying, shared=shared_overrides(runs),
        leaderboard=Table(title, columns, rows),
        groups=Table(f"mean ± std over completed runs, grouped by {grouped_by}", group_columns,
                     groups),
        groups_merge=len(groups) < len(runs),
    )


def filter_runs(runs: Sequence[Run], filters: Sequence[str]) -> list[Run]:
    """Keep the runs that match every `key=value` / `key!=value` (`=` on one key repeated: any)."""
    wanted: dict[str, set[str]] = {}
    unwanted: list[tuple[str, str]] = []
    for text in filters:
        key, sep, value = text.partition("=")
        if not sep or not key.rstrip("!"):
            raise ConfigError(f"--filter {text!r} must look like key=value or key!=value, "
                              "e.g. --filter status=completed")
        if key.endswith("!"):
            unwanted.append((key[:-1], value))
        else:
            wanted.setdefault(key, set()).add(value)
    for key in [*wanted, *(k for k, _ in unwanted)]:
        if not _known(key, runs):
            raise ConfigError(f"--filter: no run has {key!r}; filter on status, an override key "
                              f"({', '.join(_override_keys(runs))}) or any key of the runs' config")
    kept = [run for run in runs
            if all(any(_same(_field(run, k), v) for v in values) for k, values in wanted.items())
            and all(not _same(_field(run, k), v) for k, v in unwanted)]
    if not kept:
        statuses = ", ".join(f"{n} {s}" for s, n in Counter(r.status for r in runs).items())
        raise ConfigError(f"no run matches {' '.join(filters)} "
                          f"(the {len(runs)} runs found: {statuses})")
    return kept


def _override_keys(runs: Sequence[Run]) -> list[str]:
    """`status` and every override key of the runs, sorted (what --filter and --group-by name)."""
    return sorted({"status"} | {k for run in runs for k in run.overrides})


def _known(key: str, runs: Sequence[Run]) -> bool:
    """Whether `key` is the status, an override key or a key of some run's config."""
    return key in _override_keys(runs) or any(key in run.config for run in runs)


def _field(run: Run, key: str) -> str | None:
    return run.status if key == "status" else run.setting(key)


def _same(value: str | None, wanted: str) -> bool:
    """Whether a run's value is the one asked for: as text, or as the same number (1e-4 = 0.0001)."""
    if value == wanted:
        return True
    try:
        return value is not None and float(value) == float(wanted)
    except ValueError:
        return False


def varying_overrides(runs: Sequence[Run]) -> list[str]:
    """Override keys whose value, as each run resolved it, differs between runs, in order: a run
    that left a key at its default shows the default's value."""
    keys = dict.fromkeys(k for run in runs for k in run.overrides)
    return [k for k in keys if len({run.setting(k) for run in runs}) > 1]


def shared_overrides(runs: Sequence[Run]) -> dict[str, str]:
    """Override keys (of any run) that every run resolved to the same value."""
    keys = dict.fromkeys(k for run in runs for k in run.overrides)
    values = {k: {run.setting(k) for run in runs} for k in keys}
    return {k: found.pop() for k, found in values.items() if len(found) == 1 and None not in found}


def metric_mode(metric: str, runs: Sequence[Run]) -> str:
    """`min` or `max`, by the rule runs follow (`dlops.rundir.metrics`): a run's own recorded mode
    for the metric it monitors (and for that metric in another stage: `test/score` as
    `val/score`), else the direction the name tells; a name that tells none ranks ascending."""
    for run in runs:
        if run.mode in ("min", "max") and (run.monitor == metric or (
                stage(metric) in ("val", "test") and stage(run.monitor) in ("val", "test")
                and without_stage(metric) == without_stage(run.monitor))):
            return run.mode
    return infer_mode(metric) or "min"


def _recorded(metric: str, runs: Sequence[Run]) -> bool:
    """Whether some run recorded `metric` (in its summary or its metrics CSV)."""
    return any(metric == run.monitor or metric in run.last_metrics or metric in run.curves for run in runs)


def check_metrics(metrics: Sequence[str], runs: Sequence[Run]) -> None:
    """Raise ConfigError for a metric that no run recorded (a typo would show empty columns)."""
    known = {m for run in runs for m in (run.monitor, *run.last_metrics, *run.test_metrics)}
    for metric in metrics:
        if metric not in known and not any(metric in run.curves for run in runs):
            known |= {m for run in runs for m in run.curves}
            raise ConfigError(f"--metric {metric!r}: no run recorded it; choose one of "
                              f"{', '.join(sorted(known))}")


def _most_common_monitor(runs: Sequence[Run]) -> str:
    return Counter(run.monitor for run in runs).most_common(1)[0][0]


def leaderboard_row(run: Run, varying: Sequence[str], metrics: Sequence[str],
                    modes: dict[str, str]) -> dict[str, Any]:
    """One run's raw values: varying overrides, status, progress, metrics, duration, path."""
    row: dict[str, Any] = {k: run.setting(k) for k in varying}
    row.update(status=run.status, epochs=run.epochs, max_epochs=run.max_epochs)
    for metric in metrics:
        row[f"best_{metric}"] = best_value(run, metric, modes[metric])
        row[f"final_{metric}"] = final_value(run, metric)
    row.update(duration_s=run.duration_s, run_dir=str(run.path))
    # metric names come from the run's files: one named like a column (`status`) never replaces it
    row.update({k: v for k, v in {**run.test_metrics, **run.eval_metrics}.items() if k not in row})
    return row


def best_value(run: Run, metric: str, mode: str) -> float | None:
    """The best value of `metric`: the checkpoint callback's for the monitor, else the CSV's."""
    if metric == run.monitor and run.best_metric is not None:
        return run.best_metric
    values = [v for _, v in run.curves.get(metric, []) if math.isfinite(v)]
    if not values:
        return None
    return min(values) if mode == "min" else max(values)


def final_value(run: Run, metric: str) -> float | None:
    """The last recorded value of `metric` (summary first, CSV for older runs)."""
    if metric in run.last_metrics:
        return run.last_metrics[metric]
    if metric in run.test_metrics:
        return run.test_metrics[metric]
    curve = run.curves.get(metric)
    return curve[-1][1] if curve else None


def sort_column(key: str, columns: Sequence[str]) -> str:
    """The column `--sort key` means: a column name, or a chosen metric (its best value)."""
    if key in columns:
        return key
    if f"best_{key}" in columns:
        return f"best_{key}"
    raise ConfigError(f"--sort {key!r} is not a column; choose one of {', '.join(columns)} "
                      f"(add --metric {key} to rank by another metric)")


def column_mode(column: str, modes: dict[str, str], runs: Sequence[Run]) -> str:
    """Whether smaller (`min`) or larger (`max`) values of `column` rank first: metrics by their
    direction, other columns ascending."""
    metric = column.split("_", 1)[1] if column.startswith(("best_", "final_")) else column
    if metric in modes:
        return modes[metric]
    name = metric.removeprefix("eval_") if column.startswith("eval_") else metric
    if stage(name) in ("val", "test", "train"):
        return metric_mode(name, runs)
    return "min"


def sort_order(values: Sequence[Any], descending: bool) -> list[int]:
    """Indices that sort `values`: numbers, then text, then missing or NaN values (stable)."""
    items = [_number_or_text(v) for v in values]
    numbers = sorted((i for i, v in enumerate(items) if isinstance(v, float)),
                     key=lambda i: items[i], reverse=descending)
    texts = sorted((i for i, v in enumerate(items) if isinstance(v, str)),
                   key=lambda i: items[i], reverse=descending)
    return numbers + texts + [i for i, v in enumerate(items) if v is None]


def _number_or_text(value: Any) -> float | str | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return None if math.isnan(number) else number


# overrides that tell runs of one setting apart rather than set it
UNGROUPED = ("seed", "name", "tags")


def group_keys(group_by: Sequence[str] | None, varying: Sequence[str],
               runs: Sequence[Run]) -> list[str]:
    """`--group-by` keys (comma lists allowed); by default every varying override but the seed and
    the run's labels (`name`, `tags`): grouping by what tells runs apart leaves groups of one."""
    if group_by is None:
        return [k for k in varying if k not in UNGROUPED]
    keys = [k.strip() for item in group_by for k in item.split(",") if k.strip()]
    for key in keys:
        if not _known(key, runs):
            raise ConfigError(f"--group-by {key!r}: no run has it; group by status or an override "
                              f"key ({', '.join(_override_keys(runs))})")
    return list(dict.fromkeys(keys))


def aggregate(runs: Sequence[Run], rows: Sequence[dict[str, Any]], keys: Sequence[str],
              columns: Sequence[str]) -> list[dict[str, Any]]:
    """One row per value combination of `keys`, in leaderboard order: n, statuses, and for
    each column mean and sample std over the group's completed runs."""
    groups: dict[tuple, list[int]] = {}
    for i, run in enumerate(runs):
        groups.setdefault(tuple(_field(run, k) for k in keys), []).append(i)
    table = []
    for values, members in groups.items():
        completed = [rows[i] for i in members if runs[i].status == "completed"]
        row: dict[str, Any] = dict(zip(keys, values, strict=True))
        row["n"] = len(completed)
        statuses = Counter(runs[i].status for i in members)
        row["statuses"] = ", ".join(f"{n} {s}" for s, n in statuses.items())
        for column in columns:
            numbers = [r[column] for r in completed
                       if r[column] is not None and math.isfinite(r[column])]
            row[f"{column}_mean"] = statistics.fmean(numbers) if numbers else None
            row[f"{column}_std"] = statistics.stdev(numbers) if len(numbers) > 1 else None
        table.append(row)
    return table
