"""logger=tensorboard writes event files into the run folder; logger=mlflow a run into a local file store."""
import pandas as pd
import pytest


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
