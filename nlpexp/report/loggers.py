"""Experiment loggers, chosen by `logger=csv|tensorboard|mlflow|wandb` (optional dependencies: nlpexp[loggers],
nlpexp[wandb]).

csv is what every run writes anyway (history.csv, metrics.json). The others receive the same facts when the
run ends: the resolved config, the per-epoch history and the final metrics; training steps stream to TensorBoard
(the Trainer's report_to, our loop's step_logger) and to W&B while training. Only rank 0 of a data-parallel run
logs. One run folder is one logger run: a resumed run continues it (the same TensorBoard folder; the MLflow and
W&B run ids kept in <run folder>/loggers.json).
"""
import os
import time
import uuid
from pathlib import Path

NEEDS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
IDS = "loggers.json"  # {logger: its run id} of this run folder


def name(cfg) -> str:
    return str((cfg.get("logger") or {}).get("name", "csv"))


def missing_dependency(cfg) -> str | None:
    """A one-line message when the chosen logger's package is not installed (checked before any run folder)."""
    import importlib.util

    module = NEEDS.get(name(cfg))
    if module and importlib.util.find_spec(module) is None:
        extra = "wandb" if module == "wandb" else "loggers"
        return f"logger={name(cfg)} needs the {module} package: pip install 'nlpexp[{extra}]'"
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


def _config(cfg) -> dict:
    """The resolved config without hydra's node, secrets redacted."""
    from omegaconf import OmegaConf

    from nlpexp.secrets import redact

    plain = redact(OmegaConf.to_container(cfg, resolve=True))
    plain.pop("hydra", None)
    return plain


def _flat_config(cfg) -> dict:
    import pandas as pd

    return {k: v for k, v in pd.json_normalize(_config(cfg), sep=".").iloc[0].to_dict().items()}


def run_id(run_dir: Path, logger: str, new) -> str:
    """This run folder's run id in `logger`: the one it has (a resumed run continues it), else new() kept."""
    import json

    path = Path(run_dir) / IDS
    ids = json.loads(path.read_text()) if path.exists() else {}
    if logger not in ids:
        ids[logger] = new()
        path.write_text(json.dumps(ids, indent=1))
    return ids[logger]


def log_run(cfg, run_dir: Path, summary: dict) -> None:
    chosen = name(cfg)
    if chosen == "tensorboard":
        to_tensorboard(cfg, Path(run_dir), summary)
    elif chosen == "mlflow":
        to_mlflow(cfg, Path(run_dir), summary)
    elif chosen == "wandb":
        to_wandb(cfg, Path(run_dir), summary)


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
    created = []

    def create() -> str:
        run = client.create_run(experiment_id, run_name=run_dir.name,
                                tags={"run_dir": str(run_dir.resolve()), "model": cfg.model.name,
                                      **({"tags": ",".join(summary["tags"])} if summary.get("tags") else {}),
                                      **{tag: "true" for tag in summary.get("tags") or []}})
        created.append(run.info.run_id)
        return run.info.run_id

    mlflow_id = run_id(run_dir, "mlflow", create)
    try:
        client.get_run(mlflow_id)
    except MlflowException:  # the store it was in is gone (another tracking_uri): a new run
        (run_dir / IDS).unlink()
        mlflow_id = run_id(run_dir, "mlflow", create)
    now = int(time.time() * 1000)
    # the config once, when the run is created (MLflow refuses to change a logged parameter)
    params = [Param(k, str(v)[:500]) for k, v in _flat_config(cfg).items()] if created else []
    metrics = [Metric(f"epoch_{k}", float(v), now, step)
               for step, row in enumerate(_history(run_dir), start=1)
               for k, v in row.items() if k != "epoch" and isinstance(v, (int, float))]
    metrics += [Metric(k, float(v), now, 0) for k, v in summary["metrics"].items() if isinstance(v, (int, float))]
    metrics.append(Metric("wall_time_s", float(summary["wall_time_s"]), now, 0))
    for start in range(0, len(params), 100):
        client.log_batch(mlflow_id, params=params[start:start + 100])
    for start in range(0, len(metrics), 1000):
        client.log_batch(mlflow_id, metrics=metrics[start:start + 1000])
    client.set_terminated(mlflow_id)
    print(f"mlflow: run {mlflow_id} in experiment '{experiment}' at {uri}")


def wandb_run(cfg, run_dir: Path):
    """This run folder's W&B run, started or continued (the id in loggers.json; resume="allow"), its files in
    <run folder>/wandb: the run name task/model/folder, the tags, the resolved config (secrets redacted)."""
    import wandb

    wid = run_id(run_dir, "wandb", lambda: uuid.uuid4().hex[:12])
    if wandb.run is not None and wandb.run.id == wid:
        return wandb.run
    mode = cfg.logger.get("mode") or os.environ.get("WANDB_MODE") or None
    multirun = Path(run_dir).parent.name if str(Path(run_dir).name).isdigit() else None  # a sweep's job folder
    run = wandb.init(project=cfg.logger.get("project") or f"nlpexp-{cfg.task.name}", entity=cfg.logger.get("entity"),
                     name=f"{cfg.task.name}/{cfg.model.name}/{Path(run_dir).name}", id=wid, resume="allow",
                     dir=str(run_dir), tags=[str(t) for t in cfg.get("tags") or []], config=_config(cfg),
                     group=multirun, job_type=str(cfg.mode), mode=mode,
                     settings=wandb.Settings(silent=not cfg.get("verbose"), console="off"))
    run.define_metric("train/*", step_metric="train/step")
    run.define_metric("epoch/*", step_metric="epoch/epoch")
    return run


def to_wandb(cfg, run_dir: Path, summary: dict) -> None:
    run = wandb_run(cfg, run_dir)
    for row in _history(run_dir):
        values = {f"epoch/{k}": v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if "epoch/epoch" in values:
            run.log(values)
    run.summary.update({k: v for k, v in summary["metrics"].items() if isinstance(v, (int, float))})
    run.summary.update({"wall_time_s": summary["wall_time_s"], "status": summary["status"]})
    where, offline = Path(run.dir).parent, run.offline  # <run folder>/wandb/offline-run-<time>-<id>
    url = None if offline else run.url
    run.finish()
    print(f"wandb: offline run {where} (upload: wandb sync {where})" if offline else
          f"wandb: run {run.id} in project {run.project}" + (f": {url}" if url else ""))


def step_logger(cfg, run_dir: Path | None):
    """For nlpexp.training.loop (and the Trainer, for W&B): a callable(step, scalars) streaming training steps to
    TensorBoard (as the Trainer's report_to does on the HF path) or W&B; None for the loggers that receive
    everything when the run ends."""
    if name(cfg) not in ("tensorboard", "wandb") or run_dir is None:
        return None
    if name(cfg) == "wandb":
        run = wandb_run(cfg, Path(run_dir))
        return lambda step, scalars: run.log({"train/step": step, **scalars})
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(Path(run_dir) / cfg.logger.dir))

    def log(step: int, scalars: dict) -> None:
        for key, value in scalars.items():
            writer.add_scalar(key, value, global_step=step)
        if step % 50 == 0:
            writer.flush()

    return log
