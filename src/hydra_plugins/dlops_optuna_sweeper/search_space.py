"""Search spaces written as Hydra overrides, parsed with Hydra's own override grammar.

    choice(a, b, ...) or a,b,...     one of the values (lists too: choice([64], [128,64]))
    interval(a, b)                   a float in [a, b]; int(interval(a, b)) for an integer
    tag(log, interval(a, b))         the same, log-uniform
    range(a, b[, step])              an integer (or float) from a up to b, exclusive, by step
    anything else                    a fixed value, passed to every trial as written
"""

from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob, Override, Transformer
from hydra.errors import CompactHydraException

PRIMITIVES = (str, int, float, bool, type(None))
WRITE_IT_AS = "write the space as choice(a, b), interval(a, b), tag(log, interval(a, b)) or range(a, b)"


class SearchSpaceError(CompactHydraException):
    """A search space Optuna cannot use; Hydra prints the message alone, without a traceback."""


def search_space(lines: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Optuna distributions by key, and the fixed overrides; a later line for a key wins (the
    command line over `hydra.sweeper.params`), so `key=value` fixes a searched key."""
    by_key: dict[str, Override] = {}
    for override in OverridesParser.create().parse_overrides(lines):
        by_key.pop(override.key_or_group, None)
        by_key[override.key_or_group] = override
    space = {key: distribution(o) for key, o in by_key.items() if o.is_sweep_override()}
    fixed = [o.input_line for o in by_key.values() if not o.is_sweep_override()]
    return space, fixed


def distribution(override: Override) -> Any:
    """The Optuna distribution of one sweep override."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    key, sweep = override.key_or_group, override.value()
    if isinstance(sweep, Glob):  # glob(...) picks config group options, none of them numbers
        raise SearchSpaceError(f"hparams_search: {override.input_line} cannot be searched by Optuna; "
                               + WRITE_IT_AS)
    if override.is_choice_sweep() or (override.is_range_sweep() and sweep.shuffle):
        choices = list(override.sweep_iterator(transformer=Transformer.encode))
        odd = [c for c in choices if not isinstance(c, PRIMITIVES)]
        if odd:
            raise SearchSpaceError(f"hparams_search: {key} has a choice Optuna cannot store: {odd[0]!r}")
        return CategoricalDistribution(choices)
    if override.is_interval_sweep():
        log = "log" in sweep.tags
        if isinstance(sweep.start, int) and isinstance(sweep.end, int):
            return IntDistribution(sweep.start, sweep.end, log=log)
        return FloatDistribution(float(sweep.start), float(sweep.end), log=log)
    if override.is_range_sweep():
        values = list(override.sweep_iterator())
        if values and all(isinstance(v, int) for v in values):
            return IntDistribution(min(values), max(values), step=abs(sweep.step))
        return CategoricalDistribution(values)
    raise SearchSpaceError(f"hparams_search: {override.input_line} cannot be searched by Optuna; "
                           + WRITE_IT_AS)


def trial_overrides(params: dict[str, Any], fixed: list[str]) -> list[str]:
    """The overrides of one trial: its sampled values, then the fixed overrides."""
    return [f"{key}={_text(value)}" for key, value in params.items()] + fixed


def _text(value: Any) -> str:
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)
