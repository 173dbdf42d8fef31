"""The `nlpexp` command: argv -> overrides. Flags and the override grammar are checked here (one line, exit 2);
free text is quoted, `mode=eval ckpt=<run>` takes the run's task and model, `model=<folder>` becomes its model
config, `resume=<run>` its saved overrides (nlpexp/runs.py). The run itself (its config composed and checked once,
then Hydra's job): nlpexp/run.py `start`; a sweep: Hydra's main after nlpexp/run.py `check_sweep`.
"""
import sys
import warnings
from pathlib import Path

from nlpexp.errors import UserError, permission_message
from nlpexp.run import check_sweep, fail, hydra_main, share_out_sweep, start
from nlpexp.runs import check_ckpt_args, resume_args
from nlpexp.config.validate import composition_error

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


def check_plugins(args: list[str]) -> None:
    import importlib.util

    for arg in args:
        for prefix, (module, extra) in PLUGINS.items():
            if arg.lstrip("+").startswith(prefix) and importlib.util.find_spec(module) is None:
                raise UserError(f"{arg} needs the {module.split('.')[1].replace('_', '-')} plugin: "
                                f"pip install 'nlpexp[{extra}]'")


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


def _model_folders(args: list[str], notes: list[str]) -> list[str]:
    """`model=<a save_pretrained folder>` works as a hub id does: the model config of the folder's architecture for
    the task (a GPT-2 -> gpt2, an encoder -> bert / bert_chinese / bert_fc, a sentence-transformers folder ->
    sentence_transformers), the folder as model.pretrained."""
    import json

    from nlpexp.config import registry

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
        notes.append(f"nlpexp: model={value}: a {kind} folder, run as model={name} model.pretrained={folder.resolve()}")
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
    from nlpexp.config import registry

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
    args = [_experiment_choice(_quote_free_text(a)) for a in sys.argv[1:]]
    if any(a in ("--help", "-h") for a in args):
        print_help()
        return
    notes: list[str] = []  # lines for stderr once the command is known to run (a refusal stays one line)
    try:
        check_ckpt_args(args)
        args = _model_folders(args + _saved_run_choices(args), notes)
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
    single = not any(a.split("=")[0] in HYDRA_FLAGS for a in args)  # else Hydra's main (sweeps check each job)
    sweep = any(a in ("-m", "--multirun") for a in args)
    try:
        if not distributed.is_worker():  # a worker's arguments are its launcher's, already checked
            argument_errors(args)
            grammar_errors(args)
        check_plugins(args)
        if sweep and any(a.startswith("resume=") and a.split("=", 1)[1].lower() != "true" for a in args):
            raise UserError("resume=<run folder> continues one run; a sweep run again with the same command and "
                            "hydra.sweep.dir=<its folder> reuses its finished jobs and resumes the others in their "
                            "own folders (resume=true says the same)")
        if any(a.startswith("resume=") for a in args) and not distributed.is_worker() and not sweep:
            args = resume_args(args, notes)  # (workers: their parent did it; a sweep's jobs each resume their own)
        if sweep and not any(a in NO_CHECK_FLAGS for a in args):
            check_sweep(args, notes)
    except UserError as err:
        fail(str(err))
    except PermissionError as err:  # a file the check reads (data, a saved run) the user may not read
        fail(permission_message(err))
    sys.argv = sys.argv[:1] + args
    from nlpexp.runs import release

    try:
        if single:  # composed and checked once (one line, exit 2, nothing written), then run
            start(args, notes)
        else:
            for note in notes:
                print(note, file=sys.stderr)
            if sweep:
                share_out_sweep()
            hydra_main()
    except KeyboardInterrupt:  # Ctrl-C outside a run's own handling (Hydra starting up, a sweep's launcher)
        print("nlpexp: interrupted (SIGINT): a run folder it made says so; run the same command again (resume= "
              "continues a run, hydra.sweep.dir=<its folder> a sweep)", file=sys.stderr)
        sys.exit(130)
    finally:  # a folder claimed by the pre-run check is let go however the run ends
        release()


if __name__ == "__main__":
    main()
