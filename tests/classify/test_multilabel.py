"""task.multi_label=true: thresholds per label, the multi-label metrics, the binary cross-entropy head, doc2vec's
one-vs-rest regressions, multilabel.score's outputs and the checks' refusals. Unit tests: no command is run."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from nlpexp.report.metrics import choose_thresholds, multi_hot, multilabel_metrics

pytestmark = pytest.mark.filterwarnings("ignore:Glyph .* missing from font")


def test_multi_hot_marks_each_texts_labels():
    assert multi_hot([(0, 2), (), (1,)], 3).tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]
    assert multi_hot([(0, 2)], 3).dtype == np.float32


def test_thresholds_maximise_each_labels_f1():
    gold = np.array([[1, 0, 0], [1, 0, 0], [0, 0, 1], [0, 0, 1], [1, 0, 0]])
    proba = np.array([[0.9, 0.1, 0.1], [0.4, 0.2, 0.2], [0.35, 0.3, 0.25], [0.1, 0.4, 0.3], [0.3, 0.5, 0.05]])
    # label 0 (by hand): t=0.2 keeps 0.9, 0.4, 0.35, 0.3: tp 3, fp 1, F1 6/7; 0.5 would keep 0.9 only: F1 1/2
    # label 1 has no positive text: 0.5; label 2 splits 0.2 | 0.25 exactly: the midpoint 0.225, F1 1
    assert choose_thresholds(gold, proba) == pytest.approx([0.2, 0.5, 0.225])


def test_no_threshold_on_a_fine_grid_beats_the_chosen_one():
    def f1(gold, predicted):  # 2tp / (2tp + fp + fn), 0 when nothing is predicted or true (sklearn's zero_division=0)
        tp = float((gold * predicted).sum())
        wrong = float((predicted != gold).sum())
        return 2 * tp / (2 * tp + wrong) if tp or wrong else 0.0

    rng = np.random.default_rng(0)
    gold = (rng.random((60, 4)) < 0.3).astype(float)
    proba = np.clip(gold * 0.3 + rng.random((60, 4)) * 0.7, 0, 1)
    chosen = choose_thresholds(gold, proba)
    for j in range(4):
        best = f1(gold[:, j], proba[:, j] >= chosen[j])
        grid = max(f1(gold[:, j], proba[:, j] >= t) for t in np.linspace(0, 1, 1001))
        assert best >= grid - 1e-12


def test_multilabel_metrics_against_hand_counts():
    gold = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]])
    proba = np.array([[0.9, 0.2, 0.7], [0.1, 0.35, 0.2], [0.6, 0.25, 0.85]])
    # at [0.5, 0.3, 0.8] the predictions are {0}, {1}, {0, 2}: label 0 tp 2; label 1 tp 1 fn 1; label 2 fp 1 fn 1
    headline, report = multilabel_metrics(gold, proba, ["a", "b", "c"], np.array([0.5, 0.3, 0.8]))
    assert headline["micro_f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 2))
    assert headline["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert headline["subset_accuracy"] == headline["accuracy"] == pytest.approx(1 / 3)
    assert [report[k]["f1-score"] for k in "abc"] == pytest.approx([1, 2 / 3, 0])
    assert [report[k]["support"] for k in "abc"] == [2, 2, 1]
    assert report["micro avg"]["f1-score"] == pytest.approx(headline["micro_f1"])
    from dataclasses import fields

    from nlpexp.config.schema import HFTrainerLoop

    best_metric = next(f for f in fields(HFTrainerLoop) if f.name == "best_metric")
    assert set(best_metric.metadata["choices"]) <= set(headline)  # every trainer.best_metric choice is reported


def tiny_bert_fc(multi_label: bool):
    from transformers import BertConfig

    from nlpexp.tasks.classify.bert_heads import BertClassifier

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    return BertClassifier(config, "fc", 3, fc_hidden=8, dropout=0.0, multi_label=multi_label).eval()


def test_bert_head_trains_multi_hot_labels_with_binary_cross_entropy():
    model = tiny_bert_fc(multi_label=True)
    ids = torch.randint(1, 50, (4, 7))
    multi_hot_labels = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]], dtype=torch.float32)
    out = model(ids, labels=multi_hot_labels)
    expected = torch.nn.BCEWithLogitsLoss()(out.logits, multi_hot_labels)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    class_ids = torch.tensor([0, 2, 1, 1])
    single = model(ids, labels=class_ids)
    assert single.loss.item() == pytest.approx(torch.nn.functional.cross_entropy(single.logits, class_ids).item())


class IdTokenizer:
    """A word-to-id tokenizer the TorchClassifier can call: what it needs of an HF tokenizer, and no file."""

    def __call__(self, texts, pairs=None, padding=True, return_tensors="pt", **_):
        from transformers import BatchEncoding

        rows = [[2 + sum(map(ord, w)) % 40 for w in t.split()] + ([1] + [2 + len(w) for w in p.split()] if pairs
                                                                 else []) for t, p in zip(texts, pairs or texts)]
        width = max(map(len, rows))
        ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
        return BatchEncoding({"input_ids": ids, "attention_mask": (ids > 0).long()})


def test_a_multi_label_model_scores_a_sigmoid_per_label_and_keeps_it_when_saved(tmp_path):
    from nlpexp.tasks.classify import bert_heads, trainer

    texts = ["sales rose sharply", "profit fell", "the board met on monday", "costs rose and sales fell"]
    model = tiny_bert_fc(multi_label=True)
    clf = trainer.TorchClassifier(IdTokenizer(), model, "cpu", 32)
    proba = clf.predict_proba(texts)
    logits = model(IdTokenizer()(texts)["input_ids"], IdTokenizer()(texts)["attention_mask"]).logits
    assert proba == pytest.approx(torch.sigmoid(logits).detach().numpy(), abs=1e-6)
    assert abs(proba.sum(axis=1) - 1).max() > 1e-3  # independent per label: rows need not sum to 1
    single = trainer.TorchClassifier(IdTokenizer(), tiny_bert_fc(multi_label=False), "cpu", 32)
    assert single.predict_proba(texts).sum(axis=1) == pytest.approx(np.ones(4))
    pairs = clf.predict_proba([(t, "a second text") for t in texts])  # sentence pairs reach the tokenizer as pairs
    assert pairs.shape == (4, 3) and not np.allclose(pairs, proba)
    # saved and loaded: classifier.json and scoring.json say multi-label, and the loaded model scores the same
    model.save_pretrained(tmp_path)
    spec = json.loads((tmp_path / "classifier.json").read_text())
    assert spec["multi_label"] is True
    again = bert_heads.BertClassifier(__import__("transformers").BertConfig.from_dict(spec.pop("bert_config")), **spec)
    from safetensors.torch import load_model

    load_model(again, str(tmp_path / "model.safetensors"))
    loaded = trainer.TorchClassifier(IdTokenizer(), again, "cpu", 32)
    assert loaded.multi_label and loaded.predict_proba(texts) == pytest.approx(proba, abs=1e-6)


def test_train_labels_are_multi_hot_floats_only_for_multi_label():
    from nlpexp.tasks.classify.trainer import train_labels

    frame = pd.DataFrame({"text": ["a", "b"], "label": [(0, 2), ()]})
    assert train_labels(frame, 3, True) == [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    assert train_labels(pd.DataFrame({"text": ["a"], "label": [2]}), 3, False) == [2]


def test_hf_classifier_marked_multi_label_uses_bce_and_saves_problem_type(tmp_path):
    from transformers import AutoConfig, BertConfig, BertForSequenceClassification

    from nlpexp.tasks.classify.trainer import is_multi_label, set_multi_label

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32, num_labels=3)).eval()
    set_multi_label(model)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    out = model(torch.randint(1, 50, (2, 5)), labels=labels)
    assert out.loss.item() == pytest.approx(torch.nn.BCEWithLogitsLoss()(out.logits, labels).item(), rel=1e-6)
    model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).problem_type == "multi_label_classification"
    assert is_multi_label(BertForSequenceClassification.from_pretrained(tmp_path))


def doc2vec_cfg():
    from nlpexp.config.schema import typed
    from nlpexp.config import registry

    node = OmegaConf.create({"name": "doc2vec", "vector_size": 12, "window": 2, "min_count": 1, "epochs": 5, "dm": 0,
                             "dbow_words": 1, "infer_epochs": None, "lowercase": True, "C": 1.0,
                             "class_weight": None, "export_native": False})
    return OmegaConf.structured(typed(node, registry.MODELS["doc2vec"].adapters["classify"].config))


def test_doc2vec_one_vs_rest_saves_and_loads_to_the_same_probabilities(tmp_path):
    from nlpexp.tasks.classify import doc2vec

    labels = ["earnings", "merger", "never", "always"]
    texts = [f"{w} item {i}" for i in range(12) for w in ("profit rose", "firms merged", "profit and merger")]
    gold = [((0, 3), (1, 3), (0, 1, 3))[i % 3] for i in range(len(texts))]  # "never": no text; "always": all
    clf = doc2vec.Doc2VecClassifier(doc2vec_cfg(), labels, 0, multi_label=True).fit(texts, gold)
    proba = clf.predict_proba(texts[:6])
    assert proba.shape == (6, 4)
    assert (proba[:, 2] == 0).all() and (proba[:, 3] == 1).all()  # one class in training: a constant
    assert abs(proba.sum(axis=1) - 1).max() > 1e-3  # a sigmoid per label, not a softmax
    from sklearn.linear_model import LogisticRegression

    features = clf._vectors(texts)  # each label's row: a binary regression of that label alone
    for j in (0, 1):
        alone = LogisticRegression(C=1.0, max_iter=2000).fit(features, [int(j in g) for g in gold])
        assert proba[:, j] == pytest.approx(alone.predict_proba(features[:6])[:, 1], abs=1e-6)
    best = tmp_path / "best"
    clf.save(best)
    assert json.loads((best / "classifier.json").read_text())["multi_label"] is True
    assert not list(best.glob("*.pkl")) and not list(best.glob("*.model"))
    loaded = doc2vec.load(best, "cpu")
    assert loaded.multi_label and np.array_equal(loaded.predict_proba(texts[:6]), proba)


class FixedClassifier:
    """A classifier whose probabilities are given per text."""

    def __init__(self, table: dict):
        self.table = table

    def predict_proba(self, texts):
        return np.array([self.table[t] for t in texts])


def test_score_chooses_thresholds_on_validation_and_writes_the_outputs(tmp_path):
    from nlpexp.tasks.classify import multilabel

    labels = ["up", "down"]
    val = pd.DataFrame({"text": ["v1", "v2", "v3", "v4"], "label": [(0,), (0, 1), (), (1,)], "line": [1, 2, 3, 4]})
    test = pd.DataFrame({"text": ["t1", "t2", "t3"], "label": [(0,), (1,), (0, 1)], "line": [1, 2, 3]})
    table = {"v1": [0.4, 0.1], "v2": [0.45, 0.8], "v3": [0.2, 0.3], "v4": [0.1, 0.9],
             "t1": [0.42, 0.2], "t2": [0.35, 0.7], "t3": [0.9, 0.95]}
    metrics, reports, _ = multilabel.score(FixedClassifier(table), {"validation": val, "test": test}, labels, tmp_path)
    saved = json.loads((tmp_path / "thresholds.json").read_text())
    # up: 0.4 and 0.45 are its positives, 0.2 the highest negative: 0.3; down: 0.8 and 0.9 above 0.3: 0.55
    assert saved == pytest.approx({"up": 0.3, "down": 0.55})
    assert multilabel.load_thresholds(tmp_path, labels) == pytest.approx([0.3, 0.55])
    # test at those: t1 {up} (right), t2 {up, down} (gold {down}: up wrong), t3 {up, down} (right)
    assert metrics["test_subset_accuracy"] == pytest.approx(round(2 / 3, 6))
    assert metrics["test_f1_up"] == pytest.approx(round(2 * 2 / (2 * 2 + 1), 6))
    assert metrics["test_f1_down"] == 1.0 and metrics["val_micro_f1"] == 1.0
    assert {"test_micro_f1", "test_macro_f1", "test_accuracy", "val_subset_accuracy"} <= set(metrics)
    preds = pd.read_csv(tmp_path / "predictions.csv", keep_default_na=False)
    assert list(preds.columns) == ["text", "gold", "predicted", "p_up", "p_down"]
    assert list(preds["gold"]) == ["up", "down", "up,down"] and list(preds["predicted"]) == ["up", "up,down",
                                                                                             "up,down"]
    assert pd.read_csv(tmp_path / "predictions_val.csv", keep_default_na=False)["gold"][2] == ""
    assert (tmp_path / "per_label_f1.png").stat().st_size > 1000
    assert reports["test"]["down"]["support"] == 2
    assert multilabel.predicted_sets(np.array([[0.31, 0.5], [0.1, 0.2]]), labels, [0.3, 0.55]) == [["up"], []]


def test_load_thresholds_refuses_a_run_without_them(tmp_path):
    from nlpexp.errors import UserError
    from nlpexp.tasks.classify.multilabel import load_thresholds

    with pytest.raises(UserError, match="no thresholds.json"):
        load_thresholds(tmp_path)


@pytest.mark.parametrize("args,said", [
    (["model=gpt2"], "task.multi_label=true: model=gpt2 predicts one label per text (multi-label: minilm, bert, "
                     "finbert, bert_chinese, bert_fc, bert_lstm, doc2vec)"),
    (["model=bert", "trainer.soup=2"], "task.multi_label=true: trainer.soup=2 picks its ingredients by single-label"),
    (["model=bert", "trainer.label_smoothing=0.1"], "task.multi_label=true: trainer.label_smoothing=0.1"),
    (["model=finbert", "trainer.epochs=0"], "task.multi_label=true: trainer.epochs=0 (zero-shot)"),
])
def test_multi_label_refusals(args, said):
    from nlpexp.config.validate import compose, config_errors

    given = ["task=finsent", "task.multi_label=true", *args]
    errors = config_errors(compose(given), given)
    assert any(e.startswith(said) for e in errors), errors
    assert not [e for e in config_errors(compose(given[:1] + args), given[:1] + args) if "multi_label" in e]
