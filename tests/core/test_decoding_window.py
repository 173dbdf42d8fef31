"""nlpexp.training.decoding on a WindowStepper (a model that rereads a fixed window, as task=novel's do): sampling,
top-k / top-p and beam search never emit banned tokens nor repeat inside the window."""
import pytest
import torch
from torch import nn

from nlpexp.training import decoding
from nlpexp.tasks.novel.data import SPECIAL_TOKENS


# -- decoding controls ------------------------------------------------------------------------------------
class Favourite(decoding.WindowStepper, nn.Module):
    """Logits that most want the special tokens, then low ids: every control has something to prevent."""

    def __init__(self, vocab_size=40, window=8):
        super().__init__()
        self.window, self.vocab_size = window, vocab_size
        self.bias = nn.Parameter(-torch.arange(vocab_size, dtype=torch.float32) * 0.1)

    def forward(self, ids):
        return self.bias.expand(ids.size(0), -1) + 0.01 * ids[:, -1:].float()


BANNED = list(range(len(SPECIAL_TOKENS)))


@pytest.mark.parametrize("kwargs", [{"top_k": 10}, {"top_k": 0, "top_p": 0.5}, {"top_k": 1},
                                    {"top_k": 10, "temperature": 3.0}])
def test_sampling_never_emits_banned_tokens_nor_repeats_inside_the_window(kwargs):
    model = Favourite()
    prompts = torch.randint(5, 40, (6, 8), generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    out = torch.tensor(decoding.generate(model, prompts, 60, banned_ids=BANNED, repeat_window=12, generator=gen,
                                         **kwargs))
    assert out.shape == (6, 60)
    assert not set(out.flatten().tolist()) & set(BANNED)
    for p, o in zip(prompts.tolist(), out.tolist()):
        assert decoding.repeat_violations(p + o, 12, start=len(p)) == 0
    # without the controls the same model does emit them: the test can fail
    free = decoding.generate(model, prompts, 60, strategy="greedy")
    assert set(t for row in free for t in row) & set(BANNED)


def test_top_k_and_top_p_limit_the_candidates():
    logits, history = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]]), torch.tensor([[1, 2]])
    assert torch.isfinite(decoding.processors({"top_k": 2})(history, logits)).sum() == 2
    probs = torch.softmax(logits, -1)[0]
    kept = torch.isfinite(decoding.processors({"top_p": float(probs[0]) + 0.01})(history, logits)).sum()
    assert kept == 2  # the first token alone falls just short of top_p
    masked = decoding.processors({"repeat_window": 1}, banned_ids=[0])(history, logits)
    assert torch.isinf(masked[0, [0, 2]]).all() and torch.isfinite(masked[0, [1, 3, 4]]).all()
    greedy = decoding.processors({"strategy": "greedy", "top_k": 2, "temperature": 0.5})
    assert torch.equal(greedy(history, logits), logits)  # temperature, top-k and top-p shape sampling only


def test_beam_search_respects_the_same_controls_and_is_batched():
    model = Favourite()
    prompts = torch.randint(5, 40, (3, 8), generator=torch.Generator().manual_seed(2))
    out = torch.tensor(decoding.generate(model, prompts, 30, strategy="beam", num_beams=3, banned_ids=BANNED,
                                         repeat_window=10))
    assert out.shape == (3, 30) and not set(out.flatten().tolist()) & set(BANNED)
    for p, o in zip(prompts.tolist(), out.tolist()):
        assert decoding.repeat_violations(p + o, 10, start=len(p)) == 0
    # beam 1 under the same bans is greedy decoding
    greedy = decoding.generate(model, prompts, 30, strategy="greedy", banned_ids=BANNED, repeat_window=10)
    assert decoding.generate(model, prompts, 30, strategy="beam", num_beams=1, banned_ids=BANNED,
                             repeat_window=10) == greedy
