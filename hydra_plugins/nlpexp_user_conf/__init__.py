"""nlpexp's user config layer: ./conf in the working directory, searched ahead of nlpexp's shipped configs.

`conf/experiment/mine.yaml` in a project then runs as `nlpexp experiment=mine`, and a file there with the name of
a shipped one (conf/model/bert.yaml) replaces it. Only nlpexp's own runs get the layer: other Hydra apps in the
same environment are left as they are.
"""
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.plugins.search_path_plugin import SearchPathPlugin


class NlpexpUserConf(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        user = Path.cwd() / "conf"
        ours = any(e.path in ("pkg://nlpexp.conf", "pkg://nlpexp/conf") or e.path.rstrip("/").endswith("nlpexp/conf")
                   for e in search_path.get_path())
        if ours and user.is_dir():
            search_path.prepend(provider="nlpexp-user", path=f"file://{user.resolve()}",
                                anchor=SearchPathQuery(provider="main"))
