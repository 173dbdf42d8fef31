"""Our own Transformer on task=story: the original study's next-token classifier (StoryNextToken) or a
decoder-only causal LM with a key/value cache (StoryCausalLM), over a byte-level BPE trained on the training
stories; and what our story models share (OurDecoding: decoding through nlpexp.training.decoding.generate, safetensors
checkpoints)."""
from pathlib import Path

import torch
from torch import nn

from nlpexp.training import decoding
from nlpexp.training.decoding import WindowStepper
from nlpexp.errors import UserError
from nlpexp.inputs.hub import train_byte_bpe
from nlpexp.models.transformer import CausalLM, Embedding, EncoderLayer, lm_labels, pad_rows, padding_mask, \
    self_attention_step
from nlpexp.runs import loading, write_dir
from nlpexp.tasks.story.contract import Built, batches_by_length, fit_decoder_positions, read_spec, write_spec



class OurDecoding:
    """StoryModel's generation and checkpoint methods for our models (they hold `settings` and `objective`)."""

    adapter = "transformer"  # the registry's model name, written into story_model.json

    def prompt_groups(self, prompts, batch_size: int):
        return batches_by_length(prompts, batch_size)

    def continue_ids(self, rows, max_new: int, settings: dict, *, sentence_ids, words, eos_id: int, seed: int,
                     generator):
        pad = self.settings["pad_id"]
        device = next(self.parameters()).device
        return decoding.generate(
            self, pad_rows(rows, pad).to(device), max_new, **decoding.controls(settings), eos_id=eos_id,
            banned_ids=[pad], sentence_ids=sentence_ids, max_sentences=settings["max_sentences"], pad_id=pad,
            generator=generator, words=words)

    def save(self, folder: Path, tokenizer) -> None:
        from safetensors.torch import save_model

        with write_dir(folder) as tmp:  # written whole or not at all
            save_model(self, str(tmp / "model.safetensors"))
            tokenizer.save_pretrained(tmp)
            write_spec(tmp, self.adapter, {"objective": self.objective, **self.settings})


def load_ours(model, folder: Path, device: str):
    from safetensors.torch import load_model
    from transformers import AutoTokenizer

    with loading(folder):
        load_model(model, str(folder / "model.safetensors"), device="cpu")
        return model.to(device).eval(), AutoTokenizer.from_pretrained(folder)


class StoryCausalLM(OurDecoding, CausalLM):
    """CausalLM over whole stories, `<eos> first sentence rest <eos>`, generating with a key/value cache:
    each new token runs through the layers once against the cached keys/values of the tokens before it."""

    objective = "causal_lm"

    def __init__(self, *args, bos_id: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.settings["bos_id"] = self.bos_id = bos_id

    # training and scoring: rows are prompt + target (+ eos); every next token is a target in training
    def examples(self, pairs, train: bool):
        return [{"ids": [self.bos_id] + p + t, "first": 1 + (0 if train else len(p))} for p, t in pairs]

    def collate(self, items):
        ids = pad_rows([it["ids"][: self.max_len] for it in items], self.embed.tok.padding_idx)
        first = torch.tensor([it["first"] for it in items])
        return {"ids": ids, "labels": lm_labels(ids, self.embed.tok.padding_idx, first)}

    def scores(self, batch):
        return self(batch["ids"]), batch["labels"]

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

    def fit_positions(self, rows, max_new: int):
        return fit_decoder_positions(rows, max_new, self.max_len)

    def advance(self, state, next_ids):
        pos = state[0].size(2)
        caches = [(state[2 * i], state[2 * i + 1]) for i in range(len(self.layers))]
        logits, kv = self._run(next_ids[:, None], caches, pos)
        return logits, tuple(kv)


class StoryNextToken(OurDecoding, WindowStepper, nn.Module):
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

    def fit_positions(self, rows, max_new: int):
        return rows, max_new  # it re-reads a window: no limit

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

    def scores(self, batch):
        return self(batch["ids"]), batch["labels"]


def build(m, task, train_texts):
    """(byte-level BPE trained on the training stories, model); one extra id past the tokenizer's pads.
    m: config.StoryTransformer; task: what m.task() names (BPE size, and the window or the positions)."""
    tok = train_byte_bpe(train_texts, int(task.bpe_vocab_size))
    vocab_size, pad_id, bos_id = len(tok) + 1, len(tok), tok.eos_token_id
    common = dict(d_model=m.d_model, num_layers=m.num_layers, num_heads=m.num_heads, d_ff=m.d_ff, dropout=m.dropout,
                  pad_id=pad_id, bos_id=bos_id)
    if m.objective == "causal_lm":
        return Built(tok, StoryCausalLM(vocab_size, max_len=int(task.max_len), **common))
    return Built(tok, StoryNextToken(vocab_size, window=int(task.window), **common))


def load(folder: Path, device: str):
    with loading(folder):
        spec = read_spec(folder)["spec"]
        model = (StoryCausalLM if spec.pop("objective") == "causal_lm" else StoryNextToken)(**spec)
    return load_ours(model, folder, device)


def pretrained(m, device: str):
    raise UserError(f"model={m.name} has no pretrained weights to generate with: pass ckpt=<run folder> "
                    "of a trained task=story run")
