"""dlops' Hydra sweeper on Optuna's ask/tell API: `override /hydra/sweeper: dlops_optuna`.

Hydra finds sweepers only under the `hydra_plugins` namespace, and imports every module here
when it starts, so nothing here imports optuna at module level (it is imported when a sweep
starts). `config.py` registers the sweeper's config with Hydra's ConfigStore; `sweeper.py` runs
the study; `search_space.py` turns `choice(...)`, `interval(a, b)`, `tag(log, ...)` overrides
into Optuna distributions.
"""
