"""Train a model from the composed Hydra config: `python train.py [overrides]`.

Only Hydra is imported here; torch and Lightning load inside the task, so `--help` and
`--cfg job` answer at once.
"""

import hydra
from omegaconf import DictConfig

from dlops.runs.resolvers import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from dlops.pipeline import train

    return train(cfg)


if __name__ == "__main__":
    main()
