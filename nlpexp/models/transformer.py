"""Our own Transformer, written out: the building blocks shared by every task that uses it.

scaled_dot_product_attention and positional_encoding are the textbook formulas (Vaswani et al., 2017);
MultiHeadAttention, EncoderLayer and DecoderLayer are post-norm layers as in the paper. CausalLM (a stack of
encoder layers under a causal mask, i.e. decoder-only) is the next-token model; classifiers and
encoder-decoder models build on the same layers.
"""
import math

import torch
from torch import nn

from nlpexp.decoding import WindowStepper


def scaled_dot_product_attention(q, k, v, mask=None, dropout_p: float = 0.0, training: bool = False):
    """softmax(q k^T / sqrt(d)) v. `mask`: bool, True where attention is allowed (broadcast to the scores)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if dropout_p and training:
        weights = torch.nn.functional.dropout(weights, dropout_p)
    return weights @ v, weights


def positional_encoding(max_len: int, d_model: int) -> torch.Tensor:
    """(max_len, d_model): PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(same)."""
    position = torch.arange(max_len, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div)[:, : d_model // 2]
    return pe


def causal_mask(length: int, device=None) -> torch.Tensor:
    """(length, length) bool, True on and below the diagonal: position t sees positions <= t."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model {d_model} is not divisible by num_heads {num_heads}")
        self.h, self.d_k, self.dropout = num_heads, d_model // num_heads, dropout
        self.q, self.k, self.v, self.out = (nn.Linear(d_model, d_model) for _ in range(4))

    def forward(self, query, key, value, mask=None):
        b = query.size(0)

        def heads(x, proj):
            return proj(x).view(b, -1, self.h, self.d_k).transpose(1, 2)

        ctx, _ = scaled_dot_product_attention(heads(query, self.q), heads(key, self.k), heads(value, self.v),
                                              mask, self.dropout, self.training)
        return self.out(ctx.transpose(1, 2).reshape(b, -1, self.h * self.d_k))


class FeedForward(nn.Sequential):
    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__(nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))


class EncoderLayer(nn.Module):
    """Self-attention + feed-forward, each wrapped in dropout, residual and LayerNorm."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float = 0.1):
        super().__init__()
        self.attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.ff = FeedForward(d_model, d_ff, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask=None):
        x = self.norm1(x + self.drop(self.attn(x, x, x, mask)))
        return self.norm2(x + self.drop(self.ff(x)))


class DecoderLayer(nn.Module):
    """Masked self-attention, attention over the encoder's output (memory), feed-forward."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float = 0.1):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.cross_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.ff = FeedForward(d_model, d_ff, dropout)
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(3))
        self.drop = nn.Dropout(dropout)

    def forward(self, x, memory, self_mask=None, memory_mask=None):
        x = self.norms[0](x + self.drop(self.self_attn(x, x, x, self_mask)))
        x = self.norms[1](x + self.drop(self.cross_attn(x, memory, memory, memory_mask)))
        return self.norms[2](x + self.drop(self.ff(x)))


class Embedding(nn.Module):
    """Token embedding scaled by sqrt(d_model) plus the fixed sinusoidal positions."""

    def __init__(self, vocab_size: int, d_model: int, max_len: int, dropout: float, pad_id: int = 0):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.register_buffer("pe", positional_encoding(max_len, d_model), persistent=False)
        self.scale = math.sqrt(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, ids):
        return self.drop(self.tok(ids) * self.scale + self.pe[: ids.size(1)])


class CausalLM(WindowStepper, nn.Module):
    """Decoder-only language model: every position predicts the next token from the positions before it.

    Generation re-reads the last `window` tokens (WindowStepper); `window` defaults to max_len.
    """

    causal = True

    def __init__(self, vocab_size: int, d_model: int = 256, num_layers: int = 4, num_heads: int = 4,
                 d_ff: int = 1024, dropout: float = 0.1, max_len: int = 512, pad_id: int = 0,
                 window: int | None = None):
        super().__init__()
        self.settings = {"vocab_size": vocab_size, "d_model": d_model, "num_layers": num_layers,
                         "num_heads": num_heads, "d_ff": d_ff, "dropout": dropout, "max_len": max_len,
                         "pad_id": pad_id, "window": window}
        self.max_len, self.window = max_len, window or max_len
        self.embed = Embedding(vocab_size, d_model, max_len, dropout, pad_id)
        self.layers = nn.ModuleList(EncoderLayer(d_model, num_heads, d_ff, dropout) for _ in range(num_layers))
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, ids):
        """(B, T) ids -> (B, T, vocab) logits."""
        x = self.embed(ids)
        mask = causal_mask(ids.size(1), ids.device)
        for layer in self.layers:
            x = layer(x, mask)
        return self.head(x)

    def spec(self) -> dict:
        return {"family": "transformer", **self.settings}


# -- the novel task's builder: a character vocabulary from the training text, CausalLM over seq_len windows
def novel_codec(model_cfg, train_text: str, data_cfg, smoke: bool = False):
    from nlpexp.data.novel import CharVocab

    return CharVocab.from_text(train_text, int(data_cfg.min_freq), data_cfg.get("max_vocab"))


def novel_model(model_cfg, vocab, seq_len: int, smoke: bool = False) -> CausalLM:
    return CausalLM(len(vocab), model_cfg.d_model, model_cfg.num_layers, model_cfg.num_heads, model_cfg.d_ff,
                    model_cfg.dropout, max_len=seq_len, pad_id=vocab.pad_id, window=seq_len)


def from_spec(spec: dict) -> CausalLM:
    return CausalLM(**{k: v for k, v in spec.items() if k != "family"})


# -- task=story: attention with a key/value cache, and the two encoder-only story models -------------------
def project_kv(mha: MultiHeadAttention, x):
    """x (B, T, d_model) -> keys, values (B, heads, T, d_k) through `mha`'s projections."""
    b = x.size(0)
    return (mha.k(x).view(b, -1, mha.h, mha.d_k).transpose(1, 2),
            mha.v(x).view(b, -1, mha.h, mha.d_k).transpose(1, 2))


def attend(mha: MultiHeadAttention, query, k, v, mask=None):
    """MultiHeadAttention's forward with keys/values already projected (a cache): (B, T, d_model)."""
    b = query.size(0)
    q = mha.q(query).view(b, -1, mha.h, mha.d_k).transpose(1, 2)
    ctx, _ = scaled_dot_product_attention(q, k, v, mask, mha.dropout, mha.training)
    return mha.out(ctx.transpose(1, 2).reshape(b, -1, mha.h * mha.d_k))


def self_attention_step(layer: EncoderLayer, x, cache, mask=None):
    """One EncoderLayer on the new positions x, attending to the cached keys/values plus their own.
    cache: (k, v) or None; returns (output, (k, v) including x)."""
    k, v = project_kv(layer.attn, x)
    if cache is not None:
        k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
    x = layer.norm1(x + layer.drop(attend(layer.attn, x, k, v, mask)))
    return layer.norm2(x + layer.drop(layer.ff(x))), (k, v)


def padding_mask(ids, pad_id: int):
    """(B, 1, 1, T) bool, True on real tokens: broadcasts over heads and query positions."""
    return (ids != pad_id)[:, None, None, :]


def lm_labels(ids, pad_id: int, first_target=None):
    """Next-token labels for (B, T) ids: labels[t] = ids[t+1]; pads, and positions before first_target[b]
    (the prompt, when only the continuation is scored), are -100."""
    labels = torch.full_like(ids, -100)
    labels[:, :-1] = ids[:, 1:].masked_fill(ids[:, 1:] == pad_id, -100)
    if first_target is not None:
        pos = torch.arange(ids.size(1), device=ids.device)[None, :]
        labels = labels.masked_fill(pos < (first_target[:, None] - 1), -100)
    return labels


def pad_rows(rows, pad_id: int, left: bool = False) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([([pad_id] * (width - len(r)) + list(r)) if left else (list(r) + [pad_id] * (width - len(r)))
                         for r in rows], dtype=torch.long)


class StoryCausalLM(CausalLM):
    """CausalLM over whole stories, `<eos> first sentence rest <eos>`, generating with a key/value cache:
    each new token runs through the layers once against the cached keys/values of the tokens before it."""

    objective = "causal_lm"

    def __init__(self, *args, bos_id: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.settings["bos_id"] = self.bos_id = bos_id

    def spec(self) -> dict:
        return {"family": "transformer", "objective": self.objective, **self.settings}

    # training and scoring: rows are prompt + target (+ eos); every next token is a target in training
    def examples(self, pairs, train: bool):
        return [{"ids": [self.bos_id] + p + t, "first": 1 + (0 if train else len(p))} for p, t in pairs]

    def collate(self, items):
        ids = pad_rows([it["ids"][: self.max_len] for it in items], self.embed.tok.padding_idx)
        first = torch.tensor([it["first"] for it in items])
        return {"ids": ids, "labels": lm_labels(ids, self.embed.tok.padding_idx, first)}

    def nll_sum(self, batch):
        logits = self(batch["ids"])
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)).float(),
                                                 batch["labels"].reshape(-1), ignore_index=-100, reduction="sum")

    # generation: prompts of equal length, no padding
    def _run(self, ids, caches, pos: int):
        x = self.embed.drop(self.embed.tok(ids) * self.embed.scale + self.embed.pe[pos:pos + ids.size(1)])
        t = ids.size(1)
        mask = torch.ones(t, pos + t, dtype=torch.bool, device=ids.device).tril(pos) if t > 1 else None
        new = []
        for layer, cache in zip(self.layers, caches):
            x, kv = self_attention_step(layer, x, cache, mask)
            new.extend(kv)
        return self.head(x[:, -1]), new

    def start(self, prompt_ids, stateful: bool = True):
        ids = torch.cat([torch.full_like(prompt_ids[:, :1], self.bos_id), prompt_ids], dim=1)
        logits, kv = self._run(ids, [None] * len(self.layers), 0)
        return logits, tuple(kv)

    def advance(self, state, next_ids):
        pos = state[0].size(2)
        caches = [(state[2 * i], state[2 * i + 1]) for i in range(len(self.layers))]
        logits, kv = self._run(next_ids[:, None], caches, pos)
        return logits, tuple(kv)


class StoryNextToken(WindowStepper, nn.Module):
    """The original study's model: a window of the last `window` tokens, an encoder without causal mask, the
    mean of its outputs (pads excluded) -> Linear to the vocabulary. Generation re-reads the window each step
    (every position sees every other, so there is nothing to cache)."""

    causal = False
    objective = "next_token"

    def __init__(self, vocab_size: int, d_model: int = 256, num_layers: int = 2, num_heads: int = 4,
                 d_ff: int = 1024, dropout: float = 0.1, window: int = 32, pad_id: int = 0, bos_id: int = 0):
        super().__init__()
        self.settings = {"vocab_size": vocab_size, "d_model": d_model, "num_layers": num_layers,
                         "num_heads": num_heads, "d_ff": d_ff, "dropout": dropout, "window": window,
                         "pad_id": pad_id, "bos_id": bos_id}
        self.window, self.pad_id, self.bos_id, self.max_len = window, pad_id, bos_id, window
        self.embed = Embedding(vocab_size, d_model, window, dropout, pad_id)
        self.layers = nn.ModuleList(EncoderLayer(d_model, num_heads, d_ff, dropout) for _ in range(num_layers))
        self.head = nn.Linear(d_model, vocab_size)

    def spec(self) -> dict:
        return {"family": "transformer", "objective": self.objective, **self.settings}

    def forward(self, ids):
        """(B, <= W) ids -> (B, vocab) logits for the token after the window. Short windows are left-padded to W,
        so the last token always sits at position W-1 (in training and generation alike)."""
        if ids.size(1) < self.window:
            ids = nn.functional.pad(ids, (self.window - ids.size(1), 0), value=self.pad_id)
        mask = padding_mask(ids, self.pad_id)
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x, mask)
        keep = (ids != self.pad_id).unsqueeze(-1).float()
        return self.head((x * keep).sum(1) / keep.sum(1).clamp(min=1))

    def start(self, prompt_ids, stateful: bool = True):
        ids = torch.cat([torch.full_like(prompt_ids[:, :1], self.bos_id), prompt_ids], dim=1)
        return super().start(ids)

    def examples(self, pairs, train: bool):
        """One window per target token: the `window` tokens before it (fewer at the story's start)."""
        out = []
        for p, t in pairs:
            seq = [self.bos_id] + p + t
            for i in range(1 if train else 1 + len(p), len(seq)):
                out.append({"ids": seq[max(0, i - self.window):i], "target": seq[i]})
        return out

    def collate(self, items):
        return {"ids": pad_rows([it["ids"] for it in items], self.pad_id, left=True),
                "labels": torch.tensor([it["target"] for it in items])}

    def nll_sum(self, batch):
        return torch.nn.functional.cross_entropy(self(batch["ids"]).float(), batch["labels"], reduction="sum")


def story_model(model_cfg, vocab_size: int, pad_id: int, bos_id: int, task_cfg):
    objective = model_cfg.get("objective", "next_token")
    common = dict(d_model=model_cfg.d_model, num_layers=model_cfg.num_layers, num_heads=model_cfg.num_heads,
                  d_ff=model_cfg.d_ff, dropout=model_cfg.dropout, pad_id=pad_id, bos_id=bos_id)
    if objective == "causal_lm":
        return StoryCausalLM(vocab_size, max_len=int(task_cfg.max_len), **common)
    return StoryNextToken(vocab_size, window=int(task_cfg.window), **common)


def story_from_spec(spec: dict):
    spec = {k: v for k, v in spec.items() if k != "family"}
    if spec.pop("objective") == "causal_lm":
        return StoryCausalLM(**spec)
    return StoryNextToken(**spec)
# -- classification (finsent, chnsenti, zh_emotion, clue): our encoder, trained from scratch, with a head ---------
class EncoderClassifier(nn.Module):
    """Token + sinusoidal embeddings -> encoder layers (padding masked out, no causal mask) -> mean over the real
    tokens -> Dropout -> Linear to the labels. Forward matches an HF classifier's, so models/hf.py's Trainer
    loop trains it; saved as model.safetensors + classifier.json + the WordPiece tokenizer."""

    def __init__(self, vocab_size: int, num_labels: int, d_model: int = 256, num_layers: int = 4, num_heads: int = 4,
                 d_ff: int = 1024, dropout: float = 0.1, max_len: int = 512, pad_id: int = 0):
        from transformers import PretrainedConfig

        super().__init__()
        self.settings = {"vocab_size": vocab_size, "num_labels": num_labels, "d_model": d_model,
                         "num_layers": num_layers, "num_heads": num_heads, "d_ff": d_ff, "dropout": dropout,
                         "max_len": max_len, "pad_id": pad_id}
        self.config = PretrainedConfig(num_labels=num_labels)  # what hf.Classifier reads
        self.embed = Embedding(vocab_size, d_model, max_len, dropout, pad_id)
        self.layers = nn.ModuleList(EncoderLayer(d_model, num_heads, d_ff, dropout) for _ in range(num_layers))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(d_model, num_labels))

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        from transformers.modeling_outputs import SequenceClassifierOutput

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        keep = attention_mask.bool()
        x = self.embed(input_ids)
        for layer in self.layers:
            x = layer(x, keep[:, None, None, :])  # every query attends to the real tokens only
        weights = keep.unsqueeze(-1).to(x.dtype)
        pooled = (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        logits = self.head(pooled)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def save_pretrained(self, folder) -> None:
        import json
        from pathlib import Path

        from safetensors.torch import save_model

        Path(folder).mkdir(parents=True, exist_ok=True)
        save_model(self, str(Path(folder) / "model.safetensors"))
        spec = {"family": "transformer", **self.settings, "max_length": self.settings["max_len"] - 2}
        (Path(folder) / "classifier.json").write_text(json.dumps(spec, indent=1))


def build_classifier(model_cfg, labels: list[str], train_texts, max_length: int, smoke: bool = False):
    """(WordPiece tokenizer trained on the training texts, EncoderClassifier) for hf.fit."""
    from nlpexp.models.hf import train_wordpiece

    tokenizer = train_wordpiece(train_texts, model_cfg.get("vocab_size", 8000))
    model = EncoderClassifier(len(tokenizer), len(labels), model_cfg.d_model, model_cfg.num_layers,
                              model_cfg.num_heads, model_cfg.d_ff, model_cfg.dropout, max_len=max_length + 2,
                              pad_id=tokenizer.pad_token_id)
    return tokenizer, model


def fit(cfg, labels: list[str], splits, run_dir, device: str):
    from nlpexp.models import hf

    return hf.fit(cfg, labels, splits, run_dir, device, build_model=build_classifier)


def load(folder, model_cfg, device: str | None = None):
    """A saved classifier (checkpoints/best of a classification run) as an hf.Classifier."""
    import json
    from pathlib import Path

    from safetensors.torch import load_model
    from transformers import AutoTokenizer

    from nlpexp.models.hf import Classifier

    spec = json.loads((Path(folder) / "classifier.json").read_text())
    max_length = spec.pop("max_length")
    model = EncoderClassifier(**{k: v for k, v in spec.items() if k != "family"})
    load_model(model, str(Path(folder) / "model.safetensors"), device="cpu")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return Classifier(AutoTokenizer.from_pretrained(folder), model, device, max_length)
