"""task=classify on the user's own data: columns detected only when one answer is possible, labels taken from the
training data in a recorded order, integer ids named, sentence pairs kept apart for pair-aware tokenizers, Parquet
and hub datasets with their own split names, and every classifier on the embedded sample."""
import json
import re

import pandas as pd
import pytest
from omegaconf import OmegaConf

from nlpexp.config import registry
from nlpexp.errors import UserError
from nlpexp.report import stats
from nlpexp.inputs.readers import pick_columns, read_labelled_file, resource_path
from nlpexp.tasks.classify.data import labelled_splits


def data_cfg(path=None, **keys):
    base = {"source": "file" if path else "embedded", "path": str(path) if path else None, "embedded": None,
            "format": "auto", "text_column": None, "label_column": None, "text_pair_column": None,
            "label_separator": ",", "split": [0.5, 0.25, 0.25], "other_labels": "error"}
    return OmegaConf.create({**base, **keys})


def frame(**columns):
    return pd.DataFrame(columns)


TEXTS = [f"review number {i} says the thing was {'good' if i % 2 else 'bad'} overall" for i in range(12)]


# -- columns ----------------------------------------------------------------------------------------------------
def test_columns_are_detected_by_their_values_when_only_one_answer_is_possible():
    table = frame(id=[f"r{i}" for i in range(12)], comment=TEXTS, verdict=["pos", "neg"] * 6)
    assert pick_columns(table) == ("comment", None, "verdict")
    assert pick_columns(frame(premise=TEXTS, hypothesis=TEXTS[::-1], gold=["a", "b"] * 6)) == \
        ("premise", "hypothesis", "gold")
    assert pick_columns(table, text_column="id") == ("id", None, "verdict")  # a given name wins


@pytest.mark.parametrize("table,needle", [
    (frame(a=TEXTS, b=TEXTS[::-1], verdict=["x", "y"] * 6), "cannot tell which column is the text (b, a all could "
                                                            "be; columns: a, b, verdict); set data.text_column"),
    (frame(comment=TEXTS, stars=["1", "2"] * 6, tag=["u", "v"] * 6), "cannot tell which column is the label "
                                                                    "(stars, tag all could be"),
    (frame(comment=TEXTS, score=[str(i) for i in range(12)]), "cannot tell which column is the label (no column "
                                                              "looks like labels; columns: comment, score)"),
])
def test_ambiguous_columns_are_refused_in_one_line_listing_them(table, needle):
    with pytest.raises(UserError) as err:
        pick_columns(table, path="x.csv")
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_the_embedded_samples_read_with_non_standard_column_names():
    reviews = read_labelled_file(resource_path("reviews.csv"))
    assert reviews.attrs["columns"] == {"text": "comment", "text_pair": None, "label": "verdict"}
    tags = read_labelled_file(resource_path("tags.jsonl"))
    assert tags.attrs["columns"]["label"] == "topics" and all(isinstance(v, list) for v in tags["label"])
    pairs = read_labelled_file(resource_path("pairs.csv"))
    assert list(pairs.columns) == ["text", "text_pair", "label", "line"]


# -- labels -----------------------------------------------------------------------------------------------------
def write(path, rows, header="text,label"):
    path.write_text(header + "\n" + "".join(f"{t},{y}\n" for t, y in rows), encoding="utf-8")
    return path


def test_labels_come_from_the_training_data_sorted_and_integers_numerically(tmp_path):
    rows = [(f"text {i} {y}", y) for i in range(6) for y in ("Spam", "ham", "eggs")]
    frames, info, labels = labelled_splits(data_cfg(write(tmp_path / "a.csv", rows)), None, seed=0)
    assert labels == ["Spam", "eggs", "ham"]  # sorted, case kept
    assert info["columns"] == {"text": "text", "text_pair": None, "label": "label"}
    rows = [(f"text {i} {y}", y) for i in range(6) for y in (10, 9, 2)]
    assert labelled_splits(data_cfg(write(tmp_path / "b.csv", rows)), None, seed=0)[2] == ["2", "9", "10"]
    named = data_cfg(write(tmp_path / "c.csv", [(f"t {i} {y}", y) for i in range(6) for y in (0, 1)]),
                     label_names=["neg", "pos"])
    frames, _, labels = labelled_splits(named, None, seed=0)
    assert labels == ["neg", "pos"] and all(("t" in t) for t in frames["test"]["text"])
    gold = {t.split()[-1]: y for frame_ in frames.values() for t, y in zip(frame_["text"], frame_["label"])}
    assert gold == {"0": 0, "1": 1}


def test_a_list_label_needs_multi_label_and_multi_label_reads_lists_and_joined_strings(tmp_path):
    rows = [{"text": f"text {i}", "tags": ["b", "a"] if i % 2 else ["c"]} for i in range(16)]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(UserError, match=r"m.jsonl line 1: the label is a list \(\['c'\]\): several labels per text "
                                        "need task.multi_label=true"):
        labelled_splits(data_cfg(path), None, seed=0)
    frames, _, labels = labelled_splits(data_cfg(path), None, seed=0, multi_label=True)
    assert labels == ["a", "b", "c"]
    assert {y for f in frames.values() for y in f["label"]} == {(0, 1), (2,)}
    joined = write(tmp_path / "m.csv", [(f"text {i}", '"b,a"' if i % 2 else "c") for i in range(16)])
    assert labelled_splits(data_cfg(joined), None, seed=0, multi_label=True)[2] == ["a", "b", "c"]


def test_parquet_reads_like_csv_and_a_fake_one_is_refused(tmp_path):
    path = tmp_path / "d.parquet"
    frame(body=TEXTS, stars=[1, 5] * 6).to_parquet(path)
    frames, info, labels = labelled_splits(data_cfg(path), None, seed=0)
    assert labels == ["1", "5"] and info["columns"]["text"] == "body"
    (tmp_path / "fake.parquet").write_text("text,label\na,b\n")
    from nlpexp.config.schema import data_errors

    assert data_errors(data_cfg(tmp_path / "fake.parquet")) == [f"{tmp_path / 'fake.parquet'} is not a Parquet file "
                                                                "(no PAR1 marks)"]


def test_a_hub_dataset_with_its_config_and_own_split_names(monkeypatch):
    import datasets

    feats = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                               "gold": datasets.ClassLabel(names=["yes", "no"])})
    rows = {split: {"premise": [f"{split} p{i}" for i in range(8)], "hypothesis": [f"h{i}" for i in range(8)],
                    "gold": [i % 2 for i in range(8)]} for split in ("train", "dev", "test")}
    built = datasets.DatasetDict({k: datasets.Dataset.from_dict(v, features=feats) for k, v in rows.items()})
    asked = {}
    monkeypatch.setattr(datasets, "load_dataset", lambda hub_id, name=None, **k: asked.update(name=name) or built)
    cfg = data_cfg(source="hub", hub_id="someone/nli", hub_config="pairs", hub_splits={"validation": "dev"})
    frames, info, labels = labelled_splits(cfg, None, seed=0)
    assert asked["name"] == "pairs" and labels == ["no", "yes"]  # ClassLabel names, sorted
    assert frames["validation"]["text"].str.startswith("dev").all() and len(frames["test"]) == 8
    assert info["columns"] == {"text": "premise", "text_pair": "hypothesis", "label": "gold"}
    with pytest.raises(UserError, match=r"data.hub_splits names validation=valid, but its splits are train, dev, test"):
        labelled_splits(data_cfg(source="hub", hub_id="someone/nli", hub_splits={"validation": "valid"}), None, 0)


# -- runs -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", registry.TASKS["classify"].models)
def test_every_classifier_runs_on_the_embedded_sample(nlpexp, model):
    res = nlpexp("+smoke=true", "task=classify", f"model={model}")
    assert res.code == 0, res.err[-3000:]
    (run,) = res.run_dirs()
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "complete" and summary["columns"]["label"] == "verdict"
    assert json.loads((run / "labels.json").read_text()) == ["neg", "pos"]
    preds = pd.read_csv(run / "predictions.csv", dtype=str, keep_default_na=False)
    assert set(preds["gold"]) == {"neg", "pos"} and {"p_neg", "p_pos"} <= set(preds.columns)
    # every headline test metric with its bootstrap interval, and the items saved for a paired comparison
    ci, metrics = summary["intervals"], summary["metrics"]
    for name in ("accuracy", "macro_f1", "weighted_precision", "weighted_recall"):
        lo, hi = ci[f"test_{name}_ci"]
        assert lo <= metrics[f"test_{name}"] <= hi and hi - lo > 0.01
    items, blocks = stats.load(run)
    assert items == summary["test_items_sha256"] == stats.items_hash(preds["text"], preds["gold"])
    assert stats.point(blocks)["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert re.search(r"\naccuracy +\d\.\d{4} +\d\.\d{4} \[\d\.\d{3}, \d\.\d{3}\]\n", res.out)  # the end table


@pytest.mark.parametrize("model", ["bert_fc", "doc2vec"])
def test_sentence_pairs_train_and_predict_from_the_columns_the_run_read(nlpexp, tmp_path, model):
    run = tmp_path / "run"
    res = nlpexp("+smoke=true", "task=classify", f"model={model}", "data.embedded=pairs.csv", f"hydra.run.dir={run}")
    assert res.code == 0, res.err[-3000:]
    preds = pd.read_csv(run / "predictions.csv")
    assert list(preds.columns[:4]) == (["text", "text_pair", "gold", "predicted"] if model == "bert_fc" else
                                       ["text", "gold", "predicted", "p_contradiction"])  # joined for doc2vec
    table = tmp_path / "in.csv"
    pd.DataFrame({"id": [1, 2], "premise": ["A cat sleeps.", "A cat runs."], "hypothesis": ["It rests."] * 2}
                 ).to_csv(table, index=False)
    res = nlpexp("mode=predict", f"ckpt={run}", f"input={table}", f"output={tmp_path / 'out.csv'}")
    assert res.code == 0, res.err[-2000:]
    out = pd.read_csv(tmp_path / "out.csv")
    assert list(out.columns) == ["text", "text_pair", "predicted", "p_contradiction", "p_entailment"]
    assert out["p_contradiction"].add(out["p_entailment"]).round(4).eq(1).all()


def test_pair_aware_tokenizers_get_the_two_texts_as_a_pair():
    from nlpexp.inputs.hub import train_wordpiece
    from nlpexp.tasks.classify.recipe import inputs, model_view

    pairs = read_labelled_file(resource_path("pairs.csv")).head(4)
    assert "text_pair" in model_view(pairs, "bert_fc") and "text_pair" not in model_view(pairs, "doc2vec")
    assert model_view(pairs, "gpt2_prompt")["text"].iloc[0] == pairs["text"].iloc[0] + " [SEP] " + \
        pairs["text_pair"].iloc[0]
    tok = train_wordpiece(list(pairs["text"]) + list(pairs["text_pair"]), 200)
    enc = tok(inputs(model_view(pairs, "bert_fc")), truncation=True)
    for ids, a, b in zip(enc["input_ids"], pairs["text"], pairs["text_pair"]):  # [CLS] a [SEP] b [SEP]
        assert ids == tok(a)["input_ids"] + tok(b)["input_ids"][1:]


def test_predict_names_its_text_column_and_writes_one_probability_column_per_label(nlpexp, tmp_path):
    run = tmp_path / "run"
    assert nlpexp("+smoke=true", "task=classify", "model=doc2vec", f"hydra.run.dir={run}").code == 0
    table = tmp_path / "new.tsv"
    table.write_text("id\tbody\n1\tThe lamp broke at once.\n2\tLovely sofa, great value.\n")
    res = nlpexp("mode=predict", f"ckpt={run}", f"input={table}", "data.text_column=body",
                 f"output={tmp_path / 'p.csv'}")
    assert res.code == 0, res.err[-2000:]
    out = pd.read_csv(tmp_path / "p.csv")
    assert list(out.columns) == ["text", "predicted", "p_neg", "p_pos"] and len(out) == 2
    res = nlpexp("mode=predict", f"ckpt={run}", f"input={table}", "data.text_column=title")
    assert res.code == 2 and "no column 'title' (columns: id, body)" in res.err


@pytest.mark.parametrize("model", ["bert_fc", "bert_lstm", "bert", "doc2vec"])  # bert: hf.py, built small
def test_multi_label_trains_scores_evaluates_and_predicts_label_sets(nlpexp, tmp_path, model):
    run = tmp_path / "run"
    res = nlpexp("+smoke=true", "task=classify", f"model={model}", "task.multi_label=true", "data.embedded=tags.jsonl",
                 f"hydra.run.dir={run}")
    assert res.code == 0, res.err[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    labels = ["battery", "price", "screen", "shipping"]
    assert {"test_micro_f1", "test_macro_f1", "test_subset_accuracy", *(f"test_f1_{n}" for n in labels)} <= set(metrics)
    assert list(json.loads((run / "thresholds.json").read_text())) == labels
    preds = pd.read_csv(run / "predictions.csv", keep_default_na=False)
    assert all(set(g.split(",")) <= set(labels) for g in preds["gold"]) and (run / "per_label_f1.png").is_file()
    res = nlpexp("mode=eval", f"ckpt={run}")
    assert res.code == 0, res.err[-2000:]
    evaluated = json.loads(sorted((run / "eval").glob("*/metrics.json"))[-1].read_text())["metrics"]
    assert evaluated["test_micro_f1"] == metrics["test_micro_f1"]
    lo, hi = json.loads((run / "metrics.json").read_text())["intervals"]["test_micro_f1_ci"]
    assert lo <= metrics["test_micro_f1"] <= hi
    table = tmp_path / "in.jsonl"
    table.write_text('{"review": "The battery drains fast."}\n'
                     '{"review": "It is overpriced, and the screen is sharp."}\n')
    res = nlpexp("mode=predict", f"ckpt={run}", f"input={table}", f"output={tmp_path / 'out.csv'}")
    assert res.code == 0, res.err[-2000:]
    out = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert list(out.columns) == ["text", "predicted", *(f"p_{n}" for n in labels)]
    assert all(set(p.split(",")) <= set(labels) | {""} for p in out["predicted"])


def test_multi_label_is_refused_in_one_line_by_single_label_models(nlpexp):
    res = nlpexp("+smoke=true", "task=classify", "model=gpt2_prompt", "task.multi_label=true",
                 "data.embedded=tags.jsonl")
    assert res.code == 2 and "task.multi_label=true: model=gpt2_prompt predicts one label per text" in res.err
    assert len(res.err.strip().splitlines()) == 1


def test_a_semicolon_table_named_txt_is_a_table_and_phrasebank_lines_stay_phrasebank(tmp_path):
    table = tmp_path / "train.txt"
    table.write_text("text;label_name\n" + "".join(f"text {i}, with a comma;{'ab'[i % 2]}\n" for i in range(12)))
    frame_ = read_labelled_file(table)
    assert frame_.attrs["columns"] == {"text": "text", "text_pair": None, "label": "label_name"}
    assert frame_["text"].iloc[0] == "text 0, with a comma" and set(frame_["label"]) == {"a", "b"}
    bank = tmp_path / "bank.txt"
    bank.write_text("Sales rose , the company said .@positive\nCosts fell; margins held .@neutral\n")
    assert read_labelled_file(bank)["label"].tolist() == ["positive", "neutral"]


@pytest.mark.parametrize("content,needle", [
    ("text,label\nfine hotel,pos\nbad room,\n", "x.csv line 3: no label (1 rows have none)"),
    ('{"text": "fine hotel", "label": "pos"}\n{"text": "bad room", "label": null}\n', "x.jsonl line 2: no label"),
    ("text\nfine hotel\n", "cannot tell which column is the label (no column looks like labels; columns: text)"),
    ("text,label\nfine hotel,pos\nbad room,pos\n", "x.csv: the data has a single label, 'pos'; a classifier needs"),
])
def test_malformed_tables_are_refused_in_one_line(tmp_path, content, needle):
    path = tmp_path / ("x.jsonl" if content.startswith("{") else "x.csv")
    path.write_text(content)
    with pytest.raises(UserError) as err:
        labelled_splits(data_cfg(path, split=[0.34, 0.33, 0.33]), None, seed=0)
    assert needle in str(err.value) and "\n" not in str(err.value)
