"""K-fold cross-validation: `datamodule.folds=K datamodule.fold=i` validates on fold i of K.

The folds split the training pool (train + val; the test split is left alone) into K stratified,
disjoint validation folds that together cover it, from the fixed split seed, so every fold of
every run sees the same assignment. Run all folds as a sweep:
`python train.py -m datamodule.folds=5 datamodule.fold=0,1,2,3,4`. Torch is imported lazily:
`fold_problems` is checked before anything heavy runs.
"""

from typing import TYPE_CHECKING, Any

from dlops.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from dlops.data.base import Split


def fold_problems(folds: Any, fold: Any) -> list[str]:
    """What is wrong with `folds`/`fold`, one line each (empty when they are fine)."""
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if folds is None:
        return [] if fold is None else [
            f"datamodule.fold={fold} needs datamodule.folds: set datamodule.folds=K (K >= 2) for "
            "K-fold cross-validation, or datamodule.fold=null"]
    if not is_int(folds) or folds < 2:
        return [f"datamodule.folds must be an integer >= 2 (or null for the plain split), got {folds!r}"]
    if not is_int(fold) or not 0 <= fold < folds:
        every = ",".join(str(i) for i in range(folds))
        return [f"datamodule.fold must be an integer from 0 to {folds - 1} with datamodule.folds={folds}, "
                f"got {fold!r}; run every fold as a sweep: -m datamodule.folds={folds} "
                f"datamodule.fold={every}"]
    return []


def check_folds(folds: Any, fold: Any) -> None:
    """Raise one ConfigError when `folds`/`fold` are not a fold of a K-fold split (or both null)."""
    problems = fold_problems(folds, fold)
    if problems:
        raise ConfigError(problems[0])


def fold_numbers(labels: "torch.Tensor", folds: int, seed: int) -> "torch.Tensor":
    """Each example's fold: every class in a fixed random order (from `seed`), dealt out to the
    folds in turn, so each fold holds every class in proportion and sizes differ by at most one."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    members = [torch.nonzero(labels == c).flatten() for c in labels.unique()]
    order = torch.cat([m[torch.randperm(len(m), generator=generator)] for m in members])
    numbers = torch.empty_like(labels)
    numbers[order] = torch.arange(len(order)) % folds
    return numbers


def fold_split(train: "Split", val: "Split", test: "Split", folds: int, fold: int,
               seed: int) -> tuple["Split", "Split"]:
    """Train and val of fold `fold` of `folds`, over the pool train + val. Where val is the test
    split itself (an image folder without val/), the pool is train alone: test stays unseen."""
    import torch

    from dlops.data.base import Split

    pool = train if val is test else Split(torch.cat([train.images, val.images]),
                                           torch.cat([train.labels, val.labels]))
    held_out = fold_numbers(pool.labels, folds, seed) == fold
    return Split(pool.images[~held_out], pool.labels[~held_out]), Split(pool.images[held_out],
                                                                        pool.labels[held_out])
