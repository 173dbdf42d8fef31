"""A run's config composed (checked_config: the user's config layer, Hydra's compose, the smoke file) and the one
config check, run before any run folder exists (and by `dry_run=true`): every error at once.

1. the task x model x mode is one the registry knows;
2. every typed node against its schema (nlpexp/config/schema.py, the wings' config.py): unknown keys, ranges, choices;
3. the rules across keys: each dataclass's own `check` (the model's adapter, the typed nodes), then the wing's
   (files that must exist, what a mode needs);
4. every key given on the command line that this task x model x mode does not read is refused: it is not a field
   of a dataclass the run consumes (its wing's `consumes`: the adapter's, its loop's, the mode's), said with what
   reads it instead (the fields' metadata).
No heavy import: torch, transformers and the adapters stay unloaded.
"""
import importlib
import re
from contextlib import contextmanager
from dataclasses import fields, is_dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from nlpexp.config import registry
from nlpexp.config.registry import climbing_option, config_roots, is_group, searchpath_override
from nlpexp.errors import UserError
from nlpexp.config.schema import MODE_ARGS, consumed_fields, typed, typed_errors


def config_errors(cfg: DictConfig, overrides=()) -> list[str]:
    registry.check(cfg.task.name, cfg.model.name, cfg.mode)
    checks = wing_checks(registry.wing(cfg.task.name))
    renamed = {old: new for old, new in getattr(checks, "RENAMED", {}).items()
               if OmegaConf.select(cfg, old, default=MISSING_KEY) is not MISSING_KEY}  # e.g. a +generate.beam_size
    errors = [f"{old}: renamed, use {new}" for old, new in renamed.items()]
    errors += [e for e in typed_errors(cfg) if e.split(":", 1)[0] not in renamed]
    seed = cfg.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 32:
        errors.append(f"seed must be an integer in [0, 2^32 - 1] (got {seed!r})")
    errors += tag_errors(cfg.get("tags"))
    errors += secret_env_errors(cfg)
    if cfg.get("print_config") not in (None, "diff", "full", "none"):
        errors.append(f"print_config must be diff, full or none (got {cfg.get('print_config')!r})")
    if not isinstance(cfg.get("verbose", False), bool):
        errors.append(f"verbose must be true or false (got {cfg.get('verbose')!r})")
    for key in ("text", "prompt"):  # free text: whitespace only is no text
        value = cfg.get(key)
        if value is not None and not str(value).strip():
            errors.append(f"{key}= is empty (only whitespace): give the text to " +
                          ("classify" if key == "text" else "continue"))
        elif value is not None and any(ord(c) < 32 and c not in "\t\n\r" or ord(c) == 127 for c in str(value)):
            errors.append(f"{key}= holds control characters: it is not text")
    if errors:  # the rules across keys read the typed values: only once they are sound
        return errors
    adapter = registry.MODELS[cfg.model.name].adapters.get(registry.wing(cfg.task.name))
    model = typed(cfg.model, adapter.config) if adapter else None
    loop = typed(cfg.trainer, adapter.trainer) if adapter and adapter.trainer and cfg.mode == "train" else None
    errors += [e for node in [model, loop, *typed_nodes(cfg)] if hasattr(node, "check") for e in node.check(cfg)]
    errors += checks.check(cfg, adapter, model)
    errors += unread_errors(cfg, overrides, checks.consumes(cfg, adapter, model))
    precision = (cfg.get("trainer") or {}).get("precision")
    if precision == "fp16" and cfg.device.name in ("cpu", "mps"):
        errors.append(f"trainer.precision=fp16 needs a CUDA GPU (device={cfg.device.name}): use bf16 or fp32")
    if cfg.get("logger") is not None:
        from nlpexp.report.loggers import missing_dependency

        missing = missing_dependency(cfg)
        if missing:
            errors.append(missing)
    from nlpexp.report.console import progress_error

    errors += [progress_error()] if progress_error() else []
    return errors


def tag_errors(tags) -> list[str]:
    """tags=[a,b]: a list of words (no commas: nlpexp-report --tags takes them comma-separated)."""
    if tags is None:
        return []
    if not OmegaConf.is_list(tags) and not isinstance(tags, list):
        return [f"tags must be a list, e.g. tags=[baseline,{tags}] (got {tags!r})"]
    bad = [t for t in tags if not isinstance(t, str) or not t.strip() or "," in t]
    return [f"tags must be non-empty words without commas (got {', '.join(repr(t) for t in bad)})"] if bad else []


ENV_READ = re.compile(r"\$\{\s*oc\.env\s*:\s*([^,}\s]+)")


def secret_env_errors(cfg: DictConfig) -> list[str]:
    """`${oc.env:HF_TOKEN}` (any secret-named variable: *_API_KEY, *_PASSWORD, ...) in a setting is refused: resolved,
    the secret would be in the run's config, metrics.json and loggers, where only token-shaped values are caught
    (nlpexp/secrets.py); the libraries read their keys from the environment themselves."""
    from nlpexp.secrets import is_secret_key

    found: dict[str, str] = {}

    def walk(node, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{where}.{key}" if where else str(key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")
        elif isinstance(node, str):
            for name in ENV_READ.findall(node):
                if is_secret_key(name.strip("'\"")):
                    found.setdefault(where, name.strip("'\""))

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return [f"{where}=${{oc.env:{name}}} puts the secret {name} into the run's saved config and metrics.json: "
            f"leave it in the environment (what needs {name} reads it from there)" for where, name in found.items()]


def check_config(cfg: DictConfig, overrides=()) -> None:
    """Raise one UserError listing every problem found."""
    interpolation_error(cfg)
    errors = config_errors(cfg, overrides)
    if errors:
        raise UserError("; ".join(dict.fromkeys(errors)))


def interpolation_error(cfg: DictConfig) -> None:
    """Every ${...} in the config resolves (an unknown resolver, an unset environment variable, a missing key): one
    line naming the key, not OmegaConf's traceback from wherever the value is first read."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{key + ': ' if key else ''}cannot resolve its ${{...}}: {why}") from None


def as_consumed(cfg: DictConfig) -> DictConfig:
    """The run's config as its recipe reads it: the model node typed by the adapter's dataclass and the trainer
    node by its loop's (what the wing's `consumes` names), the keys other adapters and loops read left out, and
    the trainer node gone where nothing reads it (a Doc2Vec): code that reads a key its dataclass lacks fails."""
    from omegaconf import open_dict

    from nlpexp.config.schema import union

    adapter = registry.MODELS[cfg.model.name].adapters.get(registry.wing(cfg.task.name))
    if adapter is None or cfg.mode != "train":  # the other modes read the saved run's config
        return cfg
    model = typed(cfg.model, adapter.config)
    consumed = wing_checks(registry.wing(cfg.task.name)).consumes(cfg, adapter, model)
    cfg = cfg.copy()
    with open_dict(cfg):
        for group in ("model", "trainer"):
            readers = consumed.get(group)
            if isinstance(readers, str):
                del cfg[group]
            elif readers:
                cls = readers[0] if len(readers) == 1 else union(group, readers)
                cfg[group] = OmegaConf.structured(typed(cfg[group], cls))
    return cfg


def typed_nodes(cfg: DictConfig) -> list:
    """The top-level nodes composition typed with a dataclass (task, data, generate ...; the model and trainer
    are typed by the run's adapter and loop), as instances."""
    nodes = []
    for key in cfg:
        node = cfg.get(key)
        if key not in ("model", "trainer") and isinstance(node, DictConfig) and is_dataclass(OmegaConf.get_type(node)):
            nodes.append(OmegaConf.to_object(node))
    return nodes


def unread_errors(cfg: DictConfig, overrides, consumed: dict) -> list[str]:
    """Command-line `group.key=value` overrides that nothing on this path reads.

    consumed: group ('' = top-level keys) -> the dataclasses whose fields this run reads (a field whose metadata
    names `modes` is read in those modes only), or a string saying why none of the group is read; groups it does
    not name are not checked."""
    path = f"task={cfg.task.name} model={cfg.model.name}" + (f" mode={cfg.mode}" if cfg.mode != "train" else "")
    mode_keys = consumed_fields(MODE_ARGS)
    readers = [c for value in consumed.values() if not isinstance(value, str) for c in value]
    errors = []
    for item in overrides:
        key = item.lstrip("+~").split("=", 1)[0]
        if "." in key:
            group, leaf = key.split(".", 1)
            leaf = leaf.split(".")[0]
        else:
            group, leaf = "", key
            if item.startswith("+") and not known_root(cfg, key):
                errors.append(f"{key}: unknown top-level key (the top-level keys are: {', '.join(root_keys(cfg))}; "
                              "a setting of a group is group.key=value)")
                continue
            if key not in mode_keys:
                continue
        if group not in consumed:
            continue
        where = f"{group}.{leaf}" if group else leaf
        read = {} if isinstance(consumed[group], str) else consumed_fields(consumed[group])
        if leaf in read and cfg.mode in read[leaf].metadata.get("modes", (cfg.mode,)):
            continue
        hint = instead_hint(readers, where) or (consumed[group] if isinstance(consumed[group], str) else None) \
            or field_hint(cfg, group, leaf, read, mode_keys) \
            or next((c.UNREAD for c in consumed[group] if getattr(c, "UNREAD", None)), None) \
            or other_readers(cfg, group, leaf) or (f"it reads trainer.{', trainer.'.join(read)}" if group == "trainer"
                                                  and read else None)
        errors.append(f"{key} is not read by {path}" + (f" ({hint})" if hint else ""))
    return errors


def instead_hint(readers, where: str) -> str | None:
    """A field read here that does the job of `where` ('group.key'): its metadata's `instead`, or its class's
    INSTEAD."""
    for cls in readers:
        for f in fields(cls):
            if where in f.metadata.get("instead", {}):
                return f.metadata["instead"][where]
        if where in getattr(cls, "INSTEAD", {}):
            return cls.INSTEAD[where]
    return None


def field_hint(cfg: DictConfig, group: str, leaf: str, read: dict, mode_keys: dict) -> str | None:
    """The key's own `hint`: who reads it (its field in the run's consumers, the composed node's schema, or the
    modes' top-level keys)."""
    node = cfg.get(group) if group else None
    schema = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
    known = read.get(leaf) or (consumed_fields([schema]).get(leaf) if is_dataclass(schema) else None) \
        or (mode_keys.get(leaf) if not group else None)
    hint = known.metadata.get("hint") if known is not None else None
    return hint(cfg) if callable(hint) else hint


ADDED_ROOT = ("smoke",)  # top-level keys a `+key=` adds on purpose (+smoke=true)


def root_keys(cfg: DictConfig) -> list[str]:
    """The top-level settings of nlpexp/conf/config.yaml (not the groups)."""
    base = OmegaConf.load(Path(__file__).parents[1] / "conf" / "config.yaml")
    return [k for k in base if k not in ("defaults", "hydra")]


def known_root(cfg: DictConfig, key: str) -> bool:
    """A `+key=` at the top level: a setting config.yaml has, +smoke, or a config group (shipped or ./conf/)."""
    return key in root_keys(cfg) or key in ADDED_ROOT or any((root / key).is_dir() for root in [
        *registry.shipped_roots(), Path("conf")])


def other_readers(cfg: DictConfig, group: str, leaf: str) -> str | None:
    """For a model key: the other tasks of the same model whose adapter's dataclass has it."""
    if group != "model":
        return None
    record = registry.MODELS[cfg.model.name]
    wings = [w for w, adapter in record.adapters.items() if w != registry.wing(cfg.task.name)
             and leaf in {f.name for f in fields(adapter.config)}]
    tasks = [t.name for t in registry.TASKS.values() if t.wing in wings and cfg.model.name in t.models]
    return f"read by task={'|'.join(tasks)}" if tasks else None


MISSING_KEY = object()


def renamed_hint(key: str) -> str | None:
    """The new name of a renamed key (the wings' RENAMED tables): the composition error of an old key names it."""
    for wing in sorted({task.wing for task in registry.TASKS.values()}):
        new = getattr(wing_checks(wing), "RENAMED", {}).get(key)
        if new:
            return new
    return None


def wing_checks(wing: str):
    """nlpexp/tasks/<wing>/checks.py: what each mode of the wing consumes, and its checks across nodes."""
    return importlib.import_module(f"nlpexp.tasks.{wing}.checks")


# -- composing a run's config: the search path (./conf, --config-dir, hydra.searchpath), group options, Hydra's
# compose API, composition errors in one line -----------------------------------------------------------------
CONF_MODULE = "nlpexp.conf"


class CompositionError(UserError):
    """The config does not compose (unknown key, group option, task or model): no job of a sweep can start."""


def group_option_errors(overrides: list[str], roots: list[Path]) -> None:
    """A config group option is a name found in the group's folder: a path climbing out of it (Hydra joins
    group/option to each search path folder, so `experiment=../../x` reads any file) is one line."""
    for item in overrides:
        key, eq, value = item.lstrip("+~").partition("=")
        group = key.split("@", 1)[0]
        if not eq or not is_group(group, roots):
            continue
        options = [o.strip().strip("'\"") for o in value.strip("[]").split(",")]
        bad = next((o for o in options if climbing_option(o)), None)
        if bad is not None:
            raise UserError(f"{item}: a config group option is a name, not a path: put the file in ./conf/{group}/ "
                            f"(then {group}=<its name>) or give the folder holding {group}/ with --config-dir")


def user_config_errors(roots: list[Path]) -> None:
    """A config file of the user's (./conf, --config-dir) that is a FIFO, a device or a socket: one line (Hydra takes
    it for no file and an optional config such as conf/local/default.yaml would be skipped in silence)."""
    from nlpexp.inputs.readers import special_file_error

    for root in roots:
        for path in root.rglob("*.yaml"):
            problem = special_file_error(path)
            if problem:
                raise UserError(f"config {problem}")


@contextmanager
def hydra_context():
    """Hydra initialized on nlpexp's configs (the compose API), cleared again on leaving."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(CONF_MODULE, version_base="1.3"):
            yield
    finally:
        GlobalHydra.instance().clear()


def compose(overrides: list[str], with_hydra: bool = False):
    """The config these overrides compose to (no run folder, nothing built); composition errors in one line.
    with_hydra: the whole config, its hydra node included, composed in the hydra_context the caller holds open (the
    run is Hydra's job over this config: nlpexp/run.py start)."""
    from hydra import compose as hydra_compose

    try:
        if with_hydra:
            return hydra_compose("config", overrides=overrides, return_hydra_config=True)
        with hydra_context():
            return hydra_compose("config", overrides=overrides)
    except Exception as err:  # Hydra/OmegaConf composition errors: the message and its cause, one line
        raise CompositionError(composition_error(err)) from None


def without_hydra(cfg: DictConfig) -> DictConfig:
    """The run's own config, as the job gets it (a copy without the hydra node, whose run folder is made when it
    is read)."""
    import copy

    from omegaconf import open_dict, read_write

    if "hydra" not in cfg:
        return cfg
    task = copy.deepcopy(cfg)
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task


MAPPINGS = {"data.label_map": "+data.label_map.bullish=positive", "data.hub_splits": "+data.hub_splits.validation=dev"}


def composition_error(err: Exception) -> str:
    import re

    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    cause = str(err.__cause__).strip().splitlines()[0] if str(err.__cause__ or "").strip() else ""
    unknown = re.match(r"Could not override '([^']+)'", lines[0] if lines else "")
    name = ".".join(unknown.group(1).split(".")[:2]) if unknown else ""
    if name in MAPPINGS:  # a mapping: entries are added
        return f"{unknown.group(1)}: new entries of {name} are added one by one with +, e.g. {MAPPINGS[name]}"
    if unknown:  # Hydra's advice to append it with + does not apply: the schema has no such key
        new = renamed_hint(unknown.group(1))
        why = f"renamed: use {new}" if new else cause
        return f"{unknown.group(1)}: no such key" + (f" ({why})" if why else "")
    return (" ".join(lines) + (f": {cause}" if cause else ""))[:400]


def checked_config(overrides: list[str], config_dir: str | None, with_hydra: bool = False):
    """(config, its task overrides) of one run, composed (with_hydra: see compose) with its wing's smoke file
    applied (+smoke=true) and checked: every error in one UserError."""
    roots = config_roots(overrides, config_dir)
    group_option_errors(overrides, roots)
    shipped = {r.resolve() for r in registry.shipped_roots()}
    user_config_errors([r for r in roots if r.resolve() not in shipped and "site-packages" not in r.parts])
    for group, known in (("task", registry.TASKS), ("model", registry.MODELS)):
        for item in overrides:
            key, _, value = item.lstrip("+~").partition("=")
            if key == group and value not in known:
                raise CompositionError(f"unknown {group} '{value}'; available {group}s: {', '.join(sorted(known))}")
    user = [o for o in overrides if not o.lstrip("+~").startswith("hydra") or o.startswith("hydra.searchpath=")]
    cfg = compose(searchpath_override(overrides if with_hydra else user, config_dir), with_hydra)
    if cfg.get("smoke"):
        from nlpexp.runtime import apply_smoke

        cfg = apply_smoke(cfg, user)
    keys = [o for o in user if not o.startswith("hydra.")]
    check_config(without_hydra(cfg), keys)
    return cfg, keys


class _SearchKeys:
    """A stand-in Optuna trial that records the keys a custom search space suggests."""

    def __init__(self):
        self.keys: list[str] = []

    def __getattr__(self, name: str):
        if not name.startswith("suggest_"):
            raise AttributeError(name)
        return lambda key, *args, **kwargs: self.keys.append(key)


def search_overlap(given: list[str], parsed: list, job: list[str], config_dir: str | None) -> None:
    """An Optuna sweep whose command line also sets a key its search space tunes (hparams_search's
    custom_search_space) is refused in one line; the plugin would stop the sweep with a ValueError traceback."""
    from hydra import compose as hydra_compose
    from hydra.utils import get_method

    if not any(a.startswith(("hparams_search=", "+hparams_search=", "hydra/sweeper=")) for a in job):
        return
    with hydra_context():
        cfg = hydra_compose("config", overrides=searchpath_override(job, config_dir), return_hydra_config=True)
    space = cfg.hydra.sweeper.get("custom_search_space")
    if not space:
        return
    trial = _SearchKeys()
    get_method(space)(cfg, trial)
    for item, override in zip(given, parsed):
        if override.get_key_element() in trial.keys:
            search = next((a for a in job if "hparams_search=" in a), "this search")
            raise UserError(f"{item}: {search} tunes {override.get_key_element()} itself ({space}): drop {item}, "
                            "or search with your own space (hydra.sweeper.custom_search_space=null "
                            "hydra.sweeper.params...)")
