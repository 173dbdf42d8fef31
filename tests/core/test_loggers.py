"""logger=tensorboard writes event files into the run folder; logger=mlflow a run into a local file store;
logger=wandb an offline run into the run folder; a resumed run continues its logger run."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from killer import KILL_AFTER_CHECKPOINT_6 as KILLER  # noqa: E402


def test_tensorboard_event_files_in_the_run_folder(nlpexp, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = nlpexp("+smoke=true", "model=bert", "logger=tensorboard", "tags=[ablation]", f"hydra.run.dir={tmp_path}/run")
    assert res.code == 0, res.err[-3000:]
    events = sorted((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) >= 2  # the Trainer's live steps and the end-of-run summary
    tags = set()
    for path in events:
        acc = EventAccumulator(str(path))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"]) | set(acc.Tags()["tensors"])
    assert {"final/test_accuracy", "epoch/val_accuracy"} <= tags
    assert any(t.startswith("train/") for t in tags)
    assert "tags/text_summary" in tags  # tags=[...] as the run's text


@pytest.mark.parametrize("value,needle", [("tags=baseline", "tags must be a list, e.g. tags=[baseline"),
                                          ("tags=['a,b']", "tags must be non-empty words without commas")])
def test_bad_tags_are_one_line(nlpexp, tmp_path, value, needle):
    res = nlpexp("+smoke=true", "model=doc2vec", value)
    assert res.code == 2 and needle in res.err, res.err[-2000:]
    assert not (tmp_path / "outputs").exists()


def test_mlflow_local_file_store(nlpexp, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    res = nlpexp("+smoke=true", "model=doc2vec", "logger=mlflow", "tags=[baseline,v2]")
    assert res.code == 0, res.err[-3000:]
    client = MlflowClient(tracking_uri=(tmp_path / "outputs" / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("nlpexp-finsent").experiment_id])
    (run_dir,) = res.run_dirs()
    assert run.data.tags["run_dir"] == str(run_dir.resolve())
    assert run.data.tags["tags"] == "baseline,v2" and run.data.tags["baseline"] == run.data.tags["v2"] == "true"
    assert res.metrics()["tags"] == ["baseline", "v2"]
    assert run.data.params["model.name"] == "doc2vec" and run.data.params["seed"] == "42"
    preds = pd.read_csv(run_dir / "predictions.csv")
    assert run.data.metrics["test_accuracy"] == pytest.approx((preds["predicted"] == preds["gold"]).mean(), abs=1e-6)
    assert "wall_time_s" in run.data.metrics


def test_default_logger_is_csv():
    from hydra import compose, initialize_config_module

    with initialize_config_module("nlpexp.conf", version_base="1.3"):
        assert compose("config").logger.name == "csv"


def test_wandb_offline_writes_its_run_inside_the_run_folder(nlpexp, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    res = nlpexp("+smoke=true", "model=bert", "logger=wandb", "tags=[ablation,v2]", f"hydra.run.dir={tmp_path}/run")
    assert res.code == 0, res.err[-3000:]
    run_dir = tmp_path / "run"
    wid = json.loads((run_dir / "loggers.json").read_text())["wandb"]
    (offline,) = (run_dir / "wandb").glob(f"offline-run-*-{wid}")
    assert f"wandb sync {offline}" in res.out
    record = (offline / f"run-{wid}.wandb").read_bytes()
    for expected in (b"finsent/bert/run", b"nlpexp-finsent", b"ablation", b"v2", b"max_train_samples",
                     b"epoch/val_accuracy", b"train/loss", b"test_accuracy"):
        assert expected in record, expected




@pytest.mark.slow
@pytest.mark.parametrize("logger", ["tensorboard", "wandb"])
def test_a_resumed_run_continues_its_logger_run(logger, nlpexp, tmp_path, monkeypatch):
    pytest.importorskip(logger)
    monkeypatch.setenv("WANDB_MODE", "offline")
    run = ["+smoke=true", "task=story", "model=gpt2", "data.max_train_samples=64", "trainer.epochs=2",
           "trainer.max_steps=-1", "trainer.save_steps=2", f"logger={logger}"]
    (tmp_path / "killer.py").write_text(KILLER)
    # its own W&B service: a child inherits this process's (WANDB_SERVICE), where the killed run would stay open
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    proc = subprocess.run([sys.executable, str(tmp_path / "killer.py"), *run], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**env, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == -9, proc.stderr[-3000:]
    (run_dir,) = [p.parent for p in (tmp_path / "outputs").rglob(".hydra")]
    before = (run_dir / "loggers.json").read_text() if logger == "wandb" else None
    res = nlpexp("resume=true")
    assert res.code == 0, res.err[-3000:]
    if logger == "tensorboard":  # steps 1-6 before the kill, 7-8 after it, in the one folder
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        steps = []
        for path in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")):
            acc = EventAccumulator(str(path))
            acc.Reload()
            if "train/loss" in acc.Tags()["scalars"]:
                steps += [e.step for e in acc.Scalars("train/loss")]
        assert sorted(steps) == list(range(1, 9))
    else:  # the same run id before and after: two offline parts of one W&B run (wandb sync joins them)
        wid = json.loads(before)["wandb"]
        assert (run_dir / "loggers.json").read_text() == before
        parts = sorted((run_dir / "wandb").glob("offline-run-*"))
        assert len(parts) == 2 and all(p.name.endswith(wid) for p in parts)
        # (what the killed part had not flushed is lost with it: SIGKILL gives W&B no time)
        resumed_part = (parts[1] / f"run-{wid}.wandb").read_bytes()
        assert b"train/loss" in resumed_part and b"epoch/train_loss" in resumed_part


def test_mlflow_logs_a_run_folder_into_one_run(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    from omegaconf import OmegaConf

    from nlpexp.report import loggers

    uri = (tmp_path / "mlruns").as_uri()
    cfg = OmegaConf.create({"logger": {"name": "mlflow", "tracking_uri": uri, "experiment": "e"},
                            "task": {"name": "finsent"}, "model": {"name": "bert"}, "seed": 1})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for accuracy in (0.5, 0.75):  # the run, then the same folder again (resumed, re-evaluated)
        loggers.to_mlflow(cfg, run_dir, {"metrics": {"test_accuracy": accuracy}, "wall_time_s": 1.0})
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    assert run.info.run_id == json.loads((run_dir / "loggers.json").read_text())["mlflow"]
    assert run.data.metrics["test_accuracy"] == 0.75 and run.data.params["seed"] == "1"
