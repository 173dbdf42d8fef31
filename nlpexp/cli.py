"""The single entrypoint: validate, seed, pick the device, dispatch to the task runner, write the run summary."""
import json
import shutil
import sys
import time
import traceback
import warnings
from datetime import datetime
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from nlpexp.errors import UserError

CONF_MODULE = "nlpexp.conf"

# our thin hydra/launcher configs extend the plugins' configs of the same name (Hydra 1.3 warns, and supports
# it); at import, so that launcher worker processes, which import this module, are quiet too
warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema")


def _run_dir(task: str, model: str, mode: str, ckpt) -> str:
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    if mode in ("eval", "predict", "generate") and ckpt:
        return str(Path(str(ckpt)).expanduser() / mode / stamp)
    path, n = f"outputs/{task}/{model}/{stamp}", 1
    while Path(path).exists():  # another run started in the same second: never share a folder
        path, n = f"outputs/{task}/{model}/{stamp}_{n}", n + 1
    return path


if not OmegaConf.has_resolver("nlpexp_run_dir"):
    OmegaConf.register_new_resolver("nlpexp_run_dir", _run_dir, use_cache=True)


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


def fail(message: str) -> None:
    print(f"nlpexp: error: {message}", file=sys.stderr)
    sys.exit(2)


def _needs_hub(cfg: DictConfig) -> bool:
    from nlpexp.hub import is_hub_id

    hub_model = is_hub_id(cfg.model.get("pretrained")) and not cfg.get("smoke")
    hub_data = cfg.get("data") is not None and cfg.data.source == "hub" and not cfg.data.get("path")
    return hub_model or hub_data


def run_job(cfg: DictConfig):
    """Bookkeeping around one run: the task runner only computes and writes its own outputs."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from nlpexp import distributed, hub, registry, runtime
    from nlpexp.validate import check_config

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    fresh = _is_fresh(run_dir)
    main_rank = distributed.is_main_process()  # only rank 0 of a data-parallel run writes the run folder
    started = time.time()
    try:
        if cfg.get("smoke"):
            cfg = runtime.apply_smoke(cfg, list(hc.overrides.task))
            if (run_dir / ".hydra").is_dir() and main_rank:  # the saved config is the one that ran
                OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
        check_config(cfg)
        nproc = int(cfg.get("trainer", {}).get("nproc", 1) or 1)
        if nproc > 1 and not distributed.is_worker():
            distributed.check_devices(cfg.device.name, nproc)
            return _launch_data_parallel(cfg, list(hc.overrides.task), run_dir, nproc, multirun)
        if _needs_hub(cfg):
            hub.settle_hub_mode()
        device = runtime.resolve_device(cfg.device.name)
        runtime.limit_threads(hc)
        runtime.seed_everything(cfg.seed)
        if cfg.get("resume"):
            cfg = runtime.resume_point(cfg, run_dir)
        result = registry.runner(cfg.task.name).run(cfg, run_dir, device)
    except UserError as err:
        if not main_rank:
            raise
        if multirun:  # the sweep goes on; the job is recorded as failed
            _write_json(run_dir / "metrics.json", {"status": "failed", "error": str(err)})
            print(f"nlpexp: error: {err}", file=sys.stderr)
            return None
        if fresh:
            shutil.rmtree(run_dir, ignore_errors=True)
        fail(str(err))
    except Exception as err:
        if main_rank:
            _write_json(run_dir / "metrics.json", {"status": "failed", "error": repr(err)})
        if multirun:  # a crash in one job is recorded; the rest of the sweep still runs
            traceback.print_exc()
            print(f"nlpexp: job {run_dir} failed: {err!r}", file=sys.stderr)
            return None
        raise
    except BaseException as err:  # KeyboardInterrupt, SystemExit: recorded, then stop
        if main_rank:
            _write_json(run_dir / "metrics.json", {"status": "failed", "error": repr(err)})
        raise

    if result is None or not main_rank:  # predict mode prints its own answer; ranks > 0 write nothing
        return None
    summary = {
        "status": "complete",
        "task": cfg.task.name,
        "model": cfg.model.name,
        "mode": cfg.mode,
        "metrics": result["metrics"],
        **{k: v for k, v in result.items() if k != "metrics"},
        "wall_time_s": round(time.time() - started, 3),
        "device": device,
        "seed": cfg.seed,
        "versions": runtime.library_versions(),
        "git_commit": runtime.git_commit(),
        "run_dir": str(run_dir),
    }
    if cfg.get("resume"):
        summary["resumed_from"] = cfg.get("resume_from")
    if distributed.world_size() > 1:
        summary["processes"] = distributed.world_size()
    _write_json(run_dir / "metrics.json", summary)
    from nlpexp import loggers

    try:
        loggers.log_run(cfg, run_dir, summary)
    except Exception as err:  # noqa: BLE001 -- the run is complete and recorded: a logger failure does not undo it
        print(f"nlpexp: warning: logger={loggers.name(cfg)} failed: {err!r}", file=sys.stderr)
    print_summary(summary)
    objective = result["metrics"].get(result.get("objective", ""))
    return objective


def _is_fresh(run_dir: Path) -> bool:
    """True when the folder holds nothing but what Hydra just made (safe to remove on bad input)."""
    return all(p.name == ".hydra" or p.suffix == ".log" for p in run_dir.iterdir()) if run_dir.is_dir() else True


def _launch_data_parallel(cfg: DictConfig, overrides: list[str], run_dir: Path, nproc: int, multirun: bool):
    """This process only starts the workers; rank 0 of them writes metrics.json as any run does."""
    from nlpexp import distributed

    code = distributed.launch(overrides, run_dir, nproc)
    path = run_dir / "metrics.json"
    summary = json.loads(path.read_text()) if path.exists() else {}
    if code != 0 or summary.get("status") != "complete":
        if summary.get("status") != "failed" and run_dir.exists():
            _write_json(path, {"status": "failed", "error": f"data-parallel workers exited with code {code}"})
        if multirun:
            return None
        sys.exit(code or 1)
    return summary["metrics"].get(summary.get("objective", ""))


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)


def print_summary(summary: dict) -> None:
    metrics = summary["metrics"]
    splits = list(dict.fromkeys(k.split("_", 1)[0] for k in metrics if "_" in k))
    names = list(dict.fromkeys(k.split("_", 1)[1] for k in metrics if "_" in k))
    lines = [f"\n{summary['task']} / {summary['model']} ({summary['mode']}) on {summary['device']}, "
             f"{summary['wall_time_s']:.1f}s"]
    lines.append(f"{'metric':<22}" + "".join(f"{s:>12}" for s in splits))
    for name in names:
        row = [metrics.get(f"{s}_{name}") for s in splits]
        lines.append(f"{name:<22}" + "".join(f"{v:>12.4f}" if isinstance(v, (int, float)) else f"{'':>12}"
                                             for v in row))
    lines.append(f"run folder: {summary['run_dir']}")
    print("\n".join(lines))


def preflight(overrides: list[str]) -> None:
    """Compose and check the config before Hydra creates a run folder: bad input fails in one line."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from nlpexp import registry
    from nlpexp.validate import check_config

    for group, known in (("task", registry.TASKS), ("model", registry.MODELS)):
        for item in overrides:
            key, _, value = item.lstrip("+~").partition("=")
            if key == group and value not in known:
                raise UserError(f"unknown {group} '{value}'; available {group}s: {', '.join(sorted(known))}")
    user = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(CONF_MODULE, version_base="1.3"):
            cfg = compose("config", overrides=user)
    except Exception as err:  # composition errors from Hydra/OmegaConf: first line is the message
        lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
        raise UserError(" ".join(lines)[:400]) from None
    finally:
        GlobalHydra.instance().clear()
    if cfg.get("smoke"):
        from nlpexp.runtime import apply_smoke

        cfg = apply_smoke(cfg, user)
    check_config(cfg)
    if cfg.device.name in ("cuda", "mps"):
        from nlpexp.runtime import resolve_device

        resolve_device(cfg.device.name)


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


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def hydra_main(cfg: DictConfig):
    return run_job(cfg)


def _saved_run_choices(args: list[str]) -> list[str]:
    """`mode=eval|predict|generate ckpt=<run>` without task=/model=: take them from the saved run's config."""
    given = {a.lstrip("+~").split("=", 1)[0]: a.split("=", 1)[1] for a in args if "=" in a}
    ckpt = given.get("ckpt")
    if given.get("mode", "train") == "train" or not ckpt:
        return []
    saved = Path(ckpt).expanduser() / ".hydra" / "config.yaml"
    if not saved.exists():
        return []
    cfg = OmegaConf.load(saved)
    return [f"{key}={cfg[key].name}" for key in ("task", "model") if key not in given and key in cfg]


def _quote_free_text(arg: str) -> str:
    """prompt=/text= values are free text (Chinese, punctuation): quote them so Hydra's grammar takes them as is."""
    key, eq, value = arg.partition("=")
    if not eq or key.lstrip("+~") not in ("prompt", "text") or value[:1] in ("'", '"'):
        return arg
    return f"{key}='" + value.replace("'", "\\'") + "'"  # Hydra: only a quote needs escaping inside quotes


def main() -> None:
    sys.argv[1:] = [_quote_free_text(a) for a in sys.argv[1:]]
    sys.argv[1:] = sys.argv[1:] + _saved_run_choices(sys.argv[1:])
    args = sys.argv[1:]
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
    except UserError as err:
        fail(str(err))
    sys.argv = sys.argv[:1] + args
    hydra_flags = {"-m", "--multirun", "--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c",
                   "--shell-completion", "-sc", "--version", "--config-dir", "-cd", "--config-name", "-cn",
                   "--config-path", "-cp", "--package", "-p", "--resolve", "--run", "-r"}
    if not any(a.split("=")[0] in hydra_flags for a in args):
        try:
            preflight([a for a in args if not a.startswith("-")])
        except UserError as err:
            fail(str(err))
    hydra_main()


if __name__ == "__main__":
    main()
