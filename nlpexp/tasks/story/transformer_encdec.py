"""Our own encoder-decoder Transformer (task=story): the encoder reads the first sentence, the decoder writes
the rest under a causal mask, trained with teacher forcing on the target shifted right by one token, and
generating autoregressively with a key/value cache (cross-attention keys/values computed once per prompt,
self-attention keys/values appended one token at a time).

The layers are the building blocks of nlpexp/models/transformer.py.
"""
from pathlib import Path

import torch
from torch import nn

from nlpexp.inputs.hub import train_byte_bpe
from nlpexp.models.transformer import (
    DecoderLayer,
    Embedding,
    EncoderLayer,
    attend,
    causal_mask,
    pad_rows,
    padding_mask,
    project_kv,
)
from nlpexp.runs import loading
from nlpexp.tasks.story.contract import Built, batches_in_order, read_spec
from nlpexp.tasks.story.transformer import OurDecoding, load_ours



def shift_right(target, bos_id: int):
    """Decoder input for teacher forcing: (B, T) target -> bos followed by target[:, :-1]."""
    return torch.cat([torch.full_like(target[:, :1], bos_id), target[:, :-1]], dim=1)


class StoryEncDec(OurDecoding, nn.Module):
    objective = "encdec"
    adapter = "transformer_encdec"

    def __init__(self, vocab_size: int, d_model: int = 256, num_layers: int = 3, num_heads: int = 4,
                 d_ff: int = 1024, dropout: float = 0.1, max_len: int = 256, pad_id: int = 0, bos_id: int = 0,
                 eos_id: int = 0):
        super().__init__()
        self.settings = {"vocab_size": vocab_size, "d_model": d_model, "num_layers": num_layers,
                         "num_heads": num_heads, "d_ff": d_ff, "dropout": dropout, "max_len": max_len,
                         "pad_id": pad_id, "bos_id": bos_id, "eos_id": eos_id}
        self.pad_id, self.bos_id, self.eos_id, self.max_len = pad_id, bos_id, eos_id, max_len
        self.embed = Embedding(vocab_size, d_model, max_len, dropout, pad_id)  # shared by both sides
        self.encoder = nn.ModuleList(EncoderLayer(d_model, num_heads, d_ff, dropout) for _ in range(num_layers))
        self.decoder = nn.ModuleList(DecoderLayer(d_model, num_heads, d_ff, dropout) for _ in range(num_layers))
        self.head = nn.Linear(d_model, vocab_size)

    def encode(self, src):
        mask = padding_mask(src, self.pad_id)
        x = self.embed(src)
        for layer in self.encoder:
            x = layer(x, mask)
        return x, mask

    def forward(self, src, tgt_in):
        """(B, S) source, (B, T) decoder input -> (B, T, vocab). Right-padded targets need no pad mask in
        self-attention: under the causal mask no real position sees a pad after it."""
        memory, mem_mask = self.encode(src)
        x, self_mask = self.embed(tgt_in), causal_mask(tgt_in.size(1), tgt_in.device)
        for layer in self.decoder:
            x = layer(x, memory, self_mask, mem_mask)
        return self.head(x)

    # -- training and scoring
    def examples(self, pairs, train: bool):
        return [{"src": p[: self.max_len], "tgt": (t + [self.eos_id])[: self.max_len]} for p, t in pairs]

    def collate(self, items):
        tgt = pad_rows([it["tgt"] for it in items], self.pad_id)
        return {"src": pad_rows([it["src"] for it in items], self.pad_id), "tgt_in": shift_right(tgt, self.bos_id),
                "labels": tgt.masked_fill(tgt == self.pad_id, -100)}

    def scores(self, batch):
        return self(batch["src"], batch["tgt_in"]), batch["labels"]

    # -- generation with a key/value cache; state: (memory mask, per layer: cross k, v, self k, v)
    def _step(self, ids, state):
        pos = state[3].size(2) if state[3].numel() else 0
        x = self.embed.drop(self.embed.tok(ids) * self.embed.scale + self.embed.pe[pos:pos + 1])
        mem_mask, new = state[0], [state[0]]
        for i, layer in enumerate(self.decoder):
            ck, cv, sk, sv = state[1 + 4 * i: 5 + 4 * i]
            k, v = project_kv(layer.self_attn, x)
            sk, sv = torch.cat([sk, k], dim=2), torch.cat([sv, v], dim=2)
            x = layer.norms[0](x + layer.drop(attend(layer.self_attn, x, sk, sv)))
            x = layer.norms[1](x + layer.drop(attend(layer.cross_attn, x, ck, cv, mem_mask)))
            x = layer.norms[2](x + layer.drop(layer.ff(x)))
            new.extend([ck, cv, sk, sv])
        return self.head(x[:, -1]), tuple(new)

    def start(self, src, stateful: bool = True):
        memory, mem_mask = self.encode(src)
        b, h = src.size(0), self.decoder[0].self_attn.h
        empty = memory.new_zeros(b, h, 0, self.decoder[0].self_attn.d_k)
        state = [mem_mask]
        for layer in self.decoder:
            state.extend([*project_kv(layer.cross_attn, memory), empty, empty])
        return self._step(torch.full_like(src[:, :1], self.bos_id), tuple(state))

    def advance(self, state, next_ids):
        return self._step(next_ids[:, None], state)

    def prompt_groups(self, prompts, batch_size: int):
        return batches_in_order(prompts, batch_size)

    def fit_positions(self, rows, max_new: int):
        """The encoder keeps the first max_len prompt tokens; the decoder writes up to max_len - 1."""
        return [r[: self.max_len] for r in rows], min(max_new, self.max_len - 1)


def build(m, task, train_texts):
    """(byte-level BPE trained on the training stories, StoryEncDec); one extra id past the tokenizer's pads.
    m: config.StoryEncDec; task: what m.task() names (BPE size, positions)."""
    tok = train_byte_bpe(train_texts, int(task.bpe_vocab_size))
    return Built(tok, StoryEncDec(len(tok) + 1, m.d_model, m.num_layers, m.num_heads, m.d_ff, m.dropout,
                                  int(task.max_len), pad_id=len(tok), bos_id=tok.eos_token_id,
                                  eos_id=tok.eos_token_id))


def load(folder: Path, device: str):
    with loading(folder):
        spec = read_spec(folder)["spec"]
        spec.pop("objective")
        model = StoryEncDec(**spec)
    return load_ours(model, folder, device)


def pretrained(m, device: str):
    from nlpexp.tasks.story import transformer

    return transformer.pretrained(m, device)
