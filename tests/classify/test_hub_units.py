"""The classify wing's pieces of the hub path that need no cache: a pretrained head kept by label name, hub
datasets with fewer splits. (`model=<folder>`: tests/core/test_model_folders.py; story texts split into sentences:
tests/story/test_story.py.)"""

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from nlpexp.errors import UserError
from nlpexp.tasks.classify.head_map import fit_head, match_labels


def tiny_bert_classifier(labels):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=len(labels), id2label=dict(enumerate(labels)),
                        label2id={name: i for i, name in enumerate(labels)})
    return BertForSequenceClassification(config).eval()


def test_match_labels_by_name_case_insensitive_after_the_label_map():
    assert match_labels(["Positive", "NEGATIVE", "neutral"], ["negative", "neutral", "positive"], {}) == \
        {"positive": 0, "negative": 1, "neutral": 2}
    assert match_labels(["happy", "sad", "LABEL_2"], ["joy", "sadness", "anger"], {"happy": "joy", "Sad": "sadness"}) \
        == {"joy": 0, "sadness": 1}


def test_fit_head_reorders_rows_and_starts_unknown_labels_fresh():
    model = tiny_bert_classifier(["positive", "negative", "neutral"])
    old_w, old_b = model.classifier.weight.detach().clone(), model.classifier.bias.detach().clone()
    info = fit_head(model, ["negative", "neutral", "positive", "mixed"], {}, "fixture")
    assert info == {"from": "fixture", "mapped": {"negative": "negative", "neutral": "neutral",
                                                  "positive": "positive"}, "new": ["mixed"]}
    w, b = model.classifier.weight, model.classifier.bias
    assert w.shape == (4, 16) and model.num_labels == model.config.num_labels == 4
    for task_row, head_row in ((0, 1), (1, 2), (2, 0)):
        assert torch.equal(w[task_row], old_w[head_row]) and b[task_row] == old_b[head_row]
    assert b[3] == 0 and model.config.id2label == {0: "negative", 1: "neutral", 2: "positive", 3: "mixed"}
    enc = {"input_ids": torch.tensor([[2, 5, 7, 3]]), "labels": torch.tensor([3])}
    out = model(**enc)  # the forward uses the new label count (its loss too)
    assert out.logits.shape == (1, 4) and torch.isfinite(out.loss)


def test_fit_head_on_gpt2_score_layer_without_bias():
    from transformers import GPT2Config, GPT2ForSequenceClassification

    model = GPT2ForSequenceClassification(GPT2Config(vocab_size=40, n_positions=16, n_embd=16, n_layer=1, n_head=2,
                                                     pad_token_id=0))
    info = fit_head(model, ["a", "b", "c"], {}, "gpt2")
    assert info["new"] == ["a", "b", "c"] and model.score.out_features == 3 and model.score.bias is None


def test_hub_dataset_with_one_split_or_two_is_split_seeded(monkeypatch):
    from nlpexp.tasks.classify import data as classify_data

    texts = [f"text number {i}" for i in range(100)]
    labels = ["negative", "neutral", "positive"]
    rows = pd.DataFrame({"text": texts, "label": [labels[i % 3] for i in range(100)], "line": range(1, 101)})
    cfg = OmegaConf.create({"source": "hub", "hub_id": "x/y", "path": None, "split": [0.6, 0.2, 0.2],
                            "label_map": {}, "max_train_samples": None, "max_eval_samples": None})
    for given, sizes in (({"train": rows}, (60, 20, 20)),
                         ({"train": rows.iloc[:80], "test": rows.iloc[80:]}, (60, 20, 20))):
        monkeypatch.setattr(classify_data, "load_hub", lambda hub_id, data, given=given: dict(given))
        splits = classify_data.load_splits(cfg, labels, seed=3)
        assert tuple(len(splits[s]) for s in ("train", "validation", "test")) == sizes
        assert not set(splits["train"]["text"]) & set(splits["test"]["text"])
        again = classify_data.load_splits(cfg, labels, seed=3)
        assert list(again["validation"]["text"]) == list(splits["validation"]["text"])  # seeded
    monkeypatch.setattr(classify_data, "load_hub", lambda hub_id, data: {"validation": rows})
    with pytest.raises(UserError, match="needs a train split"):
        classify_data.load_splits(cfg, labels, seed=3)
