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


# -- story generation: one loop for our models (their own cache via start/advance), with stopping rules ---
def sentence_end_ids(tokenizer) -> list[int]:
    """Ids of the tokens that end a sentence (their text holds . ! or ?)."""
    vocab = tokenizer.get_vocab()
    ends = []
    for token, i in vocab.items():
        text = tokenizer.convert_tokens_to_string([token])
        if any(c in text for c in ".!?"):
            ends.append(i)
    return sorted(ends)


def word_ids(tokenizer) -> list[int]:
    """Ids of the tokens holding a letter or digit."""
    vocab = tokenizer.get_vocab()
    return sorted(i for token, i in vocab.items()
                  if any(c.isalnum() for c in tokenizer.convert_tokens_to_string([token])))


def sentence_is_empty(seq, sentence_ids: set, words: set) -> bool:
    """True when no word-bearing token came since the last sentence end (or since the start)."""
    for t in reversed(seq):
        if t in sentence_ids:
            return True
        if t in words:
            return False
    return True


def ban_empty_sentences(logits, seqs, sentence_ids: set, words, eos_id=None) -> None:
    """In place: a sentence may not end before it holds a word, nor the text (eos_id) before its first word:
    no '. . .', no empty or punctuation-only text."""
    if words is None:
        return
    if sentence_ids:
        rows = [r for r, seq in enumerate(seqs) if sentence_is_empty(seq, sentence_ids, words)]
        if rows:
            ids = torch.tensor(sorted(sentence_ids), device=logits.device)
            logits[torch.tensor(rows, device=logits.device)[:, None], ids[None, :]] = NEG_INF
    if eos_id is not None:
        for r, seq in enumerate(seqs):
            if not any(t in words for t in seq):
                logits[r, eos_id] = NEG_INF


def apply_repetition_penalty(logits, rows: list[list[int]], penalty: float):
    """CTRL's penalty (as transformers): a seen token's logit is divided by `penalty` if > 0, else multiplied."""
    if penalty == 1.0:
        return logits
    logits = logits.clone()
    for r, seen in enumerate(rows):
        if seen:
            idx = torch.tensor(sorted(set(seen)), device=logits.device)
            vals = logits[r, idx]
            logits[r, idx] = torch.where(vals > 0, vals / penalty, vals * penalty)
    return logits


def no_repeat_ngram_bans(row: list[int], n: int) -> list[int]:
    """Tokens that would complete an n-gram already present in `row`."""
    if n <= 0 or len(row) < n:
        return []
    prefix = tuple(row[len(row) - n + 1:]) if n > 1 else ()
    return [row[i + n - 1] for i in range(len(row) - n + 1) if tuple(row[i:i + n - 1]) == prefix]


def _controls(logits, rows, *, banned_ids, repetition_penalty, no_repeat_ngram_size):
    logits = mask_logits(logits.float(), banned_ids)
    logits = apply_repetition_penalty(logits, rows, repetition_penalty)
    if no_repeat_ngram_size:
        for r, row in enumerate(rows):
            bans = no_repeat_ngram_bans(row, no_repeat_ngram_size)
            if bans:
                logits[r, bans] = NEG_INF
    return logits


def generate(model, prompt_ids, max_new_tokens: int, *, strategy: str = "sample", temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, num_beams: int = 4, repetition_penalty: float = 1.0,
             no_repeat_ngram_size: int = 0, eos_id=None, banned_ids=(), sentence_ids=(), max_sentences: int = 0,
             pad_id=None, generator=None, length_penalty: float = 1.0, words=None) -> list[list[int]]:
    """Continuations of the (B, L) prompts (pad_id entries are not part of the text), each a list of ids without
    the end-of-text token. strategy: greedy | sample | beam. A row stops at eos_id or once it holds
    `max_sentences` sentence-ending tokens (0 = no limit); the loop stops when every row has. With `words` (the
    ids of word-bearing tokens), a sentence cannot end before it holds a word."""
    rows = [[t for t in p if t != pad_id] for p in prompt_ids.tolist()]
    words = set(words) if words is not None else None
    if strategy == "beam":
        return _beam(model, prompt_ids, rows, max_new_tokens, num_beams, repetition_penalty, no_repeat_ngram_size,
                     eos_id, banned_ids, set(sentence_ids), max_sentences, length_penalty, words)
    b = prompt_ids.size(0)
    logits, state = model.start(prompt_ids)
    out = [[] for _ in range(b)]
    done = [False] * b
    sentences = [0] * b
    sentence_ids = set(sentence_ids)
    for step in range(max_new_tokens):
        masked = _controls(logits, [r + o for r, o in zip(rows, out)], banned_ids=banned_ids,
                           repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size)
        ban_empty_sentences(masked, out, sentence_ids, words, eos_id)
        if strategy == "greedy":
            nxt = masked.argmax(dim=-1)
        else:
            probs = torch.softmax(filter_logits(masked, temperature, top_k, top_p), dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator)[:, 0]
        for r, t in enumerate(nxt.tolist()):
            if done[r]:
                continue
            if t == eos_id:
                done[r] = True
                continue
            out[r].append(t)
            sentences[r] += t in sentence_ids
            done[r] = bool(max_sentences) and sentences[r] >= max_sentences
        if all(done) or step + 1 == max_new_tokens:
            break
        if eos_id is not None:  # finished rows keep feeding eos (their output is frozen)
            nxt = torch.where(torch.tensor(done, device=nxt.device), torch.full_like(nxt, eos_id), nxt)
        logits, state = model.advance(state, nxt)
    return out


def _beam(model, prompt_ids, rows, max_new_tokens, num_beams, repetition_penalty, no_repeat_ngram_size, eos_id,
          banned_ids, sentence_ids, max_sentences, length_penalty, words=None):
    """Beam search with finished beams frozen: a finished beam can only extend by eos at no cost."""
    b, k = prompt_ids.size(0), num_beams
    logits, state = model.start(prompt_ids)
    vocab = logits.size(-1)
    index = torch.arange(b).repeat_interleave(k)
    state, logits = _select(state, index.to(logits.device)), logits[index]
    hist = [list(rows[i]) for i in index.tolist()]
    seqs = [[] for _ in range(b * k)]
    done = torch.zeros(b * k, dtype=torch.bool)
    scores = torch.full((b, k), NEG_INF)
    scores[:, 0] = 0.0
    for step in range(max_new_tokens):
        masked = _controls(logits, [h + s for h, s in zip(hist, seqs)], banned_ids=banned_ids,
                           repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size)
        ban_empty_sentences(masked, seqs, sentence_ids, words, eos_id)
        logp = torch.log_softmax(masked, dim=-1).cpu()
        if eos_id is not None and done.any():
            logp[done] = NEG_INF
            logp[done, eos_id] = 0.0
        total = (scores[:, :, None] + logp.view(b, k, vocab)).view(b, -1)
        scores, flat = torch.topk(total, k, dim=-1)
        parent = (flat // vocab + torch.arange(b)[:, None] * k).view(-1)
        token = (flat % vocab).view(-1)
        new_seqs, new_done = [], done[parent].clone()
        for j, (p, t) in enumerate(zip(parent.tolist(), token.tolist())):
            seq = seqs[p]
            if not done[p] and t != eos_id:
                seq = seq + [t]
                if max_sentences and sum(x in sentence_ids for x in seq) >= max_sentences:
                    new_done[j] = True
            elif t == eos_id:
                new_done[j] = True
            new_seqs.append(seq)
        hist, seqs, done = [hist[p] for p in parent.tolist()], new_seqs, new_done
        if bool(done.all()) or step + 1 == max_new_tokens:
            break
        feed = torch.where(done, torch.full_like(token, eos_id if eos_id is not None else 0), token)
        logits, state = model.advance(_select(state, parent.to(logits.device)), feed.to(logits.device))
    lengths = torch.tensor([len(s) + 1 for s in seqs], dtype=torch.float32).view(b, k)
    best = (scores / lengths ** length_penalty).argmax(dim=-1)
    return [seqs[i * k + int(best[i])] for i in range(b)]


def cut_at_repeated_kgram(text: str, k: int = 10) -> str:
    """The text up to the first word k-gram that already occurred (0 = no cut): drops a looping tail."""
    words = text.split()
    if k <= 0 or len(words) <= k:
        return text
    seen = set()
    for i in range(len(words) - k + 1):
        gram = tuple(words[i:i + k])
        if gram in seen:
            return " ".join(words[:i])
        seen.add(gram)
    return text


def cut_after_sentences(text: str, n: int) -> str:
    """The text up to the end of its n-th sentence (0 = no cut)."""
    import re

    if n <= 0:
        return text
    ends = [m.end() for m in re.finditer(r"[.!?]+[\"')\]]*(?=\s|$)", text)]
    return text[:ends[n - 1]] if len(ends) >= n else text
