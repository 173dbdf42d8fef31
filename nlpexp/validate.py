"""The one config check, run before any run folder exists (and by `dry_run=true`): every error at once.

1. the task x model x mode is one the registry knows;
2. every typed node against its schema (nlpexp/schema.py, the wings' checks.py): unknown keys, ranges, choices;
3. the wing's own checks across keys (files that must exist, what a mode needs);
4. every key given on the command line that this task x model x mode does not read is refused, with what
   reads it instead.
No heavy import: torch, transformers and the adapters stay unloaded.
"""
import importlib
import re

from omegaconf import DictConfig, OmegaConf

from nlpexp import registry
from nlpexp.errors import UserError
from nlpexp.schema import typed_errors

# top-level keys that only some modes read (the rest: seed, mode, resume, dry_run ... are read by every run),
# and who reads them
MODE_KEYS = {"ckpt": "the saved-run modes read it: mode=eval|predict|soup|generate|apply",
             "text": "mode=predict ckpt=<run> reads it", "input": "mode=predict|apply ckpt=<run> reads it",
             "output": "mode=predict|apply ckpt=<run> reads it", "prompt": "mode=generate reads it",
             "length": "task=novel mode=generate reads it"}


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
    model = cfg.model
    if "d_model" in model and "num_heads" in model and model.num_heads > 0 and model.d_model % model.num_heads:
        errors.append(f"model.d_model={model.d_model} must be divisible by model.num_heads={model.num_heads}")
    if errors:  # the wing's checks read the typed values: only once they are sound
        return errors
    errors += checks.check(cfg)
    errors += unread_errors(cfg, overrides, checks.reads(cfg))
    precision = (cfg.get("trainer") or {}).get("precision")
    if precision == "fp16" and cfg.device.name in ("cpu", "mps"):
        errors.append(f"trainer.precision=fp16 needs a CUDA GPU (device={cfg.device.name}): use bf16 or fp32")
    if cfg.get("logger") is not None:
        from nlpexp.loggers import missing_dependency

        missing = missing_dependency(cfg)
        if missing:
            errors.append(missing)
    from nlpexp.console import progress_error

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


def unread_errors(cfg: DictConfig, overrides, declared: dict) -> list[str]:
    """Command-line `group.key=value` overrides that nothing on this path reads.

    declared["reads"]: group -> the keys read ('' = top-level keys; None = all of the group); groups it does not
    name are not checked. declared["hints"]: 'group.key' or 'group' -> what to use instead."""
    reads, hints = declared["reads"], declared["hints"]
    path = f"task={cfg.task.name} model={cfg.model.name}" + (f" mode={cfg.mode}" if cfg.mode != "train" else "")
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
            if key not in MODE_KEYS:
                continue
        if group not in reads or reads[group] is None or leaf in reads[group]:
            continue
        hint = hints.get(key) or hints.get(f"{group}.{leaf}") or hints.get(group) or other_readers(cfg, group, leaf) \
            or MODE_KEYS.get(key)
        errors.append(f"{key} is not read by {path}" + (f" ({hint})" if hint else ""))
    return errors


ADDED_ROOT = ("smoke",)  # top-level keys a `+key=` adds on purpose (+smoke=true)


def root_keys(cfg: DictConfig) -> list[str]:
    """The top-level settings of nlpexp/conf/config.yaml (not the groups)."""
    from pathlib import Path

    base = OmegaConf.load(Path(__file__).parent / "conf" / "config.yaml")
    return [k for k in base if k not in ("defaults", "hydra")]


def known_root(cfg: DictConfig, key: str) -> bool:
    """A `+key=` at the top level: a setting config.yaml has, +smoke, or a config group (shipped or ./conf/)."""
    from pathlib import Path

    return key in root_keys(cfg) or key in ADDED_ROOT or any((root / key).is_dir() for root in [
        *registry.shipped_roots(), Path("conf")])


def other_readers(cfg: DictConfig, group: str, leaf: str) -> str | None:
    """For a model key: which other tasks of the same model read it."""
    if group != "model":
        return None
    record = registry.MODELS[cfg.model.name]
    wings = [w for w in record.adapters if w != registry.wing(cfg.task.name)
             and leaf in wing_checks(w).MODEL_KEYS.get(record.adapter(w), ())]
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
    """nlpexp/tasks/<wing>/checks.py: the wing's schemas, what its adapters and loops read, its own checks."""
    return importlib.import_module(f"nlpexp.tasks.{wing}.checks")
