"""nlpexp.training.decoding: one generate for every model, its controls LogitsProcessors. On one tiny GPT-2,
our generate (driving the model through StoryGPT2's start/advance over transformers' key/value cache) and
transformers' own generate under the same processor list write the same tokens; and each control does what
it says, on both paths."""
from types import SimpleNamespace

import pytest
import torch

from nlpexp.training import decoding
from nlpexp.tasks.story.gpt2 import StoryGPT2

VOCAB, EOS, ENDS = 48, 1, [2, 3, 4]  # ENDS: the 'sentence-ending' ids
WORDS = [i for i in range(VOCAB) if i not in ENDS + [EOS]]
# every control on, and nothing that can end a row early (eos banned), so both paths run to the same length
CONTROLS = {"repetition_penalty": 1.3, "no_repeat_ngram_size": 3, "repeat_window": 4}
BANNED = [0, EOS]


@pytest.fixture(scope="module")
def gpt2():
    """A seeded 2-layer GPT-2 with wide weights (peaked, tie-free logits), behind story's adapter."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=2, initializer_range=0.3,
                        bos_token_id=EOS, eos_token_id=EOS, pad_token_id=EOS)
    return StoryGPT2(GPT2LMHeadModel(config).eval(), SimpleNamespace(eos_token_id=EOS))


PROMPTS = torch.randint(5, VOCAB, (3, 6), generator=torch.Generator().manual_seed(1))


def ours(model, n=24, **kwargs):
    with torch.no_grad():
        return decoding.generate(model, PROMPTS, n, eos_id=EOS, pad_id=EOS, **kwargs)


def theirs(model, n=24, **kwargs):
    return decoding.hf_generate(model.lm, PROMPTS.tolist(), n, pad_id=EOS, eos_id=EOS, **kwargs)


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_our_generate_and_transformers_generate_write_the_same_tokens(gpt2, strategy):
    kwargs = dict(strategy=strategy, num_beams=3, banned_ids=BANNED, sentence_ids=ENDS, words=WORDS, **CONTROLS)
    mine, hf = ours(gpt2, **kwargs), theirs(gpt2, **kwargs)
    assert all(len(row) == 24 for row in mine)
    assert mine == hf
    # the controls changed the text: the agreement covers them, not just the bare model
    assert mine != ours(gpt2, strategy=strategy, num_beams=3, banned_ids=BANNED)


def test_stop_rules_agree_too(gpt2):
    """Greedy with end-of-text and max_sentences live: rows of different lengths, the same on both paths."""
    free = ours(gpt2, strategy="greedy")
    eos = max(set(free[0]), key=free[0].count)  # a token the model does write
    kwargs = dict(strategy="greedy", sentence_ids=[t for t in set(free[1]) if t != eos][:3], max_sentences=2,
                  repetition_penalty=1.3)
    mine = decoding.generate(gpt2, PROMPTS, 24, eos_id=eos, **kwargs)
    assert mine == decoding.hf_generate(gpt2.lm, PROMPTS.tolist(), 24, pad_id=EOS, eos_id=eos, **kwargs)
    assert len({len(row) for row in mine}) > 1 and all(eos not in row for row in mine)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 3.0])
def test_beam_search_with_rows_that_end_agrees_with_transformers_at_any_length_penalty(gpt2, length_penalty):
    """Beams that end (end-of-text, the second sentence end) leave the running ones for the finished pool, scored
    by length ** length_penalty, as in transformers: texts of different lengths, the same on both paths."""
    free = ours(gpt2, strategy="greedy")
    eos = max(set(free[0]), key=free[0].count)
    kwargs = dict(strategy="beam", num_beams=3, sentence_ids=[t for t in set(free[1]) if t != eos][:3],
                  max_sentences=2, length_penalty=length_penalty)
    mine = decoding.generate(gpt2, PROMPTS, 24, eos_id=eos, **kwargs)
    assert mine == decoding.hf_generate(gpt2.lm, PROMPTS.tolist(), 24, pad_id=EOS, eos_id=eos, **kwargs)
    assert len({len(row) for row in mine}) > 1 and all(eos not in row for row in mine)


def test_a_larger_length_penalty_writes_longer_beams(gpt2):
    free = ours(gpt2, strategy="greedy")
    eos = max(set(free[0]), key=free[0].count)
    prompts = torch.randint(5, VOCAB, (12, 6), generator=torch.Generator().manual_seed(2))

    def length(lp):
        with torch.no_grad():
            rows = decoding.generate(gpt2, prompts, 24, eos_id=eos, strategy="beam", num_beams=4, length_penalty=lp)
        return sum(map(len, rows))

    assert length(-1.0) < length(1.0) < length(4.0)


def _repeated_ngrams(seq, n):
    grams = [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]
    return len(grams) - len(set(grams))


@pytest.mark.parametrize("path", [ours, theirs])
def test_every_control_does_what_it_says(gpt2, path):
    free = path(gpt2, strategy="greedy")
    prompts = PROMPTS.tolist()
    # banned ids never appear; without the ban they do
    common = sorted({t for row in free for t in row})[:6]
    assert not {t for row in path(gpt2, strategy="greedy", banned_ids=common) for t in row} & set(common)
    # no token comes back within the window (prompt included); the bare model does repeat within it
    def violations(rows):
        return sum(decoding.repeat_violations(p + r, 5, start=len(p)) for p, r in zip(prompts, rows))

    assert violations(free) > 0 and violations(path(gpt2, strategy="greedy", repeat_window=5)) == 0
    # no n-gram occurs twice; the bare model loops
    assert sum(_repeated_ngrams(p + r, 2) for p, r in zip(prompts, free)) > 0
    assert sum(_repeated_ngrams(p + r, 2) for p, r in zip(prompts, path(gpt2, strategy="greedy",
                                                                          no_repeat_ngram_size=2))) == 0
    # the repetition penalty makes the text repeat itself less
    def repeats(rows):
        return sum(len(p + r) - len(set(p + r)) for p, r in zip(prompts, rows))

    assert repeats(path(gpt2, strategy="greedy", repetition_penalty=3.0)) < repeats(free)
    # max_sentences: a row stops right after its second sentence end
    ends = sorted({t for row in free for t in row})[-8:]
    cut = path(gpt2, strategy="greedy", sentence_ids=ends, max_sentences=2)
    assert any(sum(t in ends for t in row) > 2 for row in free)
    assert all(sum(t in ends for t in row) == 2 and row[-1] in ends for row in cut)
    # no empty sentence: no sentence end first, nor right after another one
    guarded = path(gpt2, strategy="greedy", sentence_ids=ends, words=[t for t in range(VOCAB) if t not in ends])
    assert not any(row[0] in ends or any(a in ends and b in ends for a, b in zip(row, row[1:])) for row in guarded)
    # sampling: top_k=1 is greedy; a hot temperature is not
    assert path(gpt2, strategy="sample", top_k=1, temperature=2.0) == free
    hot = path(gpt2, strategy="sample", temperature=5.0, **({"generator": torch.Generator().manual_seed(0)}
                                                           if path is ours else {"seed": 0}))
    assert hot != free


def test_processors_are_transformers_own_where_it_has_them():
    from transformers import (NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor,
                              SuppressTokensLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper,
                              TopPLogitsWarper)

    procs = decoding.processors({"strategy": "sample", "temperature": 0.7, "top_k": 5, "top_p": 0.9, **CONTROLS},
                                banned_ids=BANNED, sentence_ids=ENDS, words=WORDS, eos_id=EOS)
    assert [type(p) for p in procs] == [
        SuppressTokensLogitsProcessor, RepetitionPenaltyLogitsProcessor, NoRepeatNGramLogitsProcessor,
        decoding.NoRepeatWindowLogitsProcessor, decoding.NoEmptySentenceLogitsProcessor, TemperatureLogitsWarper,
        TopKLogitsWarper, TopPLogitsWarper]
    assert len(decoding.processors({"strategy": "beam", "temperature": 0.7, "top_k": 5})) == 0
    with pytest.raises(TypeError, match="beam_size"):
        decoding.generate(None, PROMPTS, 3, beam_size=2)


def test_window_ignores_padding_and_a_full_ban_is_one_error():
    window = decoding.NoRepeatWindowLogitsProcessor(3, ignore_id=EOS)
    banned = torch.isinf(window(torch.tensor([[EOS, EOS, 7, 8]]), torch.zeros(1, 10)))[0]
    assert banned.nonzero().flatten().tolist() == [7, 8]  # the left padding bans nothing
    from nlpexp.errors import UserError

    class Uniform(decoding.WindowStepper, torch.nn.Module):
        def forward(self, ids):
            return torch.zeros(ids.size(0), 4)

    with pytest.raises(UserError, match="repeat_window"):
        decoding.generate(Uniform(), torch.tensor([[0, 1, 2, 3]]), 2, strategy="greedy", repeat_window=4)
