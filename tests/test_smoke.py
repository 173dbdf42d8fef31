"""Smoke runs of every finsent cell, the output contract, determinism and using a trained run."""
import json

import pandas as pd
import pytest

from nlpexp import registry

CONTRACT = ["metrics.json", "history.csv", "predictions.csv", "confusion_matrix.png", "history.png",
            ".hydra/config.yaml", "checkpoints/best"]


@pytest.mark.parametrize("model", registry.SUPPORTED["finsent"])
def test_smoke_run_writes_the_output_contract(nlpexp, model):
    res = nlpexp("+smoke=true", f"model={model}")
    assert res.code == 0, res.err[-3000:]
    (run,) = [d for d in res.run_dirs()]
    assert run.relative_to(res.cwd).parts[:3] == ("outputs", "finsent", model)
    for name in CONTRACT:
        assert (run / name).exists(), name
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "complete" and summary["seed"] == 42 and summary["device"] == "cpu"
    for key in ("test_accuracy", "test_macro_f1", "test_weighted_precision", "test_weighted_recall", "val_accuracy"):
        assert 0.0 <= summary["metrics"][key] <= 1.0
    assert summary["wall_time_s"] > 0 and summary["train_samples_per_s"] > 0
    assert {"torch", "transformers", "python"} <= set(summary["versions"])
    assert set(summary["per_class"]) >= {"negative", "neutral", "positive"}
    preds = pd.read_csv(run / "predictions.csv")
    assert list(preds.columns) == ["text", "gold", "predicted", "p_negative", "p_neutral", "p_positive"]
    assert len(preds) == 32
    assert preds[["p_negative", "p_neutral", "p_positive"]].sum(axis=1).round(4).eq(1).all()
    assert "accuracy" in res.out and "run folder:" in res.out


@pytest.mark.parametrize("model", ["doc2vec", "bert"])
def test_same_config_twice_gives_identical_metrics(nlpexp, tmp_path, model):
    first = nlpexp("+smoke=true", f"model={model}", f"hydra.run.dir={tmp_path}/a")
    second = nlpexp("+smoke=true", f"model={model}", f"hydra.run.dir={tmp_path}/b")
    assert first.code == second.code == 0
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())["metrics"]
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())["metrics"]
    assert a == b


def test_eval_and_predict_from_a_saved_run(nlpexp, tmp_path):
    from transformers import AutoModelForSequenceClassification

    assert nlpexp("+smoke=true", "model=bert", f"hydra.run.dir={tmp_path}/run").code == 0
    run = tmp_path / "run"
    trained = json.loads((run / "metrics.json").read_text())["metrics"]

    res = nlpexp("mode=eval", f"ckpt={run}")
    assert res.code == 0, res.err[-2000:]
    evaluated = json.loads(sorted((run / "eval").glob("*/metrics.json"))[-1].read_text())["metrics"]
    assert evaluated["test_accuracy"] == trained["test_accuracy"]

    res = nlpexp("mode=predict", f"ckpt={run}", "text=Net sales rose 12 percent to EUR 40 million.")
    assert res.code == 0 and res.out.split()[0] in ("negative", "neutral", "positive")

    texts = tmp_path / "news.txt"
    texts.write_text("Profit fell sharply.\nThe meeting is on Friday.\n")
    out = tmp_path / "preds.csv"
    assert nlpexp("mode=predict", f"ckpt={run}", f"input={texts}", f"output={out}").code == 0
    assert list(pd.read_csv(out)["text"]) == ["Profit fell sharply.", "The meeting is on Friday."]

    model = AutoModelForSequenceClassification.from_pretrained(run / "checkpoints" / "best")
    assert model.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}


def test_doc2vec_saves_gensim_native_model(nlpexp, tmp_path):
    from gensim.models.doc2vec import Doc2Vec

    assert nlpexp("+smoke=true", "model=doc2vec", f"hydra.run.dir={tmp_path}/run").code == 0
    best = tmp_path / "run" / "checkpoints" / "best"
    assert Doc2Vec.load(str(best / "doc2vec.model")).vector_size == 100
    res = nlpexp("mode=eval", f"ckpt={tmp_path}/run")
    assert res.code == 0
