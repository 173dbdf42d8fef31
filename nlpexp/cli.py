"""The single entrypoint: validate, seed, pick the device, dispatch to the task runner, write the run summary."""
import json
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from nlpexp.errors import UserError

CONF_MODULE = "nlpexp.conf"


def _run_dir(task: str, model: str, mode: str, ckpt) -> str:
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    if mode in ("eval", "predict", "generate") and ckpt:
        return str(Path(str(ckpt)).expanduser() / mode / stamp)
    return f"outputs/{task}/{model}/{stamp}"


if not OmegaConf.has_resolver("nlpexp_run_dir"):
    OmegaConf.register_new_resolver("nlpexp_run_dir", _run_dir, use_cache=True)


def fail(message: str) -> None:
    print(f"nlpexp: error: {message}", file=sys.stderr)
    sys.exit(2)


def _needs_hub(cfg: DictConfig) -> bool:
    from nlpexp.runtime import is_hub_id

    hub_model = is_hub_id(cfg.model.get("pretrained")) and not cfg.get("smoke")
    hub_data = cfg.get("data") is not None and cfg.data.source == "hub" and not cfg.data.get("path")
    return hub_model or hub_data


def run_job(cfg: DictConfig):
    """Bookkeeping around one run: the task runner only computes and writes its own outputs."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from nlpexp import registry, runtime
    from nlpexp.validate import check_config

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    started = time.time()
    try:
        if cfg.get("smoke"):
            cfg = runtime.apply_smoke(cfg, list(hc.overrides.task))
            if (run_dir / ".hydra").is_dir():  # the saved config is the one that ran
                OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
        check_config(cfg)
        if _needs_hub(cfg):
            runtime.settle_hub_mode()
        device = runtime.resolve_device(cfg.device.name)
        runtime.seed_everything(cfg.seed)
        result = registry.runner(cfg.task.name).run(cfg, run_dir, device)
    except UserError as err:
        if multirun:  # the sweep goes on; the job is recorded as failed
            _write_json(run_dir / "metrics.json", {"status": "failed", "error": str(err)})
            print(f"nlpexp: error: {err}", file=sys.stderr)
            return None
        if cfg.mode == "train":
            shutil.rmtree(run_dir, ignore_errors=True)
        fail(str(err))
    except BaseException as err:
        _write_json(run_dir / "metrics.json", {"status": "failed", "error": repr(err)})
        raise

    if result is None:  # predict mode prints its own answer
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
    _write_json(run_dir / "metrics.json", summary)
    print_summary(summary)
    objective = result["metrics"].get(result.get("objective", ""))
    return objective


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
        raise UserError(" ".join(line.strip() for line in str(err).strip().splitlines() if line.strip())[:400]) from None
    finally:
        GlobalHydra.instance().clear()
    if cfg.get("smoke"):
        from nlpexp.runtime import apply_smoke

        cfg = apply_smoke(cfg, user)
    check_config(cfg)
    if cfg.device.name in ("cuda", "mps"):
        from nlpexp.runtime import resolve_device

        resolve_device(cfg.device.name)


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
    hydra_flags = {"-m", "--multirun", "--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c",
                   "--shell-completion", "-sc", "--version", "--config-dir", "-cd", "--config-name", "-cn",
                   "--config-path", "-cp", "--package", "-p", "--resolve", "--run", "-r"}
    if not any(a.split("=")[0] in hydra_flags for a in args) and "mode: MULTIRUN" not in " ".join(args):
        try:
            preflight([a for a in args if not a.startswith("-")])
        except UserError as err:
            fail(str(err))
    hydra_main()


if __name__ == "__main__":
    main()
