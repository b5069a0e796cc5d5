"""Metric names as models log them: the stage a name belongs to, whether larger or smaller is
better, and a form that is safe in a file name.

Any separator counts (`val_acc`, `val/acc`, `val.acc`, `val-acc`, `valAcc`): the name is split into
words, and the words decide. Standard library only: runs (`mode=auto`), sweeps, the Optuna sweeper
and `dlops report` all follow these rules.
"""

import re

from dlops.errors import ConfigError

STAGES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
          "test": "test", "testing": "test"}
# words that name something to make small: losses, errors, distances
SMALLER_IS_BETTER = frozenset({
    "loss", "losses", "nll", "ce", "bce", "err", "error", "errors", "mae", "mse", "rmse", "msle",
    "rmsle", "mape", "smape", "wape", "perplexity", "ppl", "wer", "cer", "ter", "fid", "kid", "lpips",
    "distance", "dist", "brier", "ece", "hamming", "kl", "divergence", "regret", "cost", "risk"})
# words that name something to make large: accuracy-like scores
LARGER_IS_BETTER = frozenset({
    "acc", "accuracy", "auroc", "auc", "auprc", "roc", "f1", "fbeta", "precision", "recall",
    "sensitivity", "specificity", "r2", "iou", "jaccard", "dice", "map", "ap", "ndcg", "mrr", "hit",
    "hits", "psnr", "ssim", "bleu", "rouge", "meteor", "mcc", "kappa", "top1", "top5", "reward"})
MODES = ("min", "max")


def words(name: str) -> list[str]:
    """The lower-case words of a metric name: `val/topAcc_1` -> ['val', 'top', 'acc', '1']."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)  # camelCase boundaries
    return [w.lower() for w in re.split(r"[^A-Za-z0-9]+", spaced) if w]


def stage(name: str) -> str | None:
    """`train`, `val` or `test` when the name starts with that stage (any separator), else None."""
    first = (words(name) or [""])[0]
    return STAGES.get(first)


def without_stage(name: str) -> str:
    """The name after its stage word and separator (`val/acc` -> `acc`); the name when it has none."""
    match = re.match(r"([A-Za-z][a-z]*)([^A-Za-z0-9]+|(?=[A-Z]))", name)  # the first word, then a break
    return name[match.end():] if match and match.group(1).lower() in STAGES else name


def infer_mode(name: str) -> str | None:
    """`min` for names that are clearly losses or errors, `max` for accuracy-like names, None when
    the words say neither (or both)."""
    found = set()
    for word in words(name):
        for candidate in (word, word.rstrip("0123456789")):
            if candidate in SMALLER_IS_BETTER:
                found.add("min")
            elif candidate in LARGER_IS_BETTER:
                found.add("max")
    return found.pop() if len(found) == 1 else None


def resolve_mode(monitor: str, mode: str | None) -> str:
    """The direction to optimise `monitor`: an explicit `min`/`max` always wins; `auto` (or None)
    is inferred from the name, and a name that cannot be told raises ConfigError asking for it."""
    if mode in MODES:
        return mode
    inferred = infer_mode(monitor)
    if inferred is None:
        raise ConfigError(f"mode=auto cannot tell whether a larger or a smaller {monitor} is better; "
                          f"add mode=max or mode=min to the command (or to the experiment's config).")
    return inferred


def file_safe(name: str) -> str:
    """`name` with directory separators replaced by `_`, so that it names a file, never a folder."""
    return re.sub(r"[/\\]", "_", name)
