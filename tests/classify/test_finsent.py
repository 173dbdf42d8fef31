"""Smoke runs of every finsent cell, the output contract, determinism and using a trained run."""
import hashlib
import json

import pandas as pd
import pytest

from nlpexp.config import registry

CONTRACT = ["metrics.json", "history.csv", "predictions.csv", "confusion_matrix.png", "history.png",
            ".hydra/config.yaml", "checkpoints/best"]


@pytest.mark.parametrize("model", registry.TASKS["finsent"].models)
def test_smoke_run_writes_the_output_contract(nlpexp, model):
    res = nlpexp("+smoke=true", f"model={model}")
    assert res.code == 0, res.err[-3000:]
    (run,) = [d for d in res.run_dirs()]
    assert run.relative_to(res.cwd).parts[:3] == ("outputs", "finsent", model)
    for name in CONTRACT:
        assert (run / name).exists(), name
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "complete" and summary["seed"] == 42 and summary["device"] == "cpu"
    # the embedded sample is ours: no public dataset, no published number beside it
    assert "dataset" not in summary and "baselines" not in summary and "published:" not in res.out
    # the headline metrics are those of the predictions it wrote
    from sklearn.metrics import f1_score, precision_score, recall_score

    test, val = pd.read_csv(run / "predictions.csv"), pd.read_csv(run / "predictions_val.csv")
    gold, pred, names = test["gold"], test["predicted"], ["negative", "neutral", "positive"]
    expected = {"test_accuracy": (gold == pred).mean(), "val_accuracy": (val["gold"] == val["predicted"]).mean(),
                "test_macro_f1": f1_score(gold, pred, labels=names, average="macro", zero_division=0),
                "test_weighted_precision": precision_score(gold, pred, labels=names, average="weighted",
                                                           zero_division=0),
                "test_weighted_recall": recall_score(gold, pred, labels=names, average="weighted", zero_division=0)}
    for key, value in expected.items():
        assert summary["metrics"][key] == pytest.approx(value, abs=1e-6), key
    assert summary["wall_time_s"] > 0 and summary["train_samples_per_s"] > 0
    # provenance: the file it read, with its sha256; the test split's items, by their lines in that file
    from nlpexp import provenance
    from nlpexp.inputs.readers import read_labelled_file, resource_path

    data, csv = summary["provenance"]["data"], resource_path("finsent.csv")
    assert data["sources"] == {"embedded:finsent.csv": hashlib.sha256(csv.read_bytes()).hexdigest()}
    rows = read_labelled_file(csv).assign(key=lambda f: f["text"].str.strip()).drop_duplicates("key")  # first kept
    tested = rows[rows["key"].isin(test["text"].astype(str).str.strip())]
    assert len(tested) == len(test) and data["splits"]["test"] == provenance.ids_sha256(tested["line"])
    assert set(data["splits"]) == {"train", "validation", "test"}
    assert {"torch", "transformers", "datasets", "python", "cpu", "packages_sha256"} <= \
        set(summary["provenance"]["environment"])
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


def test_doc2vec_saves_no_pickle_and_reloads_to_the_same_scores(nlpexp, tmp_path):
    from nlpexp.tasks.classify import doc2vec

    assert nlpexp("+smoke=true", "model=doc2vec", f"hydra.run.dir={tmp_path}/run").code == 0
    best = tmp_path / "run" / "checkpoints" / "best"
    assert not list(best.glob("*.model")) and (best / "doc2vec_word_vectors.npy").exists()
    assert doc2vec.load(best, "cpu").d2v.vector_size == 100
    res = nlpexp("mode=eval", f"ckpt={tmp_path}/run")
    assert res.code == 0
    trained = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]["test_accuracy"]
    evaluated = json.loads(sorted((tmp_path / "run" / "eval").glob("*/metrics.json"))[-1].read_text())
    assert evaluated["metrics"]["test_accuracy"] == trained


def test_finbert_vs_doc2vec_experiment_writes_one_comparison(nlpexp, tmp_path):
    res = nlpexp("+experiment=finbert_vs_doc2vec", "+smoke=true", f"hydra.sweep.dir={tmp_path}/sweep")
    assert res.code == 0, res.err[-3000:]
    table = pd.read_csv(tmp_path / "sweep" / "comparison.csv")
    assert list(table["model"]) == ["finbert", "doc2vec", "finbert - doc2vec"]
    diff = table.iloc[2]["test_accuracy"]
    assert abs(diff - (table.iloc[0]["test_accuracy"] - table.iloc[1]["test_accuracy"])) < 1e-9
    runs = [json.loads(p.read_text()) for p in (tmp_path / "sweep").glob("*/metrics.json")]
    assert sorted(r["model"] for r in runs) == ["doc2vec", "finbert"]
    assert (tmp_path / "sweep" / "comparison.md").read_text().count("|") > 10


def test_probe_initialised_head_predicts_like_the_linear_probe():
    import torch
    from omegaconf import OmegaConf
    from sklearn.linear_model import LogisticRegression

    from nlpexp.config.schema import typed
    from nlpexp.tasks.classify.config import HFClassifier
    from nlpexp.tasks.classify.hf import build
    from nlpexp.tasks.classify.trainer import init_head_from_probe

    texts = [f"sales {w} sharply in quarter {i}" for i in range(20) for w in ("rose", "fell", "were flat")]
    gold = [i % 3 for i in range(60)]
    small = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
             "vocab_size": 200}
    config = typed(OmegaConf.create({"name": "minilm", "pretrained": None, "small": small}), HFClassifier)
    tok, model = build(config, ["neg", "neu", "pos"], texts, 32)
    init_head_from_probe(model, tok, texts, gold, 32, seed=0)
    model.eval()
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        pooled = model.bert(**enc).pooler_output.numpy()
        logits = model(**enc).logits.numpy()
    probe = LogisticRegression(max_iter=2000, C=1.0, random_state=0).fit(pooled, gold)
    assert abs(logits - probe.decision_function(pooled)).max() < 1e-4


def test_head_init_is_validated(nlpexp):
    bad = nlpexp("+smoke=true", "model=bert", "model.head_init=zeros")
    assert bad.code == 2 and "model.head_init must be random or probe" in bad.err


def bert_run(nlpexp, tmp_path, *args) -> dict:
    """metrics.json of a smoke run of model=bert over whole epochs in tmp_path/run."""
    res = nlpexp("+smoke=true", "model=bert", "trainer.max_steps=-1", *args, f"hydra.run.dir={tmp_path}/run")
    assert res.code == 0, res.err[-2000:]
    return json.loads((tmp_path / "run" / "metrics.json").read_text())


def test_weight_average_of_last_epochs_is_kept_only_when_validation_says_so(nlpexp, tmp_path):
    summary = bert_run(nlpexp, tmp_path, "trainer.epochs=3", "trainer.average_last=3")
    avg = summary["weight_average"]
    assert len(avg["checkpoints"]) == 3
    assert avg["used"] == (avg["val_accuracy"] > avg["best_epoch_val_accuracy"])
    assert summary["metrics"]["val_accuracy"] == max(avg["val_accuracy"], avg["best_epoch_val_accuracy"])
    assert not list((tmp_path / "run" / "checkpoints").glob("checkpoint-*"))


def test_soup_trains_each_ingredient_and_saves_one_plain_hf_model(nlpexp, tmp_path):
    from transformers import AutoModelForSequenceClassification

    summary = bert_run(nlpexp, tmp_path, "trainer.epochs=2", "trainer.soup=3")
    soup = summary["soup"]
    assert [i["seed"] for i in soup["ingredients"]] == [summary["seed"] + k for k in range(3)]
    assert summary["metrics"]["val_accuracy"] == soup["val_accuracy"]
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert sorted(history["ingredient"].unique()) == [1, 2, 3] and len(history) == 6
    folder = tmp_path / "run" / "checkpoints"
    assert [p.name for p in folder.iterdir()] == ["best"]
    model = AutoModelForSequenceClassification.from_pretrained(folder / "best")
    assert model.config.num_labels == 3


@pytest.mark.parametrize("args,needle", [
    (["trainer.soup=0"], "trainer.soup must be an integer > 0"),
    (["model=doc2vec", "trainer.soup=2"], "only classifiers trained by the transformers Trainer make soups"),
    (["trainer.soup=2", "trainer.average_last=3"], "use trainer.average_last=0"),
])
def test_soup_settings_are_validated(nlpexp, args, needle):
    bad = nlpexp("+smoke=true", *args)
    assert bad.code == 2 and needle in bad.err


def test_mode_soup_averages_finished_runs_of_one_split(nlpexp, tmp_path):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    common = ("+smoke=true", "model=bert", "data.split_seed=3")
    for seed in (1, 2):
        assert nlpexp(*common, f"seed={seed}", f"hydra.run.dir={tmp_path}/r{seed}").code == 0
    runs = f"ckpt=[{tmp_path}/r1,{tmp_path}/r2]"
    res = nlpexp(*common, "mode=soup", runs, f"hydra.run.dir={tmp_path}/soup")
    assert res.code == 0, res.err[-2000:]
    summary = json.loads((tmp_path / "soup" / "metrics.json").read_text())
    preds = pd.read_csv(tmp_path / "soup" / "predictions.csv")
    assert len(summary["soup"]["ingredients"]) == 2
    assert summary["metrics"]["test_accuracy"] == pytest.approx((preds["predicted"] == preds["gold"]).mean(), abs=1e-6)
    parts = [load_file(str(tmp_path / r / "checkpoints" / "best" / "model.safetensors")) for r in ("r1", "r2")]
    soup = AutoModelForSequenceClassification.from_pretrained(tmp_path / "soup" / "checkpoints" / "best")
    key = "classifier.weight"
    assert torch.allclose(soup.state_dict()[key], (parts[0][key] + parts[1][key]) / 2, atol=1e-6)
    # runs split by their own seeds (no data.split_seed) saw each other's test texts: refused
    for seed in (1, 2):
        assert nlpexp("+smoke=true", "model=bert", f"seed={seed}", f"hydra.run.dir={tmp_path}/s{seed}").code == 0
    bad = nlpexp("+smoke=true", "model=bert", "mode=soup", f"ckpt=[{tmp_path}/s1,{tmp_path}/s2]",
                 f"hydra.run.dir={tmp_path}/bad")
    assert bad.code == 2 and "trained on another split" in bad.err
    assert not (tmp_path / "bad" / "metrics.json").exists()


def test_mode_soup_needs_two_finished_runs(nlpexp, tmp_path):
    bad = nlpexp("+smoke=true", "mode=soup", f"ckpt=[{tmp_path}]")
    assert bad.code == 2 and "mode=soup needs ckpt=[" in bad.err


