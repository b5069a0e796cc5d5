"""dlops' own configs after the user's: the Hydra plugin that puts the packaged `dlops/conf` into
the config search path right after the primary folder (see dlops/configs.py). Only for dlops'
own runs and compositions, so other Hydra apps installed beside dlops never see its options."""

from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.plugins.search_path_plugin import SearchPathPlugin


class DlopsConfigs(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from dlops import configs

        if not configs.packaged_searched():
            return
        packaged = str(configs.PACKAGED)
        if any(element.path.removeprefix("file://") == packaged for element in search_path.get_path()):
            return  # dlops' folder is the primary one already
        search_path.append(provider="dlops", path=f"file://{packaged}",
                           anchor=SearchPathQuery(provider="main"))
