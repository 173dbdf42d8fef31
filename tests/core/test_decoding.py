"""nlpexp.training.decoding: one generate for every model, its controls LogitsProcessors. On one tiny GPT-2,
our generate (driving the model through StoryGPT2's start/advance over transformers' key/value cache) and
transformers' own generate under the same processor list write the same tokens; and each control does what
it says, on both paths, and on a fixed bigram table (greedy, sampling, penalties, stops, beams, text cuts)."""
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

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


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# -- every control on a fixed bigram table ----------------------------------------------------------------
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
