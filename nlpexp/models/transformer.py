"""Our own Transformer, written out: the building blocks shared by every task that uses it.

scaled_dot_product_attention and positional_encoding are the textbook formulas (Vaswani et al., 2017);
MultiHeadAttention, EncoderLayer and DecoderLayer are post-norm layers as in the paper. CausalLM (a stack of
encoder layers under a causal mask, i.e. decoder-only) is the next-token model of task=novel and the base of
task=story's; the task wings' classifiers and encoder-decoder models build on the same layers.
"""
import math

import torch
from torch import nn

from nlpexp.training.decoding import WindowStepper


def scaled_dot_product_attention(q, k, v, mask=None, dropout_p: float = 0.0, training: bool = False):
    """softmax(q k^T / sqrt(d)) v. `mask`: bool, True where attention is allowed (broadcast to the scores)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if dropout_p and training:
        weights = torch.nn.functional.dropout(weights, dropout_p)
    return weights @ v, weights


def positional_encoding(max_len: int, d_model: int, at: list[int] | None = None) -> torch.Tensor:
    """(max_len, d_model): PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(same); with `at`, the rows of
    those positions only (len(at), d_model)."""
    position = torch.tensor(at if at is not None else range(max_len), dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(len(position), d_model)
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
        return dict(self.settings)


# -- attention with a key/value cache (generation), padding and next-token labels ----------------------------
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
