"""Experiment loggers, chosen by `logger=csv|tensorboard|mlflow` (optional dependencies: nlpexp[loggers]).

csv is what every run writes anyway (history.csv, metrics.json). The others receive the same facts when the
run ends: the resolved config, the per-epoch history and the final metrics; HF models also stream Trainer
steps to TensorBoard while training (report_to). Only rank 0 of a data-parallel run logs.
"""
import os
import time
from pathlib import Path

NEEDS = {"tensorboard": "tensorboard", "mlflow": "mlflow"}


def name(cfg) -> str:
    return str((cfg.get("logger") or {}).get("name", "csv"))


def missing_dependency(cfg) -> str | None:
    """A one-line message when the chosen logger's package is not installed (checked before any run folder)."""
    import importlib.util

    module = NEEDS.get(name(cfg))
    if module and importlib.util.find_spec(module) is None:
        return f"logger={name(cfg)} needs the {module} package: pip install 'nlpexp[loggers]'"
    return None


def hf_report_to(cfg, run_dir: Path) -> list[str]:
    """`report_to` for the transformers Trainer (its TensorBoard dir comes from the environment in 5.x)."""
    if name(cfg) == "tensorboard":
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(Path(run_dir) / cfg.logger.dir)
        return ["tensorboard"]
    return []


def _history(run_dir: Path) -> list[dict]:
    import pandas as pd

    path = Path(run_dir) / "history.csv"
    if not path.exists():
        return []
    return [{k: v for k, v in row.items() if pd.notna(v)} for row in pd.read_csv(path).to_dict("records")]


def _flat_config(cfg) -> dict:
    import pandas as pd
    from omegaconf import OmegaConf

    from nlpexp.secrets import redact

    plain = redact(OmegaConf.to_container(cfg, resolve=True))
    plain.pop("hydra", None)
    return {k: v for k, v in pd.json_normalize(plain, sep=".").iloc[0].to_dict().items()}


def log_run(cfg, run_dir: Path, summary: dict) -> None:
    chosen = name(cfg)
    if chosen == "tensorboard":
        to_tensorboard(cfg, Path(run_dir), summary)
    elif chosen == "mlflow":
        to_mlflow(cfg, Path(run_dir), summary)


def to_tensorboard(cfg, run_dir: Path, summary: dict) -> None:
    import yaml
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(run_dir / cfg.logger.dir))
    for step, row in enumerate(_history(run_dir), start=1):
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                writer.add_scalar(f"epoch/{key}", value, global_step=step)
    for key, value in summary["metrics"].items():
        if isinstance(value, (int, float)):
            writer.add_scalar(f"final/{key}", value, global_step=0)
    writer.add_text("config", "```\n" + yaml.safe_dump(_flat_config(cfg), sort_keys=False) + "```")
    if summary.get("tags"):
        writer.add_text("tags", ", ".join(summary["tags"]))
    writer.close()


def to_mlflow(cfg, run_dir: Path, summary: dict) -> None:
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = cfg.logger.get("tracking_uri") or (Path.cwd() / "outputs" / "mlruns").as_uri()
    if uri.startswith("file:"):  # MLflow >= 3.x keeps the file store but asks for this opt-in
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=uri)
    experiment = cfg.logger.get("experiment") or f"nlpexp-{cfg.task.name}"
    found = client.get_experiment_by_name(experiment)
    if found is None:
        try:
            experiment_id = client.create_experiment(experiment)
        except MlflowException:  # another job of the sweep created it first
            experiment_id = client.get_experiment_by_name(experiment).experiment_id
    else:
        experiment_id = found.experiment_id
    run = client.create_run(experiment_id, run_name=run_dir.name,
                            tags={"run_dir": str(run_dir.resolve()), "model": cfg.model.name,
                                  **({"tags": ",".join(summary["tags"])} if summary.get("tags") else {}),
                                  **{tag: "true" for tag in summary.get("tags") or []}})
    run_id, now = run.info.run_id, int(time.time() * 1000)
    params = [Param(k, str(v)[:500]) for k, v in _flat_config(cfg).items()]
    metrics = [Metric(f"epoch_{k}", float(v), now, step)
               for step, row in enumerate(_history(run_dir), start=1)
               for k, v in row.items() if k != "epoch" and isinstance(v, (int, float))]
    metrics += [Metric(k, float(v), now, 0) for k, v in summary["metrics"].items() if isinstance(v, (int, float))]
    metrics.append(Metric("wall_time_s", float(summary["wall_time_s"]), now, 0))
    for start in range(0, len(params), 100):
        client.log_batch(run_id, params=params[start:start + 100])
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start:start + 1000])
    client.set_terminated(run_id)
    print(f"mlflow: run {run_id} in experiment '{experiment}' at {uri}")


def step_logger(cfg, run_dir: Path | None):
    """For nlpexp.loop: a callable(step, scalars) streaming training steps to TensorBoard (as the Trainer's
    report_to does on the HF path); None for the loggers that receive everything when the run ends."""
    if name(cfg) != "tensorboard" or run_dir is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(Path(run_dir) / cfg.logger.dir))

    def log(step: int, scalars: dict) -> None:
        for key, value in scalars.items():
            writer.add_scalar(key, value, global_step=step)
        if step % 50 == 0:
            writer.flush()

    return log
