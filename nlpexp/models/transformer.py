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
