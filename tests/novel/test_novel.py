"""task=novel: clean-up, vocabulary, windows and split, the BERT+LSTM model's state, metrics, smoke runs of every
novel cell and the checkpoint round trip. The decoding controls are in tests/core/test_decoding_window.py, the
shared Transformer blocks in tests/core/test_transformer_blocks.py."""
import json
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from nlpexp.config import registry
from nlpexp.tasks.novel.data import (
    SPECIAL_TOKENS,
    CharVocab,
    clean_text,
    gather_windows,
    load_novel,
    split_by_position,
)
from nlpexp.report.metrics import distinct_n, kneser_ney_nll, kneser_ney_nlls, repetition_rate, text_repetition

NOVEL_DATA = OmegaConf.load(registry.__file__.replace("config/registry.py", "tasks/novel/conf/task/novel.yaml")).data


# -- clean-up ---------------------------------------------------------------------------------------------
def test_clean_text_strips_markup_normalises_and_drops_headings():
    raw = ("第一回：山村少年\r\n<p>话说东南有一座山,名唤青石岭!</p><p>  </p>\r\n\r\n"
           "第二天一早，小川（十三岁）出门?\n　　ＡＢＣ１２ 两个 空格")
    text = clean_text(raw, drop_headings=True)
    assert "<" not in text and ">" not in text
    assert text.split("\n") == ["话说东南有一座山，名唤青石岭！", "第二天一早，小川（十三岁）出门？", "ABC12 两个 空格"]
    kept = clean_text(raw, drop_headings=False)
    assert kept.startswith("第一回：山村少年\n")
    assert "," in clean_text("a,b", punctuation="half") and clean_text("a，b", punctuation="none") == "a，b"


# -- vocabulary -------------------------------------------------------------------------------------------
def test_char_vocab_specials_order_unknowns_and_round_trip(tmp_path):
    vocab = CharVocab.from_text("天地天人天地")
    assert vocab.tokens[: len(SPECIAL_TOKENS)] == SPECIAL_TOKENS
    assert vocab.tokens[len(SPECIAL_TOKENS):] == ["天", "地", "人"]  # by frequency, ties by first appearance
    ids = vocab.encode("天人鬼")
    assert ids[-1] == vocab.unk_id and vocab.decode(ids) == "天人"
    assert vocab.decode([vocab.cls_id, *vocab.encode("地")]) == "地"
    assert CharVocab.from_text("天地天人天地", min_freq=2).tokens[len(SPECIAL_TOKENS):] == ["天", "地"]
    vocab.save(tmp_path)
    assert CharVocab.load(tmp_path).tokens == vocab.tokens


# -- windows and the split by position --------------------------------------------------------------------
def test_windows_stay_inside_their_split_and_targets_shift_by_one():
    data_cfg = NOVEL_DATA.copy()
    data = load_novel(data_cfg, 32, lambda text: CharVocab.from_text(text))
    (_, tr_hi), (va_lo, va_hi), (te_lo, te_hi) = data["bounds"]
    assert tr_hi == va_lo and va_hi == te_lo and te_hi == len(data["ids"])  # consecutive parts, in text order
    for name, (lo, hi) in zip(("train", "validation", "test"), data["bounds"]):
        s = data["starts"][name]
        assert len(s) and s.min() >= lo and (s + 32).max() < hi  # the target s+32 lies inside the part too
    train_cover = set((data["starts"]["train"][:, None] + torch.arange(33)).flatten().tolist())
    held_out = set(range(va_lo, te_hi))
    assert not train_cover & held_out
    x, y = gather_windows(data["ids"], data["starts"]["test"][:3], 32)
    assert x.shape == y.shape == (3, 32) and torch.equal(x[:, 1:], y[:, :-1])
    # the vocabulary comes from the training part only
    train_chars = set(data["text"][: len(data["text"]) * 9 // 10 + 1])
    assert set(data["codec"].tokens[len(SPECIAL_TOKENS):]) <= train_chars


def test_split_by_position_and_stride():
    assert split_by_position(100, [0.8, 0.1, 0.1]) == [(0, 80), (80, 90), (90, 100)]
    data_cfg = NOVEL_DATA.copy()
    data_cfg.stride = 8
    data = load_novel(data_cfg, 16, lambda text: CharVocab.from_text(text))
    assert set(torch.diff(data["starts"]["train"]).tolist()) == {8}
    assert set(torch.diff(data["starts"]["test"]).tolist()) == {1}


# -- the BERT+LSTM model ----------------------------------------------------------------------------------
def test_bert_lstm_keeps_its_state_and_matches_rereading_on_the_first_step():
    from nlpexp.tasks.novel import bert

    vocab = CharVocab.from_text("天地玄黄宇宙洪荒日月盈昃辰宿列张寒来暑往秋收冬藏")
    from nlpexp.config.schema import typed
    from nlpexp.tasks.novel.config import NextCharBertLSTM

    cfg = OmegaConf.create({"name": "bert_lstm", "pretrained": None, "hidden_size": 16, "num_layers": 2,
                            "dropout": 0.1, "small": {"hidden_size": 16, "num_hidden_layers": 1,
                                                      "num_attention_heads": 2, "intermediate_size": 32}})
    torch.manual_seed(0)
    model = bert.build(typed(cfg, NextCharBertLSTM), vocab, 8).eval()
    prompt = torch.tensor([vocab.encode("天地玄黄宇宙洪荒")] * 2)
    with torch.no_grad():
        first, state = model.start(prompt, stateful=True)
        assert torch.allclose(first, model(prompt), atol=1e-5)
        assert len(state) == 3 and state[1].shape == (2, 2, 16)  # (batch, layers, hidden): beams index dim 0
        logits, state = model.advance(state, torch.tensor([vocab.encode("日")[0]] * 2))
        assert logits.shape == (2, len(vocab)) and state[0].shape == (2, 8)


# -- metrics ----------------------------------------------------------------------------------------------
def test_distinct_and_repetition():
    assert distinct_n(["abab"], 1) == 0.5 and distinct_n(["abab"], 2) == 2 / 3
    assert repetition_rate(["abcd"], 2) == 0.0 and repetition_rate(["abab"], 2) == pytest.approx(1 / 3)
    assert text_repetition("abab", 2) == pytest.approx(1 / 3) and text_repetition("a", 2) is None
    assert repetition_rate(["abab", "a"], 2) == pytest.approx(1 / 3)  # a text without a bigram is left out


def test_kneser_ney_by_hand_and_a_distribution_for_every_context():
    train, d, V = [0, 1, 0, 1, 0, 2], 0.5, 3
    # bigrams 0 1 (x2), 1 0 (x2), 0 2: each token follows one distinct token, 3 distinct bigrams
    unigram = (1 - d) / 3 + d * 3 / 3 / V
    p = (2 - d) / 3 + d * 2 / 3 * unigram  # after 0: c(0 1) = 2 of 3, two types follow 0
    assert kneser_ney_nll(train, [[0]], [1], V, 2, d) == pytest.approx(-math.log(p))
    assert kneser_ney_nll(train, [[2]], [1], V, 2, d) == pytest.approx(-math.log(unigram))  # 2 never a context
    rng = np.random.default_rng(0)
    train, V = rng.integers(0, 6, size=300), 7  # token 6 never occurs: still > 0
    for order in (2, 3):
        for history in ([2, 3], [5, 5], [6, 6]):
            total = sum(math.exp(-kneser_ney_nll(train, [history], [w], V, order, 0.75)) for w in range(V))
            assert total == pytest.approx(1.0)
    rows = np.stack([train[i:i + 2] for i in range(len(train) - 2)])  # the trigram fits its own text better
    assert kneser_ney_nll(train, rows, train[2:], V, 3, 0.75) < kneser_ney_nll(train, rows, train[2:], V, 2, 0.75)
    each = kneser_ney_nlls(train, rows, train[2:], V, 3, 0.75)  # per target; the mean is the old number exactly
    assert each.shape == (len(rows),) and float(each.mean()) == kneser_ney_nll(train, rows, train[2:], V, 3, 0.75)


# -- runs through the CLI ---------------------------------------------------------------------------------
@pytest.mark.parametrize("model", registry.TASKS["novel"].models)
def test_every_novel_cell_runs_in_smoke_form(nlpexp, model):
    res = nlpexp("+smoke=true", "task=novel", f"model={model}")
    assert res.code == 0, res.err[-3000:]
    (run,) = res.run_dirs()
    for name in ("metrics.json", "history.csv", "samples.jsonl", "checkpoints/best/model.safetensors",
                 "checkpoints/best/model.json", "checkpoints/best/vocab.json"):
        assert (run / name).exists(), name
    summary = json.loads((run / "metrics.json").read_text())
    m = summary["metrics"]
    assert summary["status"] == "complete"
    correct = m["test_accuracy"] * summary["windows"]["test"]  # a share of the test windows' next tokens
    assert correct == pytest.approx(round(correct), abs=1e-3)
    assert m["test_perplexity"] > 1 and m["test_bigram_perplexity"] > 1 and m["test_trigram_perplexity"] > 1
    assert summary["verdict"].startswith("test perplexity") and "Kneser-Ney" in summary["verdict"]
    # the test windows' per-item statistics (test_items.json) give the same numbers
    from nlpexp.report import stats

    digest, blocks = stats.load(run)
    assert len(digest) == 64 and "items" not in summary and {b.n() for b in blocks} == {summary["windows"]["test"]}
    point = stats.point(blocks)
    assert set(point) == {"test_perplexity", "test_loss", "test_accuracy", "test_bigram_perplexity",
                          "test_trigram_perplexity"}
    for key, value in point.items():
        assert m[key] == pytest.approx(value, rel=1e-5, abs=1e-5), key
    assert m["gen_banned_tokens"] == m["gen_repeat_violations"] == 0
    assert m["beam_banned_tokens"] == m["beam_repeat_violations"] == 0
    rows = [json.loads(line) for line in (run / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["strategy"] for r in rows} == {"sample", "beam"} and all(len(r["continuation"]) == 40 for r in rows)
    assert not any(t in r["continuation"] for r in rows for t in SPECIAL_TOKENS)


def test_saved_run_generates_the_same_text_after_reload(nlpexp, tmp_path):
    assert nlpexp("+smoke=true", "task=novel", "model=bert_lstm", f"hydra.run.dir={tmp_path}/run").code == 0
    args = ("mode=generate", f"ckpt={tmp_path}/run", "prompt=小川背着竹篓", "length=50",  # task, model from the run
            "generate.num_samples=3", "seed=7")
    first, second = nlpexp(*args), nlpexp(*args)
    assert first.code == 0, first.err[-2000:]
    lines = [line for line in first.out.splitlines() if line.startswith("[")]
    assert len(lines) == 3 and lines == [line for line in second.out.splitlines() if line.startswith("[")]
    saved = min((tmp_path / "run" / "generate").glob("*/samples.jsonl"))
    texts = [json.loads(line)["continuation"] for line in saved.read_text(encoding="utf-8").splitlines()]
    assert all(len(t) == 50 and not any(s in t for s in SPECIAL_TOKENS) for t in texts)
    beam = nlpexp(*args, "generate.strategy=beam")
    assert beam.code == 0 and [line for line in beam.out.splitlines() if line.startswith("[")] != lines


def test_novel_bad_input_is_one_line(nlpexp, tmp_path):
    res = nlpexp("task=novel", "model=doc2vec")
    assert res.code == 2 and "supported models for novel" in res.err
    res = nlpexp("task=novel", "model=bert_lstm", "mode=generate", f"ckpt={tmp_path}")
    assert res.code == 2 and "prompt" in res.err and "Traceback" not in res.err
    res = nlpexp("task=novel", "model=bert_fc", "generate.top_p=1.5", "generate.strategy=nucleus")
    assert res.code == 2 and "top_p" in res.err and "strategy" in res.err
    for old in ("generate.beam_size=3", "+generate.beam_size=3"):  # renamed: the refusal names the new key
        res = nlpexp("task=novel", "model=bert_fc", old)
        assert res.code == 2 and res.err.count("\n") == 1 and "use generate.num_beams" in res.err, res.err
    res = nlpexp("task=novel", "model=gpt2", f"data.path={tmp_path}/missing.txt")
    assert res.code == 2 and "not found" in res.err
