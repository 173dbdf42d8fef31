"""The `nlpexp` command: argv -> Hydra. The config is composed and checked before Hydra makes a run folder (bad
input: one line, exit 2, nothing written); `resume=`, free-text quoting, `--help` and the user config layer
(./conf, --config-dir, hydra.searchpath) are handled here. The run itself: nlpexp/run.py.
"""
import os
import sys
import warnings
from pathlib import Path

from nlpexp.errors import UserError, permission_message
from nlpexp.run import fail

CONF_MODULE = "nlpexp.conf"
# Hydra's own flags; with any of these but --config-dir the pre-run check is Hydra's (sweeps check each job)
HYDRA_FLAGS = {"-m", "--multirun", "--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion", "-sc",
               "--version", "--config-name", "-cn", "--config-path", "-cp", "--package", "-p", "--resolve", "--run",
               "-r"}

# our thin hydra/launcher configs extend the plugins' configs of the same name (Hydra 1.3 warns, and supports
# it); at import, so that launcher worker processes, which import this module, are quiet too
warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema")


# flags that print instead of running: no sweep check before them
NO_CHECK_FLAGS = {"--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion", "-sc", "--version"}

# config choices served by optional Hydra plugins -> (module, extra that installs it)
PLUGINS = {
    "hydra/launcher=joblib": ("hydra_plugins.hydra_joblib_launcher", "launchers"),
    "hydra/launcher=submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "launchers"),
    "hydra/launcher=submitit_local": ("hydra_plugins.hydra_submitit_launcher", "launchers"),
    "hydra/launcher=ray": ("hydra_plugins.hydra_ray_launcher", "ray"),
    "hparams_search=": ("hydra_plugins.hydra_optuna_sweeper", "sweep"),
}


class CompositionError(UserError):
    """The config does not compose (unknown key, group option, task or model): no job of a sweep can start."""


def check_plugins(args: list[str]) -> None:
    import importlib.util

    for arg in args:
        for prefix, (module, extra) in PLUGINS.items():
            if arg.lstrip("+").startswith(prefix) and importlib.util.find_spec(module) is None:
                raise UserError(f"{arg} needs the {module.split('.')[1].replace('_', '-')} plugin: "
                                f"pip install 'nlpexp[{extra}]'")


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
    from nlpexp.registry import shipped_roots

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
    from nlpexp.readers import special_file_error

    for root in roots:
        for path in root.rglob("*.yaml"):
            problem = special_file_error(path)
            if problem:
                raise UserError(f"config {problem}")


def compose(overrides: list[str]):
    """The config these overrides compose to (no run folder, nothing built); composition errors in one line."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(CONF_MODULE, version_base="1.3"):
            return hydra_compose("config", overrides=overrides)
    except Exception as err:  # Hydra/OmegaConf composition errors: the message and its cause, one line
        raise CompositionError(composition_error(err)) from None
    finally:
        GlobalHydra.instance().clear()


def composition_error(err: Exception) -> str:
    import re

    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    cause = str(err.__cause__).strip().splitlines()[0] if str(err.__cause__ or "").strip() else ""
    unknown = re.match(r"Could not override '([^']+)'", lines[0] if lines else "")
    if unknown and unknown.group(1).split(".")[:2] == ["data", "label_map"]:  # a mapping: entries are added
        return (f"{unknown.group(1)}: new entries of data.label_map are added one by one with +, e.g. "
                "+data.label_map.bullish=positive")
    if unknown:  # Hydra's advice to append it with + does not apply: the schema has no such key
        from nlpexp.validate import renamed_hint

        new = renamed_hint(unknown.group(1))
        why = f"renamed: use {new}" if new else cause
        return f"{unknown.group(1)}: no such key" + (f" ({why})" if why else "")
    return (" ".join(lines) + (f": {cause}" if cause else ""))[:400]


def argument_errors(args: list[str]) -> None:
    """Every argument is key=value, a flag Hydra knows (HYDRA_FLAGS, --config-dir) or a flag's value: one line
    for anything else, instead of Hydra's usage text or its grammar error."""
    takes_value = {"--config-dir", "-cd", "--config-name", "-cn", "--config-path", "-cp", "--package", "-p",
                   "--info", "-i", "--cfg", "-c", "--shell-completion", "-sc"}
    keys = [a.split("=", 1)[0].lstrip("+~") for a in args if "=" in a and not a.startswith("-")]
    twice = next((k for i, k in enumerate(keys) if k in keys[:i]), None)
    if twice:
        values = [a.split("=", 1)[1] for a in args if "=" in a and a.split("=", 1)[0].lstrip("+~") == twice]
        raise UserError(f"{twice}= is given twice ({', '.join(values)}): give it once")
    if any(a.split("=", 1)[0] in ("hydra.run.dir", "hydra.sweep.dir") and not a.split("=", 1)[1].strip("'\" ")
           for a in args if "=" in a):
        raise UserError("hydra.run.dir= (or hydra.sweep.dir=) is empty: give a folder, or leave it out for "
                        "outputs/<task>/<model>/<date>_<time>")
    for arg in args:
        key, eq, value = arg.partition("=")
        problem = job_name_error(value.strip().strip("'\"")) if eq and key.lstrip("+~") == "hydra.job.name" else None
        if problem:
            raise UserError(f"{arg}: {problem}")
    previous = ""
    for arg in args:
        flag = arg.split("=", 1)[0]
        if arg.startswith("-"):
            if flag not in HYDRA_FLAGS | {"--config-dir", "-cd"}:
                raise UserError(f"unknown flag {flag}: settings are key=value (e.g. trainer.lr=3e-5); nlpexp "
                                "--help lists them, nlpexp --hydra-help Hydra's flags")
        elif "=" not in arg and previous not in takes_value:
            raise UserError(f"'{arg}' is not a setting: write key=value (e.g. task={arg} or model={arg}); "
                            "see nlpexp --help")
        previous = arg if "=" not in arg else ""
    flag_value_errors(args)


def job_name_error(name: str) -> str | None:
    """Why hydra.job.name cannot name the job (None: it can): Hydra writes its log to <run folder>/<name>.log, so
    a name with / or .. (`../../x/pwn`) wrote that file anywhere."""
    if not name:
        return "the job name is empty: give a plain name (it names the log file <run folder>/<name>.log)"
    if "/" in name or "\\" in name or name in (".", "..") or "\0" in name:
        return ("the job name is a plain file name, not a path (Hydra writes <run folder>/<name>.log): drop the "
                "/ and ..")
    return None


FLAG_CHOICES = {"--cfg": ("job", "hydra", "all"), "-c": ("job", "hydra", "all"),
                "--info": ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath"),
                "-i": ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")}


def flag_value_errors(args: list[str]) -> None:
    """--cfg and --info take one of their words (Hydra would print its usage text instead): one line. --info may
    stand alone (all); a key=value after it is a setting, which argparse would take for --info's value."""
    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if flag not in FLAG_CHOICES:
            continue
        if not eq:
            value = args[i + 1] if i + 1 < len(args) else None
        words = "|".join(FLAG_CHOICES[flag])
        optional = flag in ("--info", "-i")
        if value is None and optional:
            continue
        if value is None or value.startswith("-") and not optional:
            raise UserError(f"{flag} takes {words} (e.g. nlpexp {flag} {FLAG_CHOICES[flag][0]})")
        if value not in FLAG_CHOICES[flag] and not value.startswith("-"):
            example = f"nlpexp {flag} {FLAG_CHOICES[flag][0]} {value}" if "=" in value else \
                f"nlpexp {flag} {FLAG_CHOICES[flag][0]}"
            raise UserError(f"{flag} {value}: {flag} takes {words} (e.g. {example})")


def quote_hint(key: str, value: str) -> str:
    """How to write key=value in bash so that Hydra reads the value as one quoted string (a list: each item)."""
    def quoted(text: str) -> str:
        return f"'{text}'" if "'" not in text else '"' + text.replace('"', '\\"') + '"'

    if value.startswith("[") and value.endswith("]"):
        inner = ",".join(quoted(v.strip().strip("'\"")) for v in value[1:-1].split(",") if v.strip())
        hydra_text = f"[{inner}]"
    else:
        hydra_text = quoted(value.strip("'\""))
    if not any(c in hydra_text for c in '"$`\\!'):
        return f'{key}="{hydra_text}"'  # bash: double quotes around Hydra's single-quoted string
    return "'" + f"{key}={hydra_text}".replace("'", "'\\''") + "'"


def grammar_errors(args: list[str]) -> None:
    """Each key=value is read by Hydra's override grammar before anything is composed or made: a value it cannot
    read (a space, <, (, an emoji...) is one line showing how to quote it, not Hydra's lexer error."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    previous = ""
    for arg in args:
        if arg.startswith("-") or "=" not in arg or previous in FLAG_CHOICES or previous in (
                "--config-dir", "-cd", "--config-name", "-cn", "--config-path", "-cp", "--package", "-p"):
            previous = arg
            continue
        previous = arg
        try:
            parser.parse_overrides([arg])
        except Exception as err:  # noqa: BLE001 -- Hydra's grammar error: one line with the quoted form
            key, _, value = arg.partition("=")
            why = composition_error(err).split(" See https://")[0]
            raise UserError(f"{arg}: Hydra cannot read this value ({why}); quote it, e.g. in bash: "
                            f"{quote_hint(key, value)}") from None


def preflight(args: list[str]) -> list[str]:
    """Compose and check the config before Hydra creates a run folder: every error found, in one line. Returns
    the overrides it checked (the run does not check them again)."""
    from omegaconf import OmegaConf

    args, config_dir = config_dir_args(args)
    overrides = [a for a in args if not a.startswith("-")]
    cfg, keys = checked_config(overrides, config_dir)
    from nlpexp.runs import check_run_folder, ckpt_folders

    for saved in ckpt_folders(cfg):  # (ckpt= of the command line was checked before anything of it was read)
        check_run_folder(saved.resolve())
    if cfg.device.name in ("cuda", "mps"):
        from nlpexp.runtime import resolve_device

        resolve_device(cfg.device.name)
    from nlpexp.training import distributed

    folder = None if distributed.is_worker() else explicit_run_dir(args)  # torchrun: the launcher holds it
    if folder is not None:
        inside = Path(str(cfg.ckpt).strip("'\"")) if cfg.mode in ("eval", "predict", "generate") and \
            cfg.get("ckpt") and not OmegaConf.is_list(cfg.ckpt) else None
        folder_errors(folder, resuming=bool(cfg.get("resume")), inside=inside)
    else:
        from nlpexp.runs import writable_error

        parent = Path(str(cfg.ckpt)) if cfg.mode in ("eval", "predict", "generate") and cfg.get("ckpt") \
            and not OmegaConf.is_list(cfg.ckpt) else Path("outputs")
        problem = writable_error(parent)
        if problem:
            raise UserError(problem)
    if cfg.get("dry_run"):
        print(f"nlpexp: config OK: task={cfg.task.name} model={cfg.model.name} mode={cfg.mode}, every key checked; "
              "nothing built, no run folder (drop dry_run=true to run it)")
        sys.exit(0)
    if folder is not None:  # held from here to the end of the run: Hydra writes .hydra/ into a folder we own
        from nlpexp.runs import claim

        claim(folder)
    return keys


def checked_config(overrides: list[str], config_dir: str | None):
    """(config, its task overrides) of one run, composed and checked: every error in one UserError."""
    from nlpexp import registry
    from nlpexp.validate import check_config

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
    cfg = compose(searchpath_override(user, config_dir))
    if cfg.get("smoke"):
        from nlpexp.runtime import apply_smoke

        cfg = apply_smoke(cfg, user)
    keys = [o for o in user if not o.startswith("hydra.")]
    check_config(cfg, keys)
    return cfg, keys


SWEEP_CHECKS = 64  # a sweep's first jobs checked before it starts (each job is checked again when it runs)


def sweep_preflight(args: list[str]) -> None:
    """`-m`: the jobs of the sweep (its first SWEEP_CHECKS combinations of `key=a,b` lists) composed and checked
    before the launcher starts any: a bad key or value is one line, exit 2, not a sweep of failed jobs. Ranges
    (`interval(...)`) and an hparams_search's own space are left to the sweeper: each job is checked when it runs."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    args, config_dir = config_dir_args(args)
    given = [a for a in args if not a.startswith("-") and not a.lstrip("+~").startswith("hydra")]
    try:
        parsed = OverridesParser.create().parse_overrides(given)
    except Exception as err:  # noqa: BLE001 -- Hydra's grammar error: one line
        raise UserError(composition_error(err)) from None
    choices = []
    for item, override in zip(given, parsed):
        prefix = item[:len(item) - len(item.lstrip("+~"))]
        key = f"{prefix}{override.get_key_element()}"
        if not override.is_sweep_override():
            choices.append([item])
        elif override.is_discrete_sweep():
            choices.append([f"{key}={v}" for v in override.sweep_string_iterator()])
            if not choices[-1]:
                raise UserError(f"{item} sweeps no values: nothing would run (e.g. range(0,3) is 0,1,2)")
    for item in args:
        if item.startswith("hydra.sweep.dir="):
            place_errors(Path(item.split("=", 1)[1].strip("'\"")), "hydra.sweep.dir")
    searchpath = [a for a in args if a.startswith("hydra.searchpath=")]
    jobs = list(itertools.islice(itertools.product(*choices), SWEEP_CHECKS))
    refused, cfg = [], None
    for combination in jobs:
        try:
            cfg, _ = checked_config([*combination, *searchpath], config_dir)
        except UserError as err:
            swept = [c for c, options in zip(combination, choices) if len(options) > 1]
            message = f"{err}" + (f" (sweep job {' '.join(swept)})" if swept else "")
            if isinstance(err, CompositionError):  # Hydra composes every job before it launches one
                raise UserError(message) from None
            refused.append(message)
    if len(refused) == len(jobs):  # nothing of it would run
        raise UserError(refused[0])
    earlier_jobs(args, jobs)
    search_overlap(given, parsed, [*jobs[0], *searchpath, *(a for a in args if a.lstrip("+~").startswith("hydra"))],
                   config_dir)
    if refused:  # e.g. a model sweep where one model does not read a key: that job is recorded as refused
        NOTES.append(f"nlpexp: warning: {len(refused)} of {len(jobs)} sweep jobs will be refused, e.g. {refused[0]}")
    if cfg.get("dry_run"):  # nothing launched: a sweeper (optuna) would wait for objectives that never come
        for note in NOTES:
            print(note, file=sys.stderr)
        print(f"nlpexp: config OK: {len(jobs)} sweep job{'s' * (len(jobs) > 1)} checked; nothing launched (drop "
              "dry_run=true to run it)")
        sys.exit(0)


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
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import get_method

    if not any(a.startswith(("hparams_search=", "+hparams_search=", "hydra/sweeper=")) for a in job):
        return
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(CONF_MODULE, version_base="1.3"):
            cfg = hydra_compose("config", overrides=searchpath_override(job, config_dir), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
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


def earlier_jobs(args: list[str], jobs: list) -> None:
    """A sweep run again into its folder (hydra.sweep.dir=...): its numbered job folders must be this sweep's
    (the same overrides, job by job), checked before Hydra rewrites any of their .hydra/; says how many are reused
    and resumed (each job does it)."""
    from nlpexp.runs import earlier_job, run_folder_error

    given = [a.split("=", 1)[1].strip("'\"") for a in args if a.startswith("hydra.sweep.dir=")]
    own_jobs = ("hydra.sweep.subdir=", "hparams_search=", "experiment=", "hydra/sweeper=", "hydra.sweeper.")
    if not given or any(a.lstrip("+~").startswith(own_jobs) for a in args) or not Path(given[-1]).is_dir():
        return  # (an Optuna sweep numbers new trials after the folders there; experiments sweep their own lists)
    found = {"complete": [], "resume": []}
    for number, combination in enumerate(jobs):
        job = Path(given[-1]).expanduser() / str(number)  # Hydra writes its .hydra/ before the job starts
        problem = (f"{job} is a symbolic link: a run folder holds no links; remove it" if job.is_symlink()
                   else run_folder_error(job))
        if problem:
            raise UserError(f"hydra.sweep.dir={given[-1]}: job {number}: {problem}")
        state, why = earlier_job(Path(given[-1]).expanduser() / str(number), list(combination))
        if state == "other":
            raise UserError(f"hydra.sweep.dir={given[-1]} holds another sweep: job {number}: {why}"
                            "; run a sweep again only into its own folder, or choose another hydra.sweep.dir")
        if state:
            found[state].append(str(number))
    if found["complete"] or found["resume"]:
        NOTES.append(f"nlpexp: {given[-1]}: jobs {', '.join(found['complete']) or 'none'} complete (reused), "
                     f"{', '.join(found['resume']) or 'none'} unfinished (resumed in their folders); the rest run")


def explicit_run_dir(args: list[str]) -> Path | None:
    given = [a.split("=", 1)[1].strip("'\"") for a in args if a.startswith("hydra.run.dir=")]
    return Path(given[-1]).expanduser() if given else None


def place_errors(folder: Path, key: str, inside: Path | None = None) -> None:
    """A run (or sweep) folder is never a system folder, nor inside another run's folder (an eval/predict/generate
    run inside its ckpt run: `inside`, as nlpexp itself places them), and can be made."""
    from nlpexp.runs import enclosing_run, is_run_folder, system_folder_error, writable_error

    problem = system_folder_error(folder) or writable_error(folder)
    if problem:
        raise UserError(f"{key}={folder}: {problem}")
    outer = enclosing_run(folder)
    if key == "hydra.sweep.dir" and is_run_folder(folder):
        outer = Path(folder).expanduser().resolve()
    if outer is not None and (inside is None or outer != Path(inside).expanduser().resolve()):
        raise UserError(f"{key}={folder}: inside the run folder {outer}: a run folder never holds another run; "
                        "choose a folder outside it")


def folder_errors(folder: Path, resuming: bool, inside: Path | None = None) -> None:
    """hydra.run.dir=<folder>: refused when it is a system folder or inside another run (place_errors), when
    another run is writing it, or when it holds an unfinished run that only resume= may continue."""
    from nlpexp.runs import check_run_folder, folder_state

    place_errors(folder, "hydra.run.dir", inside)
    check_run_folder(Path(folder).expanduser().resolve())  # Hydra and the run write into it: no links, no FIFOs
    state, why = folder_state(folder)
    if state == "running":
        raise UserError(f"{folder} is in use: {why}; wait for it or choose another folder")
    if state in ("unfinished", "unreadable") and not resuming:
        raise UserError(f"{folder} holds an unfinished run ({why}): resume={folder} continues it, or choose "
                        "another folder")


def replay_error(item: str, roots: list[Path]) -> str | None:
    """Why a line of a run folder's .hydra/overrides.yaml is not replayed on resume (None: it is). A run folder is
    data: nothing read from it may name code or a config outside the config search path. Only task settings: no
    Hydra setting, no @package into hydra, no interpolation (${oc.env:...}, a resolver), and a config group option
    is a plain name that exists in the search path (not `experiment=../../<anywhere>/evil`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if item.lstrip("+~").startswith("hydra") or item.startswith("-") or "=" not in item:
        return "which is not a task setting"
    if "${" in item:
        return "an interpolation (${...} reads the environment or calls a resolver), which is not replayed"
    try:
        override = OverridesParser.create().parse_overrides([item])[0]
    except Exception:  # noqa: BLE001 -- Hydra's grammar error
        return "which is not an override Hydra reads"
    package = (override.package or "").removeprefix("_global_").lstrip(".")
    if package.split(".")[0] == "hydra":
        return f"which puts a config into Hydra's own settings (@{override.package})"
    group = override.key_or_group
    if not is_group(group, roots):
        return None
    if override.is_sweep_override():
        return "a sweep, which one run does not continue"
    value = override.value()
    for option in value if isinstance(value, list) else [value]:
        if option is None:
            continue
        if not isinstance(option, str) or climbing_option(option) or not option.strip():
            return f"whose {group} option is not a plain config name"
        if not any((r / group / f"{option}.yaml").is_file() for r in roots):
            return f"but there is no {group}/{option}.yaml in the config search path (./conf, --config-dir)"
    return None


def nlpexp_run_error(folder: Path) -> str | None:
    """Why folder is not an nlpexp run folder (None: it is): its .hydra/config.yaml names a task and a model
    nlpexp has, and its metrics.json (when there is one) is nlpexp's (an object with a status)."""
    from nlpexp import registry
    from nlpexp.runs import load_run_file

    try:
        saved = load_run_file(folder / ".hydra" / "config.yaml")
    except (OSError, ValueError):
        return "no readable .hydra/config.yaml"
    task = (saved.get("task") or {}) if isinstance(saved, dict) else None
    model = (saved.get("model") or {}) if isinstance(saved, dict) else None
    if not isinstance(task, dict) or not isinstance(model, dict) or task.get("name") not in registry.TASKS \
            or not model.get("name"):
        return "its .hydra/config.yaml names no nlpexp task and model"
    try:
        metrics = load_run_file(folder / "metrics.json") if (folder / "metrics.json").exists() else {}
    except (OSError, ValueError):
        return None  # a torn metrics.json of a killed run: resumable
    if isinstance(metrics, dict) and (folder / "metrics.json").exists() and "status" not in metrics:
        return "its metrics.json has no status: another program wrote it"
    return None


def resume_args(args: list[str]) -> list[str]:
    """`resume=<run folder>` (or `resume=true`: this folder, else the newest unfinished run under outputs/)
    becomes the saved run's own overrides + `hydra.run.dir=<that folder>`, so it continues in place. The folder
    is data, checked before anything of it is used: its overrides only task settings (replay_error), an nlpexp
    run, not finished, not in use, and the task and model of the command line (when given) its own."""
    from nlpexp.runs import check_run_folder, find_unfinished_run, load_run_file

    value = next(a for a in args if a.startswith("resume="))
    target = value.split("=", 1)[1].strip("'\"")
    rest = [a for a in args if a != value]
    if target.lower() in ("", "null", "none", "false"):
        return rest
    if target.lower() in ("true", "1", "yes", "last"):
        folder = find_unfinished_run(Path.cwd(), rest)
    else:
        folder = Path(target).expanduser()
    folder = folder.resolve()  # a link to a run folder is that folder
    check_run_folder(folder)  # before anything of it is read: no links (.lock, checkpoints/...), no FIFOs
    saved = folder / ".hydra" / "overrides.yaml"
    if not saved.exists():
        raise UserError(f"resume={target}: {folder} is not a run folder (no .hydra/overrides.yaml inside)")
    try:
        before = load_run_file(saved) or []
    except (OSError, ValueError) as err:
        raise UserError(f"resume={target}: {saved} is not a list of overrides ({str(err).splitlines()[0]})") from None
    if not isinstance(before, list) or not all(isinstance(o, str) for o in before):
        raise UserError(f"resume={target}: {saved} is not a list of overrides")
    rest_args, config_dir = config_dir_args(rest)
    roots = config_roots([a for a in rest_args if not a.startswith("-")], config_dir)
    for number, item in enumerate(before, 1):
        why = replay_error(item, roots)
        if why:  # Hydra's own settings (callbacks, launchers...) and configs from anywhere can name code to run
            raise UserError(f"resume={target}: {saved} line {number} holds {item!r}, {why}: only the task's own "
                            "settings are taken on resume (remove that line to continue)")
    not_ours = nlpexp_run_error(folder)
    if not_ours:
        raise UserError(f"resume={target}: {folder} is not an nlpexp run folder ({not_ours})")
    from nlpexp.runs import folder_state

    state, why = folder_state(folder)
    if state == "complete":
        raise UserError(f"resume={target}: {folder} already finished (metrics.json says complete)")
    if state == "running":
        raise UserError(f"resume={target}: {folder} is in use: {why}")
    if state == "unreadable":  # said once the pre-run check has passed
        NOTES.append(f"nlpexp: warning: {folder}: {why} (torn, or not nlpexp's): it is rewritten as the run goes on")
    saved_cfg = load_run_file(folder / ".hydra" / "config.yaml")  # read and checked by nlpexp_run_error
    for key in ("task", "model"):
        given = [a.split("=", 1)[1].strip("'\"") for a in rest if a.lstrip("+~").startswith(f"{key}=")]
        own = saved_cfg[key]["name"]
        if given and given[-1] != own:
            raise UserError(f"resume={target}: {folder} is a task={saved_cfg['task']['name']} "
                            f"model={saved_cfg['model']['name']} run, not {key}={given[-1]}: a resume continues "
                            f"the same run (drop {key}=), or start a new run without resume=")
    changed = {a.split("=", 1)[0].lstrip("+~") for a in rest if "=" in a}
    kept = set(before)
    before = [o for o in before if not o.lstrip("+~").startswith("resume=")
              and o.split("=", 1)[0].lstrip("+~") not in changed]  # a setting given again replaces the saved one
    extra = [a for a in rest if not a.startswith("hydra.run.dir=")]
    differ = [a for a in extra if not a.startswith(("hydra", "-")) and a not in kept]  # the same value: no change
    if differ:  # said once the pre-run check has passed
        NOTES.append(f"nlpexp: warning: resuming with changed settings {differ}: the result may differ")
    NOTES.append(f"nlpexp: resuming {folder}")
    return [*before, *extra, f"resume={folder}", f"hydra.run.dir={folder}"]


NOTES: list[str] = []  # lines for stderr once the command is known to run (a refusal stays one line)


def hydra_main(checked: list[str] | None = None):
    """Hydra's main over run_job; `checked`: the overrides the pre-run check validated."""
    import hydra

    from nlpexp.run import checked_job, run_job

    job = run_job if checked is None else checked_job(checked)
    return hydra.main(version_base="1.3", config_path="conf", config_name="config")(job)()


def _saved_run_choices(args: list[str]) -> list[str]:
    """`mode=eval|predict|generate ckpt=<run>` without task=/model=: take them from the saved run's config."""
    given = {a.lstrip("+~").split("=", 1)[0]: a.split("=", 1)[1] for a in args if "=" in a}
    ckpt = given.get("ckpt", "").strip().strip("'\"")  # ckpt="outputs/x y": the folder, without Hydra's quotes
    if given.get("mode", "train") == "train" or not ckpt:
        return []
    saved = Path(ckpt).expanduser() / ".hydra" / "config.yaml"
    if not saved.exists():
        return []
    from nlpexp.runs import load_run_file

    try:
        cfg = load_run_file(saved)
        names = {key: str(cfg[key]["name"]) for key in ("task", "model") if isinstance((cfg or {}).get(key), dict)
                 and isinstance(cfg[key].get("name"), str)}
    except (OSError, ValueError, AttributeError):  # unreadable: the pre-run check says so in one line
        return []
    task = names.get("task")
    if given.get("task") and task and given["task"] != task:  # before the registry says the model does not fit
        raise UserError(f"ckpt={ckpt} is a task={task} run (model={names.get('model', '?')}), not "
                        f"task={given['task']}: drop task= (it is taken from the run) or give task={task}")
    return [f"{key}={name}" for key, name in names.items() if key not in given]


def ckpt_arg_errors(args: list[str]) -> None:
    """The saved runs ckpt= names on the command line (one, a soup's [a,b], a sweep's a,b) are checked before any
    of their files is read: no links (an eval/ link wrote the eval run outside the run, a linked model file loaded
    another run's), no FIFOs (a read waits forever)."""
    from nlpexp.runs import check_run_folder

    for arg in args:
        key, eq, value = arg.partition("=")
        if not eq or key.lstrip("+~") != "ckpt":
            continue
        for item in value.strip().strip("[]").split(","):
            folder = Path(item.strip().strip("'\"")).expanduser()
            if item.strip() and folder.is_dir() and os.path.lexists(folder / ".hydra"):  # a run folder, as ckpt= is
                check_run_folder(folder.resolve())


def _model_folders(args: list[str]) -> list[str]:
    """`model=<a save_pretrained folder>` works as a hub id does: the model config of the folder's architecture for
    the task (a GPT-2 -> gpt2, an encoder -> bert / bert_chinese / bert_fc, a sentence-transformers folder ->
    sentence_transformers), the folder as model.pretrained."""
    import json

    from nlpexp import registry

    task = next((a.split("=", 1)[1] for a in args if a.startswith("task=")), "finsent")
    models = registry.TASKS[task].models if task in registry.TASKS else ()
    out = []
    for arg in args:
        key, _, value = arg.partition("=")
        folder = Path(value).expanduser()
        if key != "model" or value in registry.MODELS or "," in value or not (folder / "config.json").is_file():
            out.append(arg)
            continue
        if (folder / "modules.json").is_file():
            kind, family = "sentence-transformers", ("sentence_transformers",)
        else:
            try:
                config = json.loads((folder / "config.json").read_text())
                kind = str(config.get("model_type") or "unknown")
            except (ValueError, AttributeError):
                raise UserError(f"model={value}: its config.json is not a JSON object") from None
            if config.get("auto_map"):
                raise UserError(f"model={value}: its config.json maps the model to code of its own (auto_map), which "
                                "nlpexp never runs (trust_remote_code stays off)")
            if not any(folder.glob("*.safetensors")):
                raise UserError(f"model={value}: no *.safetensors weights in it (nlpexp loads weights only from "
                                "safetensors: save_pretrained(folder) writes them)")
            family = ("gpt2", "gpt2_prompt") if kind == "gpt2" else ("bert", "bert_chinese", "bert_fc", "minilm")
        name = next((m for m in family if m in models), None)
        if name is None:
            raise UserError(f"model={value}: a {kind} model folder, and task={task} takes none of "
                            f"{', '.join(family)} (its models: {', '.join(models)})")
        out += [f"model={name}", f"model.pretrained={folder.resolve()}"]
        NOTES.append(f"nlpexp: model={value}: a {kind} folder, run as model={name} model.pretrained={folder.resolve()}")
    return out


def _quote_free_text(arg: str) -> str:
    """prompt=/text= values are free text (Chinese, punctuation): quote them so Hydra's grammar takes them as is."""
    key, eq, value = arg.partition("=")
    if not eq or key.lstrip("+~") not in ("prompt", "text") or value[:1] in ("'", '"'):
        return arg
    return f"{key}='" + value.replace("'", "\\'") + "'"  # Hydra: only a quote needs escaping inside quotes


def _experiment_choice(arg: str) -> str:
    """`+experiment=x` (the form before experiment joined the defaults list) means `experiment=x`."""
    return arg[1:] if arg.startswith("+experiment=") else arg


def print_help() -> None:
    """`nlpexp --help`: the tasks with their models and modes, the config groups, the common keys. No Hydra."""
    from nlpexp import registry

    def options(group: str) -> str:
        return "|".join(sorted({p.stem for root in registry.shipped_roots() for p in (root / group).glob("*.yaml")}))

    lines = ["usage: nlpexp [key=value ...] [-m] [--config-dir DIR]   (Hydra's own flags: nlpexp --hydra-help)",
             "", "tasks: task=<task> model=<model> mode=<mode>"]
    for task in registry.TASKS.values():
        lines.append(f"  {task.name:<11} {task.summary}")
        lines.append(f"  {'':<11}   models: {' '.join(task.models)}")
        lines.append(f"  {'':<11}   modes:  {' '.join(task.modes)}")
    lines += ["", "config groups:",
              f"  device={options('device')}  trainer={options('trainer')}  logger={options('logger')}",
              f"  experiment={options('experiment')}  (yours: ./conf/experiment/<name>.yaml)",
              f"  hparams_search={options('hparams_search')}  hydra/launcher={options('hydra/launcher')}",
              "", "common keys:",
              "  seed=42  ckpt=<run folder>  resume=<run folder>|true  +smoke=true (seconds, offline)",
              "  dry_run=true (compose and check every key, build nothing)  tags=[a,b] (metrics.json, loggers, report)",
              "  verbose=true (the libraries' own output too)  print_config=diff|full|none  whole config: --cfg job",
              "", "examples:",
              "  nlpexp                                      # finsent x minilm on the embedded sample, offline",
              "  nlpexp task=finsent model=doc2vec data.path=Sentences_50Agree.txt",
              "  nlpexp task=story model=gpt2 mode=generate prompt='Once upon a time' ckpt=outputs/...",
              "  nlpexp -m model=minilm,doc2vec seed=1,2,3   # a sweep; nlpexp-report <its folder>"]
    print("\n".join(lines))


def main() -> None:
    NOTES.clear()
    args = [_experiment_choice(_quote_free_text(a)) for a in sys.argv[1:]]
    if any(a in ("--help", "-h") for a in args):
        print_help()
        return
    try:
        ckpt_arg_errors(args)
        args = _model_folders(args + _saved_run_choices(args))
    except UserError as err:
        fail(str(err))
    except PermissionError as err:
        fail(permission_message(err))
    from nlpexp.training import distributed

    if distributed.is_worker():
        if not any(a.startswith("hydra.run.dir=") for a in args) and distributed.other_node():
            fail(f"trainer.nnodes: node {distributed.node_rank()} writes into the run folder of node 0: give the same "
                 "hydra.run.dir=<folder> on every node (a folder every node sees)")
        if not any(a.startswith("hydra.run.dir=") for a in args):
            fail("under torchrun every rank needs the same folder: add hydra.run.dir=<folder> "
                 "(or use trainer.nproc=N, which does it for you)")
        if not distributed.is_main_process():  # only rank 0 writes the run folder
            args += [o for o in distributed.WORKER_OVERRIDES if o not in args]
    try:
        if not distributed.is_worker():  # a worker's arguments are its launcher's, already checked
            argument_errors(args)
            grammar_errors(args)
        check_plugins(args)
        sweep = any(a in ("-m", "--multirun") for a in args)
        if sweep and any(a.startswith("resume=") and a.split("=", 1)[1].lower() != "true" for a in args):
            raise UserError("resume=<run folder> continues one run; a sweep run again with the same command and "
                            "hydra.sweep.dir=<its folder> reuses its finished jobs and resumes the others in their "
                            "own folders (resume=true says the same)")
        if any(a.startswith("resume=") for a in args) and not distributed.is_worker() and not sweep:
            args = resume_args(args)  # (workers: their parent did it; a sweep's jobs each resume their own folder)
        checked = None
        if not any(a.split("=")[0] in HYDRA_FLAGS for a in args):
            checked = preflight(args)
        elif any(a in ("-m", "--multirun") for a in args) and not any(a in NO_CHECK_FLAGS for a in args):
            sweep_preflight(args)
    except UserError as err:
        fail(str(err))
    except PermissionError as err:  # a file the check reads (data, a saved run) the user may not read
        fail(permission_message(err))
    for note in NOTES:
        print(note, file=sys.stderr)
    if any(a in ("-m", "--multirun") for a in args):
        from nlpexp import watchdog

        os.environ[watchdog.ENV] = str(os.getpid())  # this sweep's workers stop when it is gone
        from nlpexp.runtime import visible_gpus

        os.environ.setdefault("NLPEXP_SWEEP_GPUS", ",".join(visible_gpus()))  # the GPUs its jobs share out
        watchdog.start_reaper()
    sys.argv = sys.argv[:1] + args
    from nlpexp.runs import release

    try:
        hydra_main(checked)
    except KeyboardInterrupt:  # Ctrl-C outside a run's own handling (Hydra starting up, a sweep's launcher)
        print("nlpexp: interrupted (SIGINT): a run folder it made says so; run the same command again (resume= "
              "continues a run, hydra.sweep.dir=<its folder> a sweep)", file=sys.stderr)
        sys.exit(130)
    finally:  # a folder claimed by the pre-run check is let go however the run ends
        release()


if __name__ == "__main__":
    main()
