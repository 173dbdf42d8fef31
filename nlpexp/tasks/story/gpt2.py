"""GPT-2 on task=story: fine-tuned on `first sentence + rest + <|endoftext|>` (`trainer.epochs=0`: zero-shot),
generating through transformers' `generate` under nlpexp.training.decoding's processors, the controls our models use.
Hub `gpt2` with its BPE, or (model.pretrained=null) a small GPT-2 from `model.small` over a byte-level BPE
trained on the stories."""
from pathlib import Path

from torch import nn

from nlpexp.inputs.hub import builds_small, pretrained_model, pretrained_tokenizer, small_gpt2_config, train_byte_bpe
from nlpexp.runs import loading, write_dir
from nlpexp.tasks.story.contract import Built, batches_in_order, fit_decoder_positions, write_spec



def freeze_layers(lm, n: int) -> None:
    """Freeze the token and position embeddings and the first n blocks (0: train everything). GPT-2 ties its
    output layer to the token embeddings, so the output layer stays frozen with them."""
    if n <= 0:
        return
    for module in [lm.transformer.wte, lm.transformer.wpe, *lm.transformer.h[:n]]:
        for p in module.parameters():
            p.requires_grad_(False)


class StoryGPT2(nn.Module):
    objective = "causal_lm"

    def __init__(self, lm, tokenizer):
        super().__init__()
        self.lm, self.tokenizer = lm, tokenizer
        self.eos_id = tokenizer.eos_token_id
        self.max_len = lm.config.n_positions

    def examples(self, pairs, train: bool):
        return [{"ids": (p + t + [self.eos_id])[: self.max_len], "first": 0 if train else len(p)} for p, t in pairs]

    def collate(self, items):
        import torch

        width = max(len(it["ids"]) for it in items)
        ids = torch.full((len(items), width), self.eos_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for r, it in enumerate(items):
            n = len(it["ids"])
            ids[r, :n] = torch.tensor(it["ids"])
            attn[r, :n] = 1
            # labels[t] = ids[t+1]: the token after position t, from the first scored one on
            labels[r, max(it["first"] - 1, 0):n - 1] = ids[r, max(it["first"], 1):n]
        return {"ids": ids, "attention_mask": attn, "labels": labels}

    def scores(self, batch):
        return self.lm(input_ids=batch["ids"], attention_mask=batch["attention_mask"], use_cache=False).logits, \
            batch["labels"]

    def prompt_groups(self, prompts, batch_size: int):
        return batches_in_order(prompts, batch_size)  # left-padded under an attention mask

    def fit_positions(self, rows, max_new: int):
        return fit_decoder_positions(rows, max_new, self.max_len)

    def continue_ids(self, rows, max_new: int, settings: dict, *, sentence_ids, words, eos_id: int, seed: int,
                     generator):
        """transformers' generate (its key/value cache) under training.decoding's processors of the same settings."""
        from nlpexp.training import decoding

        return decoding.hf_generate(self.lm, rows, max_new, **decoding.controls(settings), pad_id=self.eos_id,
                                    eos_id=self.eos_id, sentence_ids=sentence_ids,
                                    max_sentences=settings["max_sentences"], words=words, seed=seed)

    # training.decoding's start/advance over transformers' key/value cache, for prompts of one length (no padding):
    # our generate can drive GPT-2 too, and tests check it writes what transformers' generate writes
    def start(self, prompt_ids, stateful: bool = True):
        return self._step(prompt_ids, ())

    def advance(self, state, next_ids):
        return self._step(next_ids[:, None], state)

    def _step(self, ids, state):
        """Logits after `ids` and the cache as a flat tuple (k0, v0, k1, v1 ...), batch first: beams index it."""
        from transformers import DynamicCache

        cache = DynamicCache(list(zip(state[::2], state[1::2]))) if state else None
        out = self.lm(input_ids=ids, cache=cache, use_cache=True)
        return out.logits[:, -1], tuple(t for layer in out.cache.layers for t in (layer.keys, layer.values))

    def save(self, folder: Path, tokenizer=None) -> None:
        with write_dir(folder) as tmp:  # written whole or not at all
            self.lm.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            write_spec(tmp, "gpt2", {})


def build(m, task, train_texts):
    """(tokenizer, StoryGPT2): the hub model with its BPE, or a small GPT-2 over a BPE trained on the stories.
    m: config.StoryGPT2; task: what m.task() names (a small-built one reads the BPE size and positions)."""
    from transformers import GPT2LMHeadModel

    if builds_small(m):
        tok = train_byte_bpe(train_texts, int(task.bpe_vocab_size))
        lm = GPT2LMHeadModel(small_gpt2_config(m.small, len(tok), int(task.max_len), tok.eos_token_id,
                                               tok.pad_token_id))
    else:
        tok = pretrained_tokenizer(m.pretrained, m.revision)
        lm = pretrained_model(m.pretrained, GPT2LMHeadModel, m.revision)
    freeze_layers(lm, int(m.freeze_layers))
    return Built(tok, StoryGPT2(lm, tok))


def load(folder: Path, device: str):
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel

    with loading(folder):
        lm = GPT2LMHeadModel.from_pretrained(folder, dtype=torch.float32, use_safetensors=True)
        model = StoryGPT2(lm, AutoTokenizer.from_pretrained(folder))
        return model.to(device).eval(), model.tokenizer


def pretrained(m, device: str):
    """The configured pretrained GPT-2 as it is (mode=generate without ckpt; m: config.PretrainedModel)."""
    from transformers import GPT2LMHeadModel

    from nlpexp.errors import UserError

    if not m.pretrained:
        raise UserError("model.pretrained=null has no weights to generate with: pass ckpt=<run folder> of a trained "
                        "task=story run, or model.pretrained=<hub id or folder>")
    tok = pretrained_tokenizer(m.pretrained, m.revision)
    model = StoryGPT2(pretrained_model(m.pretrained, GPT2LMHeadModel, m.revision), tok)
    return model.to(device).eval(), tok
