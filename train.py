"""Train a model from the composed Hydra config: `python train.py [overrides]`.

Only Hydra is imported here; torch and Lightning load inside the task, so `--help` and
`--cfg job` answer at once. `resume=RUN_DIR` (or a sweep dir, or `latest`) continues a run
where it stopped: the command is rewritten before Hydra starts (see dlops.lifecycle.resume).
"""

import sys

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from dlops.lifecycle.resolvers import register_resolvers
from dlops.lifecycle.resume import hydra_argv

register_resolvers()
# Hydra deep-copies its config repository, with this store of every plugin's schemas, once per
# config group to print --help (~0.8 s). The store hands out only copies of what it holds: share it.
ConfigStore.__deepcopy__ = lambda self, memo: self


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from dlops.pipeline import train

    return train(cfg)


if __name__ == "__main__":
    sys.argv = hydra_argv(sys.argv)
    main()
