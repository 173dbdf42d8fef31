"""One decoder for every generation task (story, novel): `generate` (greedy, sampling, beam search, batched,
stop at eos or after max_sentences) under controls that are transformers LogitsProcessors built by `processors`
from the generate.* settings: banned tokens, repetition penalty, no-repeat n-gram, a no-repeat window, no empty
sentence, temperature, top-k, top-p. transformers models decode through their own `generate` with the same list
(`hf_generate`), so a setting means the same for every model.

A model plugs in through two calls (see WindowStepper):
  start(prompt_ids (B, L), stateful=True) -> (next-token logits (B, V), state)
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


# -- the controls: transformers' LogitsProcessor interface, __call__(input_ids (B, T), scores (B, V)) -> scores --
# ours for what transformers lacks; duck-typed (LogitsProcessorList and generate only call them), so importing
# this module does not load transformers
class NoRepeatWindowLogitsProcessor:
    """-inf on every id among each row's last `window` ids (prompt included): no token comes back within
    `window` tokens. `ignore_id` (the padding left of short prompts) is not text and bans nothing."""

    def __init__(self, window: int, ignore_id: int | None = None):
        self.window, self.ignore_id = window, ignore_id

    def __call__(self, input_ids, scores):
        recent = input_ids[:, -self.window:]
        if self.ignore_id is not None:  # to a spare column past the vocabulary, dropped below
            recent = recent.masked_fill(recent == self.ignore_id, scores.size(-1))
        return torch.nn.functional.pad(scores, (0, 1)).scatter(1, recent, NEG_INF)[:, :-1]


class NoEmptySentenceLogitsProcessor:
    """A sentence may not end before it holds a word, nor the text (eos_id) before its first word: no '. . .',
    no empty or punctuation-only text. It reads the generated ids only (those after `prompt_len`)."""

    def __init__(self, sentence_ids, word_ids, eos_id=None, prompt_len: int = 0):
        self.ends, self.words = _ids(sentence_ids), _ids(word_ids)
        self.eos_id, self.prompt_len = eos_id, prompt_len

    def __call__(self, input_ids, scores):
        new = input_ids[:, self.prompt_len:]
        at = torch.arange(1, new.size(1) + 1, device=new.device)

        def last(ids):  # per row, the 1-based position of the last id among `ids` (0: none)
            return torch.nn.functional.pad(torch.isin(new, ids.to(new.device)) * at, (1, 0)).amax(dim=1)

        def column(ids):
            mask = torch.zeros(scores.size(-1), dtype=torch.bool, device=scores.device)
            mask[ids.to(scores.device)] = True
            return mask

        last_word = last(self.words)
        empty = last(self.ends) >= last_word  # a token holding a word and a sentence end ends the sentence
        scores = scores.masked_fill(empty[:, None] & column(self.ends), NEG_INF)
        if self.eos_id is not None:
            scores = scores.masked_fill((last_word == 0)[:, None] & column(torch.tensor([self.eos_id])), NEG_INF)
        return scores


def _ids(ids):
    return torch.tensor(sorted(set(ids)), dtype=torch.long)


class SentencesDone:
    """A transformers StoppingCriteria: a row is done once its generated ids hold `max_sentences` sentence ends."""

    def __init__(self, sentence_ids, max_sentences: int, prompt_len: int):
        self.ends, self.max_sentences, self.prompt_len = _ids(sentence_ids), max_sentences, prompt_len

    def __call__(self, input_ids, scores, **kwargs):
        new = input_ids[:, self.prompt_len:]
        return torch.isin(new, self.ends.to(new.device)).sum(dim=1) >= self.max_sentences


# the decoding controls every generate.* node holds (nlpexp.config.schema.DecodingControls), with their neutral values
CONTROLS = {"strategy": "sample", "temperature": 1.0, "top_k": 0, "top_p": 1.0, "num_beams": 4,
            "repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "repeat_window": 0, "length_penalty": 1.0}


def controls(settings) -> dict:
    """The decoding controls of a generate.* node or settings dict (CONTROLS' defaults where absent), as the plain
    Python types transformers' processors insist on."""
    return {key: type(default)(settings.get(key, default)) for key, default in CONTROLS.items()}


def processors(settings, *, banned_ids=(), eos_id=None, sentence_ids=(), words=None, prompt_len: int = 0,
               pad_id=None):
    """One LogitsProcessorList from the settings' controls, in the order they apply: banned ids, repetition
    penalty, no-repeat n-gram, no-repeat window, no empty sentence (given `words`, the word-bearing ids), then,
    for sampling only, temperature, top-k and top-p. Our `generate` and transformers' `generate(logits_processor=)`
    run this very list, so a control means the same for every model. `prompt_len`: where the generated ids
    start in the rows the processors see."""
    from transformers import (LogitsProcessorList, NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor,
                              SuppressTokensLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper,
                              TopPLogitsWarper)

    s = controls(settings)
    out = LogitsProcessorList()
    if len(banned_ids):
        out.append(SuppressTokensLogitsProcessor(sorted(set(banned_ids))))
    if s["repetition_penalty"] != 1.0:
        out.append(RepetitionPenaltyLogitsProcessor(s["repetition_penalty"]))
    if s["no_repeat_ngram_size"]:
        out.append(NoRepeatNGramLogitsProcessor(s["no_repeat_ngram_size"]))
    if s["repeat_window"]:
        out.append(NoRepeatWindowLogitsProcessor(s["repeat_window"], pad_id))
    if words is not None:
        out.append(NoEmptySentenceLogitsProcessor(sentence_ids, words, eos_id, prompt_len))
    if s["strategy"] == "sample":
        if s["temperature"] != 1.0:
            out.append(TemperatureLogitsWarper(s["temperature"]))
        if s["top_k"]:
            out.append(TopKLogitsWarper(s["top_k"]))
        if s["top_p"] < 1.0:
            out.append(TopPLogitsWarper(s["top_p"]))
    return out


def _apply(procs, ids, scores, live=None):
    """The processors in order (called one by one: LogitsProcessorList would inspect each one's signature at
    every step); a row with every token banned is a UserError, not a crash in softmax."""
    if not procs:
        return scores
    for p in procs:
        scores = p(ids, scores)
    stuck = torch.isinf(scores).all(dim=-1)
    if bool((stuck if live is None else stuck & live).any()):
        from nlpexp.errors import UserError

        raise UserError("every token is banned at some step (the banned ids, repeat_window and no_repeat_ngram_size "
                        "leave none: lower repeat_window)")
    return scores


def _select(state, index):
    return tuple(s.index_select(0, index) for s in state)


def _text_ids(prompt_ids, pad_id):
    """The prompts as the controls read them: padding moved to the left, so a right-padded (encoder) prompt's
    last token sits next to the first generated one."""
    if pad_id is None or not bool((prompt_ids == pad_id).any()):
        return prompt_ids
    rows = [[t for t in p if t != pad_id] for p in prompt_ids.tolist()]
    width = prompt_ids.size(1)
    return torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], device=prompt_ids.device)


def generate(model, prompt_ids, max_new_tokens: int, *, banned_ids=(), eos_id=None, sentence_ids=(),
             max_sentences: int = 0, words=None, pad_id=None, generator=None, stateful: bool = True,
             **settings) -> list[list[int]]:
    """Continuations of the (B, L) prompts, each a list of new ids without the end-of-text token, under the
    controls in `settings` (CONTROLS: strategy greedy | sample | beam, temperature, top_k, top_p, num_beams,
    length_penalty, repetition_penalty, no_repeat_ngram_size, repeat_window; see `processors`). pad_id entries of
    the prompts are padding, not text. A row stops at eos_id or once it holds `max_sentences` ids of `sentence_ids`
    (0 = no limit); the loop stops when every row has. Greedy takes the argmax, sampling draws from `generator`.
    `stateful` goes to model.start (bert_lstm: carry the LSTM state instead of re-reading the window)."""
    unknown = set(settings) - set(CONTROLS)
    if unknown:
        raise TypeError(f"generate() got unknown decoding controls {sorted(unknown)}")
    s = controls(settings)
    history = _text_ids(prompt_ids, pad_id)
    procs = processors(s, banned_ids=banned_ids, eos_id=eos_id, sentence_ids=sentence_ids, words=words,
                       prompt_len=history.size(1), pad_id=pad_id)
    if s["strategy"] == "beam":
        return _beam(model, prompt_ids, history, max_new_tokens, s["num_beams"], procs, eos_id, set(sentence_ids),
                     max_sentences, s["length_penalty"], stateful)
    b = prompt_ids.size(0)
    logits, state = model.start(prompt_ids, stateful=stateful)
    out, done, sentences, ends = [[] for _ in range(b)], [False] * b, [0] * b, set(sentence_ids)
    for step in range(max_new_tokens):
        scores = _apply(procs, history, logits.float())
        if s["strategy"] == "greedy":
            nxt = scores.argmax(dim=-1)
        else:
            nxt = torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator)[:, 0]
        for r, t in enumerate(nxt.tolist()):
            if done[r]:
                continue
            if t == eos_id:
                done[r] = True
                continue
            out[r].append(t)
            sentences[r] += t in ends
            done[r] = bool(max_sentences) and sentences[r] >= max_sentences
        if all(done) or step + 1 == max_new_tokens:
            break
        if eos_id is not None and any(done):  # finished rows keep feeding eos (their output is frozen)
            nxt = nxt.masked_fill(torch.tensor(done, device=nxt.device), eos_id)
        history = torch.cat([history, nxt[:, None]], dim=1)
        logits, state = model.advance(state, nxt)
    return out


def _beam(model, prompt_ids, history, max_new_tokens, k, procs, eos_id, ends, max_sentences, length_penalty,
          stateful):
    """Beam search as transformers' generate runs it (early_stopping=False): each step the best 2k continuations
    of a prompt's k running beams by summed log-probability (after the processors); those of the best k that end
    (eos_id, the max_sentences-th sentence end, the last allowed token) join the prompt's k finished hypotheses,
    scored sum / generated length ** length_penalty (> 1 favours longer texts), and the best k that do not end
    run on. A prompt is settled once its k finished ones are all better than its best running beam scored at its
    current length; the best finished one is its text."""
    b = prompt_ids.size(0)
    logits, state = model.start(prompt_ids, stateful=stateful)
    dev, vocab = logits.device, logits.size(-1)
    index = torch.arange(b, device=dev).repeat_interleave(k)
    state, logits, history = _select(state, index), logits[index], history[index]
    seqs, ended = [[] for _ in range(b * k)], [0] * (b * k)  # ended: each beam's sentence ends so far
    running = torch.full((b, k), -1e9, device=dev)
    running[:, 0] = 0.0  # one live beam per prompt until the first expansion
    finished = [[] for _ in range(b)]  # per prompt: (normalised score, ids), best first, at most k
    open_ = [True] * b
    for step in range(max_new_tokens):
        logp = _apply(procs, history, torch.log_softmax(logits.float(), dim=-1), live=running.view(-1) > -1e8)
        total = (running[:, :, None] + logp.view(b, k, vocab)).view(b, -1)
        top, flat = torch.topk(total, 2 * k, dim=-1)
        last = step + 1 == max_new_tokens
        parents, tokens, scores = [], [], []
        for i, (row_scores, row_flat) in enumerate(zip(top.tolist(), flat.tolist())):
            live = []
            for j, (score, f) in enumerate(zip(row_scores, row_flat)):
                p, t = i * k + f // vocab, f % vocab
                seq = seqs[p] if t == eos_id else seqs[p] + [t]
                if t == eos_id or last or (max_sentences and ended[p] + (t in ends) >= max_sentences):
                    if j < k and open_[i]:
                        finished[i].append((score / (step + 1) ** length_penalty, seq))
                elif len(live) < k:
                    live.append((score, p, t))
            finished[i] = sorted(finished[i], key=lambda h: -h[0])[:k]
            if live:
                best = live[0][0] / (step + 1) ** length_penalty
                open_[i] = open_[i] and not (len(finished[i]) == k and best <= finished[i][-1][0])
            else:
                open_[i] = False
                live = [(-1e9, i * k, int(row_flat[0]) % vocab)]
            live += [(-1e9, *live[-1][1:])] * (k - len(live))  # stand-ins, never chosen
            scores += [score for score, _, _ in live]
            parents += [p for _, p, _ in live]
            tokens += [t for _, _, t in live]
        if last or not any(open_):
            break
        parent, token = torch.tensor(parents, device=dev), torch.tensor(tokens, device=dev)
        seqs = [seqs[p] + [t] for p, t in zip(parents, tokens)]
        ended = [ended[p] + (t in ends) for p, t in zip(parents, tokens)]
        running = torch.tensor(scores, device=dev).view(b, k)
        history = torch.cat([history[parent], token[:, None]], dim=1)
        logits, state = model.advance(_select(state, parent), token)
    return [finished[i][0][1] for i in range(b)]


def hf_generate(lm, prompts: list[list[int]], max_new_tokens: int, *, pad_id: int, eos_id=None, banned_ids=(),
                sentence_ids=(), max_sentences: int = 0, words=None, seed: int = 0, encoder_decoder: bool = False,
                **settings) -> list[list[int]]:
    """A transformers model's own `generate` (its key/value cache, its greedy, sampling and beam loops) under the
    processors our `generate` runs, passed as `logits_processor=` (no control also passed as a generate kwarg),
    max_sentences as a StoppingCriteria; prompts left-padded with pad_id under an attention mask. New ids per
    prompt, ended as our generate ends them (before eos_id, after the max_sentences-th sentence end: transformers
    pads a stopped row). Sampling draws from torch's global generator, seeded with `seed`. `encoder_decoder`: the
    prompts are the encoder's input and the decoder starts from its start token alone (the controls see the
    decoder's ids)."""
    from transformers import StoppingCriteriaList

    s = controls(settings)
    width, device = max(map(len, prompts)), next(lm.parameters()).device
    ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompts], device=device)
    attn = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    start = 1 if encoder_decoder else width  # where the new ids begin in what generate returns
    procs = processors(s, banned_ids=banned_ids, eos_id=eos_id, sentence_ids=sentence_ids, words=words,
                       prompt_len=start, pad_id=pad_id)
    stops = StoppingCriteriaList([SentencesDone(sentence_ids, max_sentences, start)] if max_sentences else [])
    # top_k=0: transformers would add its default top-50 warper to ours when sampling
    strategy = {"sample": {"do_sample": True, "top_k": 0},
                "beam": {"do_sample": False, "num_beams": s["num_beams"], "length_penalty": s["length_penalty"]},
                "greedy": {"do_sample": False, "num_beams": 1}}[s["strategy"]]
    torch.manual_seed(int(seed))
    with torch.no_grad():
        out = lm.generate(input_ids=ids, attention_mask=attn, max_new_tokens=max_new_tokens, logits_processor=procs,
                          stopping_criteria=stops, eos_token_id=eos_id, pad_token_id=pad_id, **strategy)
    return [_ended(row, eos_id, set(sentence_ids), max_sentences) for row in out[:, start:].tolist()]


def _ended(row: list[int], eos_id, ends: set, max_sentences: int) -> list[int]:
    row = row[:row.index(eos_id)] if eos_id in row else row
    count = 0
    for i, t in enumerate(row):
        count += t in ends
        if max_sentences and count >= max_sentences:
            return row[:i + 1]
    return row


def repeat_violations(ids: list[int], window: int, start: int = 0) -> int:
    """How many positions >= start hold an id that already occurs in the `window` ids before them."""
    return sum(ids[i] in ids[max(0, i - window):i] for i in range(start, len(ids)))


# -- what the story wing derives from its tokenizer, and its text cuts -------------------------------------
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


def folds_case(tokenizer) -> bool:
    """Whether a tokenizer writes lower case whatever it reads (an uncased BERT's WordPiece): `recase` then."""
    return tokenizer.tokenize("A")[:1] == tokenizer.tokenize("a")[:1]


def recase(text: str, prompt: str) -> str:
    """Text an uncased WordPiece model wrote, given case back: `didn ' t` joined, the prompt's capitalised words
    (names), `I`, and a capital at the start of every sentence."""
    import re

    text = re.sub(r"(\w) ' (\w)", r"\1'\2", text)
    known = {w.lower(): w for w in re.findall(r"[A-Za-z][\w']*", prompt) if w[0].isupper()}
    text = re.sub(r"[A-Za-z][\w']*", lambda m: known.get(m.group(0).lower(), m.group(0)), text)
    text = re.sub(r"\bi\b(?!\.)", "I", text)
    return re.sub(r"(^|[.!?]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)


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
