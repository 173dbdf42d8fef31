"""The `nlpexp` command: argv -> Hydra. The config is composed and checked before Hydra makes a run folder (bad
input: one line, exit 2, nothing written); `resume=`, free-text quoting, `--help` and the user config layer
(./conf, --config-dir, hydra.searchpath) are handled here. The run itself: nlpexp/run.py.
"""
import json
import sys
import warnings
from pathlib import Path

from nlpexp.errors import UserError
from nlpexp.run import fail

CONF_MODULE = "nlpexp.conf"
CONF_DIR = Path(__file__).parent / "conf"
# Hydra's own flags; with any of these but --config-dir the pre-run check is Hydra's (sweeps check each job)
HYDRA_FLAGS = {"-m", "--multirun", "--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion", "-sc",
               "--version", "--config-name", "-cn", "--config-path", "-cp", "--package", "-p", "--resolve", "--run",
               "-r"}

# our thin hydra/launcher configs extend the plugins' configs of the same name (Hydra 1.3 warns, and supports
# it); at import, so that launcher worker processes, which import this module, are quiet too
warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema")


# config choices served by optional Hydra plugins -> (module, extra that installs it)
PLUGINS = {
    "hydra/launcher=joblib": ("hydra_plugins.hydra_joblib_launcher", "launchers"),
    "hydra/launcher=submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "launchers"),
    "hydra/launcher=submitit_local": ("hydra_plugins.hydra_submitit_launcher", "launchers"),
    "hydra/launcher=ray": ("hydra_plugins.hydra_ray_launcher", "ray"),
    "hparams_search=": ("hydra_plugins.hydra_optuna_sweeper", "sweep"),
}


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
        raise UserError(composition_error(err)) from None
    finally:
        GlobalHydra.instance().clear()


def composition_error(err: Exception) -> str:
    import re

    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    cause = str(err.__cause__).strip().splitlines()[0] if str(err.__cause__ or "").strip() else ""
    unknown = re.match(r"Could not override '([^']+)'", lines[0] if lines else "")
    if unknown:  # Hydra's advice to append it with + does not apply: the schema has no such key
        from nlpexp.validate import renamed_hint

        new = renamed_hint(unknown.group(1))
        why = f"renamed: use {new}" if new else cause
        return f"{unknown.group(1)}: no such key" + (f" ({why})" if why else "")
    return (" ".join(lines) + (f": {cause}" if cause else ""))[:400]


def preflight(args: list[str]) -> None:
    """Compose and check the config before Hydra creates a run folder: every error found, in one line."""
    from nlpexp import registry, run
    from nlpexp.validate import check_config

    args, config_dir = config_dir_args(args)
    overrides = [a for a in args if not a.startswith("-")]
    for group, known in (("task", registry.TASKS), ("model", registry.MODELS)):
        for item in overrides:
            key, _, value = item.lstrip("+~").partition("=")
            if key == group and value not in known:
                raise UserError(f"unknown {group} '{value}'; available {group}s: {', '.join(sorted(known))}")
    user = [o for o in overrides if not o.lstrip("+~").startswith("hydra") or o.startswith("hydra.searchpath=")]
    cfg = compose(searchpath_override(user, config_dir))
    if cfg.get("smoke"):
        from nlpexp.runtime import apply_smoke

        cfg = apply_smoke(cfg, user)
    keys = [o for o in user if not o.startswith("hydra.")]
    check_config(cfg, keys)
    if cfg.device.name in ("cuda", "mps"):
        from nlpexp.runtime import resolve_device

        resolve_device(cfg.device.name)
    if cfg.get("dry_run"):
        print(f"nlpexp: config OK: task={cfg.task.name} model={cfg.model.name} mode={cfg.mode}, every key checked; "
              "nothing built, no run folder (drop dry_run=true to run it)")
        sys.exit(0)
    run.mark_checked(keys)


def resume_args(args: list[str]) -> list[str]:
    """`resume=<run folder>` (or `resume=true`: this folder, else the newest unfinished run under outputs/)
    becomes the saved run's own overrides + `hydra.run.dir=<that folder>`, so it continues in place."""
    import yaml

    from nlpexp.runtime import find_unfinished_run

    value = next(a for a in args if a.startswith("resume="))
    target = value.split("=", 1)[1].strip("'\"")
    rest = [a for a in args if a != value]
    if target.lower() in ("", "null", "none", "false"):
        return rest
    if target.lower() in ("true", "1", "yes", "last"):
        folder = find_unfinished_run(Path.cwd(), rest)
    else:
        folder = Path(target).expanduser()
    folder = folder.resolve()
    saved = folder / ".hydra" / "overrides.yaml"
    if not saved.exists():
        raise UserError(f"resume={target}: {folder} is not a run folder (no .hydra/overrides.yaml inside)")
    metrics = folder / "metrics.json"
    if metrics.exists() and json.loads(metrics.read_text()).get("status") == "complete":
        raise UserError(f"resume={target}: {folder} already finished (metrics.json says complete)")
    before = [o for o in (yaml.safe_load(saved.read_text()) or []) if not o.lstrip("+~").startswith("resume=")]
    extra = [a for a in rest if not a.startswith("hydra.run.dir=")]
    if any(not a.startswith(("hydra", "-")) for a in extra):
        print(f"nlpexp: warning: resuming with changed settings {extra}: the result may differ", file=sys.stderr)
    print(f"nlpexp: resuming {folder}", file=sys.stderr)
    return [*before, *extra, f"resume={folder}", f"hydra.run.dir={folder}"]


def hydra_main():
    import hydra

    from nlpexp.run import run_job

    return hydra.main(version_base="1.3", config_path="conf", config_name="config")(run_job)()


def _saved_run_choices(args: list[str]) -> list[str]:
    """`mode=eval|predict|generate ckpt=<run>` without task=/model=: take them from the saved run's config."""
    given = {a.lstrip("+~").split("=", 1)[0]: a.split("=", 1)[1] for a in args if "=" in a}
    ckpt = given.get("ckpt")
    if given.get("mode", "train") == "train" or not ckpt:
        return []
    saved = Path(ckpt).expanduser() / ".hydra" / "config.yaml"
    if not saved.exists():
        return []
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(saved)
    return [f"{key}={cfg[key].name}" for key in ("task", "model") if key not in given and key in cfg]


def _quote_free_text(arg: str) -> str:
    """prompt=/text= values are free text (Chinese, punctuation): quote them so Hydra's grammar takes them as is."""
    key, eq, value = arg.partition("=")
    if not eq or key.lstrip("+~") not in ("prompt", "text") or value[:1] in ("'", '"'):
        return arg
    return f"{key}='" + value.replace("'", "\\'") + "'"  # Hydra: only a quote needs escaping inside quotes


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
        return "|".join(sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")))

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
              "  dry_run=true (compose and check every key, build nothing)  verbose config: --cfg job",
              "", "examples:",
              "  nlpexp                                      # finsent x minilm on the embedded sample, offline",
              "  nlpexp task=finsent model=doc2vec data.path=Sentences_50Agree.txt",
              "  nlpexp task=story model=gpt2 mode=generate prompt='Once upon a time' ckpt=outputs/...",
              "  nlpexp -m model=minilm,doc2vec seed=1,2,3   # a sweep; nlpexp-report <its folder>"]
    print("\n".join(lines))


def main() -> None:
    args = [_experiment_choice(_quote_free_text(a)) for a in sys.argv[1:]]
    if any(a in ("--help", "-h") for a in args):
        print_help()
        return
    args += _saved_run_choices(args)
    from nlpexp import distributed

    if distributed.is_worker():
        if not any(a.startswith("hydra.run.dir=") for a in args):
            fail("under torchrun every rank needs the same folder: add hydra.run.dir=<folder> "
                 "(or use trainer.nproc=N, which does it for you)")
        if not distributed.is_main_process():  # only rank 0 writes the run folder
            args += [o for o in distributed.WORKER_OVERRIDES if o not in args]
    try:
        check_plugins(args)
        if any(a.startswith("resume=") for a in args) and not distributed.is_worker():  # workers: parent did it
            args = resume_args(args)
        if not any(a.split("=")[0] in HYDRA_FLAGS for a in args):
            preflight(args)
    except UserError as err:
        fail(str(err))
    sys.argv = sys.argv[:1] + args
    hydra_main()


if __name__ == "__main__":
    main()
