"""The tokenized-data cache (nlpexp/tasks/classify/tokenized.py) and mode=prepare, which fills it."""
import json

import pandas as pd
import pytest

from nlpexp.inputs.hub import train_wordpiece
from nlpexp.tasks.classify import tokenized

TEXTS = ["Profits rose sharply this quarter.", "The company cut its forecast.", "Sales were flat.",
         "Shares fell after the warning.", "Revenue beat expectations again."]
LABELS = [2, 0, 1, 0, 2]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLPEXP_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "tokenized"


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece(TEXTS, 120)


def frame(texts=TEXTS, labels=LABELS, **columns):
    return pd.DataFrame({"text": texts, "label": labels, **columns})


def test_encoding_twice_reuses_the_cache(cache, tokenizer, capsys):
    first = tokenized.encode(frame(), tokenizer, 16, LABELS, "train")
    assert "tokenized train: 5 texts in" in capsys.readouterr().out
    second = tokenized.encode(frame(), tokenizer, 16, LABELS, "train")
    said = capsys.readouterr().out
    assert "tokenized train: 5 texts (cached: " in said and "saved" not in said
    assert second["input_ids"] == first["input_ids"] == tokenizer(TEXTS, truncation=True, max_length=16)["input_ids"]
    assert second["label"] == LABELS
    assert len(list(cache.iterdir())) == 1


def test_the_key_follows_the_texts_labels_length_and_tokenizer(tokenizer):
    def key(texts=TEXTS, labels=LABELS, tok=tokenizer, max_length=16, pairs=None):
        return tokenized.content_key(list(texts), pairs, labels, tok, max_length)

    base = key()
    assert key(tok=train_wordpiece(TEXTS, 120)) == base  # the same texts train the same WordPiece
    assert key(texts=[TEXTS[0] + "!", *TEXTS[1:]]) != base
    assert key(texts=["Profits rose sharply this quarter.The company cut its forecast.", "", *TEXTS[2:]]) != base
    assert key(labels=[1, 0, 1, 0, 2]) != base
    assert key(max_length=17) != base
    assert key(tok=train_wordpiece(TEXTS, 60)) != base
    assert key(pairs=TEXTS) != base
    tokenizer(TEXTS, truncation=True, max_length=8)  # a call's truncation state is not the tokenizer
    assert key() == base


def test_pairs_are_tokenized_as_pairs(cache):
    tokenizer = train_wordpiece(TEXTS, 120)
    tokenizer.model_input_names = ["input_ids", "token_type_ids", "attention_mask"]  # as BertTokenizerFast's
    second = list(reversed(TEXTS))
    pairs = tokenized.encode(frame(text_pair=second), tokenizer, 32, LABELS, "train")
    single = tokenized.encode(frame(), tokenizer, 32, LABELS, "train")
    assert pairs["input_ids"] == tokenizer(TEXTS, second, truncation=True, max_length=32)["input_ids"]
    assert all(1 in row for row in pairs["token_type_ids"])
    assert not any(1 in row for row in single["token_type_ids"])


def test_a_damaged_entry_is_built_again(cache, tokenizer, capsys):
    tokenized.encode(frame(), tokenizer, 16, LABELS, "train")
    (arrow,) = list(cache.glob("*/*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])
    capsys.readouterr()
    again = tokenized.encode(frame(), tokenizer, 16, LABELS, "train")
    said = capsys.readouterr().out
    assert "damaged" in said and "saved to cache" in said
    assert again["input_ids"] == tokenizer(TEXTS, truncation=True, max_length=16)["input_ids"]
    tokenized.encode(frame(), tokenizer, 16, LABELS, "train")
    assert "(cached: " in capsys.readouterr().out


def test_prepare_then_train_finds_the_tokenized_splits(nlpexp, cache):
    prepared = nlpexp("mode=prepare", "+smoke=true", "task=finsent", "model=bert_fc")
    assert prepared.code == 0, prepared.err[-3000:]
    assert "tokenized train: 64 texts in" in prepared.out and "(saved to cache)" in prepared.out
    summary = prepared.metrics()
    assert summary["mode"] == "prepare" and summary["prepared"] == {"train": 64, "validation": 32}
    assert not (prepared.run_dirs()[0] / "checkpoints").exists()  # nothing trained
    trained = nlpexp("+smoke=true", "task=finsent", "model=bert_fc")
    assert trained.code == 0, trained.err[-3000:]
    assert "tokenized train: 64 texts (cached: " in trained.out
    assert "tokenized validation: 32 texts (cached: " in trained.out


def test_prepare_refuses_a_model_that_reads_raw_text(nlpexp, cache):
    res = nlpexp("mode=prepare", "+smoke=true", "task=finsent", "model=doc2vec")
    assert res.code != 0 and "model=doc2vec reads raw text" in res.err
    assert len(res.err.strip().splitlines()) == 1
    assert not cache.exists()


def test_prepare_reads_only_max_length_of_the_trainer(nlpexp, cache):
    res = nlpexp("mode=prepare", "+smoke=true", "task=finsent", "model=bert_fc", "trainer.epochs=3")
    assert res.code != 0 and "trainer.epochs is not read" in res.err and "trainer.max_length" in res.err
    ok = nlpexp("mode=prepare", "+smoke=true", "task=finsent", "model=bert_fc", "trainer.max_length=16")
    assert ok.code == 0, ok.err[-3000:]
    assert json.loads((ok.run_dirs()[-1] / "metrics.json").read_text())["prepared"]["train"] == 64
