"""nlpexp's user config layer: ./conf in the working directory, searched ahead of nlpexp's shipped configs.

`conf/experiment/mine.yaml` in a project then runs as `nlpexp experiment=mine`, and a file there with the name of
a shipped one (conf/model/bert.yaml) replaces it. Only nlpexp's own runs get the layer: other Hydra apps in the
same environment are left as they are.

The wings' own YAML (task, smoke, studies: nlpexp/tasks/<wing>/conf) is searched right after nlpexp's conf, so a
wing's `task/story.yaml` or `experiment/story_study.yaml` is found like a shipped one, and the user layer still
replaces it.
"""
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.plugins.search_path_plugin import SearchPathPlugin


class NlpexpUserConf(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        user = Path.cwd() / "conf"
        ours = any(e.path in ("pkg://nlpexp.conf", "pkg://nlpexp/conf") or e.path.rstrip("/").endswith("nlpexp/conf")
                   for e in search_path.get_path())
        if ours:
            from nlpexp.config.registry import conf_dirs

            for folder in reversed(conf_dirs()):
                search_path.append(provider="nlpexp-wing", path=f"file://{folder}",
                                   anchor=SearchPathQuery(provider="main"))
        if ours and user.is_dir():
            search_path.prepend(provider="nlpexp-user", path=f"file://{user.resolve()}",
                                anchor=SearchPathQuery(provider="main"))
