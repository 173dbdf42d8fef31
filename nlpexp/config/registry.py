"""Which tasks and models exist and how they go together, gathered from the wings: every folder
`nlpexp/tasks/<wing>/` declares its tasks and adapters in its `__init__.py` (records, no heavy imports), so adding a
wing edits no file here. A model is what the wings' adapters of one name make of it: per wing, the adapter module
and the dataclasses of what it reads.
"""
import importlib
import pkgutil
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

from nlpexp import tasks as _wings
from nlpexp.errors import UserError


@dataclass(frozen=True)
class Model:
    name: str
    adapters: MappingProxyType  # wing -> its Adapter record
    data_parallel: bool = False  # trainer.nproc > 1 runs it under torchrun
    needs_key: str | None = None  # a paid web API: smoke sweeps run it only when this variable is set

    def adapter(self, wing: str) -> str:
        return self.adapters[wing].module


def wings() -> list[str]:
    """The folders under nlpexp/tasks/ that are packages: the wings, by name."""
    return sorted(info.name for info in pkgutil.iter_modules(_wings.__path__) if info.ispkg)


def _scan():
    tasks, adapters = {}, {}
    for name in wings():
        declared = importlib.import_module(f"nlpexp.tasks.{name}")
        for task in getattr(declared, "TASKS", ()):
            tasks[task.name] = replace(task, wing=name)
        for record in getattr(declared, "ADAPTERS", ()):
            adapters.setdefault(record.model, {})[name] = record
    models = {model: Model(model, MappingProxyType(by_wing), any(a.data_parallel for a in by_wing.values()),
                           next((a.needs_key for a in by_wing.values() if a.needs_key), None))
              for model, by_wing in adapters.items()}
    for task in tasks.values():  # a model a task lists but no wing adapts (posenc draws with transformer's sizes)
        for model in task.models:
            models.setdefault(model, Model(model, MappingProxyType({})))
    return MappingProxyType(tasks), MappingProxyType(models)


TASKS, MODELS = _scan()


def check(task: str, model: str, mode: str = "train") -> None:
    if task not in TASKS:
        raise UserError(f"unknown task '{task}'; available tasks: {', '.join(sorted(TASKS))}")
    if model not in MODELS:
        raise UserError(f"unknown model '{model}'; available models: {', '.join(sorted(MODELS))}")
    if model not in TASKS[task].models:
        raise UserError(f"model '{model}' does not support task '{task}'; "
                        f"supported models for {task}: {', '.join(TASKS[task].models)}")
    if mode not in TASKS[task].modes:
        raise UserError(f"mode '{mode}' is not available for task '{task}'; use one of: {', '.join(TASKS[task].modes)}")


def wing(task: str) -> str:
    return TASKS[task].wing


def runner(task: str):
    """The task's recipe module: nlpexp/tasks/<wing>/recipe.py."""
    return importlib.import_module(f"nlpexp.tasks.{TASKS[task].wing}.recipe")


def adapter(model: str, wing_name: str):
    """The model's adapter module in a wing, e.g. adapter('bert_fc', 'novel') -> nlpexp.tasks.novel.bert."""
    return importlib.import_module(f"nlpexp.tasks.{wing_name}.{MODELS[model].adapter(wing_name)}")


def conf_dirs() -> list[Path]:
    """Each wing's YAML (task, smoke, studies): nlpexp/tasks/<wing>/conf, searched after nlpexp/conf."""
    return [folder for name in wings() if (folder := Path(_wings.__path__[0]) / name / "conf").is_dir()]


def shipped_roots() -> list[Path]:
    """nlpexp's own config folders: nlpexp/conf, then each wing's."""
    return [Path(__file__).parents[1] / "conf", *conf_dirs()]


# -- the config search path of a run: ./conf (the user layer), the shipped folders, --config-dir, hydra.searchpath --
def config_dir_args(args: list[str]) -> tuple[list[str], str | None]:
    """(args without --config-dir/-cd DIR, DIR)."""
    rest, found, i = [], None, 0
    while i < len(args):
        flag, eq, value = args[i].partition("=")
        if flag in ("--config-dir", "-cd"):
            found = value if eq else (args[i + 1] if i + 1 < len(args) else "")
            i += 1 if eq else 2
            continue
        rest.append(args[i])
        i += 1
    return rest, found


def searchpath_override(overrides: list[str], config_dir: str | None) -> list[str]:
    """The overrides with --config-dir folded into hydra.searchpath, as Hydra's run will search."""
    items = [o for o in overrides if not o.startswith("hydra.searchpath=")]
    given = next((o.split("=", 1)[1] for o in overrides if o.startswith("hydra.searchpath=")), None)
    paths = [p.strip().strip("'\"") for p in given.strip("[]").split(",") if p.strip()] if given else []
    if config_dir is not None:
        folder = Path(config_dir).expanduser().resolve()
        if not folder.is_dir():
            raise UserError(f"--config-dir {config_dir}: no such folder")
        paths.append(f"file://{folder}")
    return items + ([f"hydra.searchpath=[{','.join(paths)}]"] if paths else [])


def config_roots(overrides: list[str], config_dir: str | None) -> list[Path]:
    """The folders Hydra will search for config groups, as a run with these overrides would: ./conf (the user
    layer, hydra_plugins/nlpexp_user_conf), nlpexp's own conf, --config-dir and hydra.searchpath, Hydra's own."""
    import importlib.util

    paths = [p.split("=", 1)[1] for p in searchpath_override(
        [o for o in overrides if o.startswith("hydra.searchpath=")], config_dir)]
    given = [p.strip().strip("'\"") for p in (paths[0].strip("[]").split(",") if paths else []) if p.strip()]
    roots = [Path.cwd() / "conf", *shipped_roots()]
    for entry in given + ["pkg://hydra.conf"]:
        scheme, _, where = entry.rpartition("://")
        if scheme == "pkg":
            try:
                spec = importlib.util.find_spec(where.replace("/", "."))
            except (ImportError, ValueError):
                spec = None
            roots += [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
        else:
            roots.append(Path(where).expanduser())
    return [r for r in roots if r.is_dir()]


def is_group(key: str, roots: list[Path]) -> bool:
    """key (without + ~ and @package) names a config group: a folder of configs in the search path."""
    parts = key.split("/")
    return bool(key) and all(p and p not in (".", "..") for p in parts) and any((r / key).is_dir() for r in roots)


def climbing_option(option: str) -> bool:
    """A group option that is a path out of its group's folder (../x, /abs/x, ~/x, a\\b) instead of a name."""
    parts = option.replace("\\", "/").split("/")
    return option.startswith(("/", "~")) or "\\" in option or any(p in ("..", ".") for p in parts)
