"""dlops' SLURM launcher under the name users know, `hydra/launcher=submitit_slurm`: Hydra's
submitit launcher plus what a cluster user needs (see launcher.py)."""

from dataclasses import dataclass, field

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.config_store import ConfigStore
from hydra.plugins.search_path_plugin import SearchPathPlugin
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf


@dataclass
class DlopsSlurmConf(SlurmQueueConf):
    """Hydra's submitit_slurm settings with dlops' launcher and defaults."""

    _target_: str = "hydra_plugins.dlops_slurm_launcher.launcher.DlopsSlurmLauncher"
    # how many times a job may requeue itself after its time-limit signal (it resumes each time)
    max_num_timeout: int = 3
    # when one rank of a multi-task job fails, srun ends the others within about a second (not ~20 s)
    setup: list[str] | None = field(default_factory=lambda: ["export SLURM_KILL_BAD_EXIT=1"])


class DlopsSlurmEntry(SearchPathPlugin):
    """Stores dlops' launcher as `hydra/launcher=submitit_slurm`. Hydra imports every plugin module
    (hydra-submitit-launcher's stores its own entry under that name) before it builds the config
    search path, so storing here, not at import, makes dlops' entry the one that counts."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        ConfigStore.instance().store(group="hydra/launcher", name="submitit_slurm",
                                     node=DlopsSlurmConf, provider="dlops")
