"""Decoding controls shared by every generation task: temperature, top-k, top-p, banned tokens, a no-repeat
window, sampling and beam search, batched.

A model plugs in through two calls (see WindowStepper):
  start(prompt_ids (B, L)) -> (next-token logits (B, V), state)
  advance(state, next_ids (B,)) -> (logits, state)
`state` is a tuple of tensors with the batch on dim 0, so beams are re-ordered by indexing it.
"""
import torch

NEG_INF = float("-inf")


class WindowStepper:
    """Generation by re-reading the last `window` ids each step: ids stay a tensor, never re-tokenised.

    Mixed into a model whose forward maps (B, T) ids to (B, V) logits, or (B, T, V) when `causal`.
    """

    causal = False
    window = 32

    def last_logits(self, ids):
        out = self(ids)
        return out[:, -1] if self.causal else out

    def start(self, prompt_ids, stateful: bool = True):
        window = prompt_ids[:, -self.window:]
        return self.last_logits(window), (window,)

    def advance(self, state, next_ids):
        window = torch.cat([state[0], next_ids[:, None]], dim=1)[:, -self.window:]
        return self.last_logits(window), (window,) + tuple(state[1:])


def mask_logits(logits, banned_ids=(), history=None, repeat_window: int = 0):
    """-inf on banned ids and, per row, on every id among the last `repeat_window` ids of `history` (B, L)."""
    logits = logits.clone()
    if len(banned_ids):
        logits[:, list(banned_ids)] = NEG_INF
    if repeat_window and history is not None and history.size(1):
        logits.scatter_(1, history[:, -repeat_window:], NEG_INF)
    return logits


def filter_logits(logits, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0):
    """Temperature, then keep the top_k highest (0 = all), then the smallest set with probability >= top_p."""
    logits = logits / max(float(temperature), 1e-6)
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, NEG_INF)
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        drop = probs.cumsum(dim=-1) - probs > top_p  # the token that crosses top_p stays
        logits = logits.scatter(1, order, sorted_logits.masked_fill(drop, NEG_INF))
    return logits


def _check_some_allowed(logits):
    if torch.isinf(logits).all(dim=-1).any():
        from nlpexp.errors import UserError

        raise UserError("every token is banned at some step (repeat_window is too large for this vocabulary)")


def sample(model, prompt_ids, length: int, *, temperature=1.0, top_k=10, top_p=1.0, banned_ids=(),
           repeat_window=30, generator=None, stateful=True):
    """(B, length) sampled continuations of the (B, L) prompts, all rows advanced together."""
    logits, state = model.start(prompt_ids, stateful=stateful)
    history, out = prompt_ids, []
    for step in range(length):
        masked = mask_logits(logits.float(), banned_ids, history, repeat_window)
        _check_some_allowed(masked)
        probs = torch.softmax(filter_logits(masked, temperature, top_k, top_p), dim=-1)
        nxt = torch.multinomial(probs, 1, generator=generator)[:, 0]
        out.append(nxt)
        history = torch.cat([history[:, -max(repeat_window, 1):], nxt[:, None]], dim=1)
        if step + 1 < length:
            logits, state = model.advance(state, nxt)
    return torch.stack(out, dim=1) if out else prompt_ids[:, :0]


def _select(state, index):
    return tuple(s.index_select(0, index) for s in state)


def beam_search(model, prompt_ids, length: int, *, beam_size=4, banned_ids=(), repeat_window=30,
                length_penalty=1.0, stateful=True):
    """(B, length) best beam per prompt by summed log-probability, under the same bans as sampling."""
    b = prompt_ids.size(0)
    logits, state = model.start(prompt_ids, stateful=stateful)
    vocab = logits.size(-1)
    # every prompt starts as one live beam; the other beam slots are dead (-inf) until the first expansion
    rows = torch.arange(b).repeat_interleave(beam_size)
    state, history, logits = _select(state, rows), prompt_ids[rows], logits[rows]
    scores = torch.full((b, beam_size), NEG_INF)
    scores[:, 0] = 0.0
    seqs = prompt_ids.new_zeros((b * beam_size, 0))
    for step in range(length):
        masked = mask_logits(logits.float(), banned_ids, history, repeat_window)
        _check_some_allowed(masked)
        logp = torch.log_softmax(masked, dim=-1).view(b, beam_size, vocab)
        total = (scores[:, :, None] + logp).view(b, -1)
        scores, flat = torch.topk(total, beam_size, dim=-1)
        parent = (flat // vocab + torch.arange(b)[:, None] * beam_size).view(-1)
        token = (flat % vocab).view(-1)
        seqs = torch.cat([seqs[parent], token[:, None]], dim=1)
        history = torch.cat([history[parent][:, -max(repeat_window, 1):], token[:, None]], dim=1)
        if step + 1 < length:
            logits, state = model.advance(_select(state, parent), token)
    best = (scores / max(length, 1) ** length_penalty).argmax(dim=-1)
    return seqs.view(b, beam_size, -1)[torch.arange(b), best]


def repeat_violations(ids: list[int], window: int, start: int = 0) -> int:
    """How many positions >= start hold an id that already occurs in the `window` ids before them."""
    return sum(ids[i] in ids[max(0, i - window):i] for i in range(start, len(ids)))
