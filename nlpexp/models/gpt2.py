"""GPT-2 as a next-token model: hub `gpt2` with its byte-level BPE, or (model.pretrained=null) a small
GPT2Config built from `model.small` over a character vocabulary from the training text.

Saved as safetensors + JSON (the GPT2 config) + the vocabulary (vocab.json) or the BPE tokenizer files.
"""
from pathlib import Path

from torch import nn

from nlpexp.decoding import WindowStepper
from nlpexp.models.hf import load_pretrained, pretrained_model, pretrained_tokenizer
from nlpexp.runtime import is_hub_id


class BPECodec:
    """A hub tokenizer behind the same calls as CharVocab (encode, decode, len, special ids, save)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.unk_id = tokenizer.unk_token_id
        self.special_ids = sorted(set(tokenizer.all_special_ids))

    def __len__(self) -> int:
        return len(self.tokenizer)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids, skip_special: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special)

    def save(self, folder: Path) -> None:
        self.tokenizer.save_pretrained(folder)

    @classmethod
    def load(cls, folder: Path) -> "BPECodec":
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(folder))


class GPT2NextToken(WindowStepper, nn.Module):
    causal = True

    def __init__(self, config, window: int, lm=None):
        from transformers import GPT2LMHeadModel

        super().__init__()
        self.window = window
        self.lm = lm if lm is not None else GPT2LMHeadModel(config)

    def forward(self, ids):
        """(B, T) ids -> (B, T, vocab) logits."""
        return self.lm(input_ids=ids, use_cache=False).logits

    def spec(self) -> dict:
        return {"family": "gpt2", "gpt2_config": self.lm.config.to_dict(), "window": self.window}


EOS = "<|endoftext|>"


def train_byte_bpe(texts, vocab_size: int):
    """A GPT-2-style byte-level BPE tokenizer trained on `texts` (the offline stand-in for the hub vocabulary).

    `<|endoftext|>` is end-of-text, start and padding, as in GPT-2. tokenizers' BpeTrainer is deterministic
    (the same texts give the same merges in every process: checked across runs)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([str(t) for t in texts], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS, pad_token=EOS)


def small_config(small, tokenizer, n_positions: int, **extra):
    """GPT2Config from `model.small` (hidden_size, num_hidden_layers, num_attention_heads) over `tokenizer`."""
    from transformers import GPT2Config

    return GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=small.hidden_size,
                      n_layer=small.num_hidden_layers, n_head=small.num_attention_heads,
                      bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id, **extra)


def _small(model_cfg, smoke: bool) -> bool:
    name = model_cfg.get("pretrained")
    return name is None or (smoke and is_hub_id(name))


def novel_codec(model_cfg, train_text: str, data_cfg, smoke: bool = False):
    if _small(model_cfg, smoke):
        from nlpexp.data.novel import CharVocab

        return CharVocab.from_text(train_text, int(data_cfg.min_freq), data_cfg.get("max_vocab"))
    return BPECodec(pretrained_tokenizer(model_cfg.pretrained))


def novel_model(model_cfg, vocab, seq_len: int, smoke: bool = False) -> GPT2NextToken:
    from transformers import GPT2Config, GPT2LMHeadModel

    if _small(model_cfg, smoke):
        small = model_cfg.small
        config = GPT2Config(vocab_size=len(vocab), n_positions=seq_len, n_embd=small.hidden_size,
                            n_layer=small.num_hidden_layers, n_head=small.num_attention_heads,
                            bos_token_id=vocab.cls_id, eos_token_id=vocab.cls_id,
                            pad_token_id=vocab.pad_id)
        return GPT2NextToken(config, seq_len)
    lm = pretrained_model(model_cfg.pretrained, GPT2LMHeadModel)
    return GPT2NextToken(lm.config, seq_len, lm=lm)


def from_spec(spec: dict) -> GPT2NextToken:
    from transformers import GPT2Config

    return GPT2NextToken(GPT2Config.from_dict(spec["gpt2_config"]), spec["window"])


# -- task=story: GPT-2 fine-tuned on `first sentence + rest + <|endoftext|>`, generating through `generate` ----
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

    def nll_sum(self, batch):
        logits = self.lm(input_ids=batch["ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        return nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), batch["labels"].reshape(-1),
                                           ignore_index=-100, reduction="sum")

    def hf_generate(self, prompts: list[list[int]], max_new_tokens: int, *, strategy="sample", temperature=1.0,
                    top_k=0, top_p=1.0, num_beams=4, repetition_penalty=1.0, no_repeat_ngram_size=0,
                    sentence_ids=(), max_sentences=0, seed=0, words=None, **_) -> list[list[int]]:
        """transformers' generate (with its key/value cache) under the same controls as nlpexp.decoding.generate."""
        import torch
        from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

        from nlpexp.decoding import ban_empty_sentences

        width = max(len(p) for p in prompts)
        device = next(self.lm.parameters()).device
        ids = torch.tensor([[self.eos_id] * (width - len(p)) + p for p in prompts], device=device)
        attn = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        ends = torch.zeros(len(self.tokenizer), dtype=torch.bool, device=device)
        ends[list(sentence_ids)] = True

        class SentencesDone(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                new = input_ids[:, width:]
                return ends[new].sum(dim=1) >= max_sentences if max_sentences else torch.zeros(
                    len(input_ids), dtype=torch.bool, device=input_ids.device)

        sentence_set, word_set = set(sentence_ids), set(words) if words is not None else None
        eos = self.eos_id

        class NoEmptySentence(LogitsProcessor):
            def __call__(self, input_ids, scores):
                ban_empty_sentences(scores, input_ids[:, width:].tolist(), sentence_set, word_set, eos)
                return scores

        kwargs = {"max_new_tokens": max_new_tokens, "logits_processor": LogitsProcessorList([NoEmptySentence()]),
                  "repetition_penalty": float(repetition_penalty),
                  "no_repeat_ngram_size": int(no_repeat_ngram_size), "eos_token_id": self.eos_id,
                  "pad_token_id": self.eos_id, "stopping_criteria": StoppingCriteriaList([SentencesDone()])}
        if strategy == "sample":
            kwargs.update(do_sample=True, temperature=float(temperature), top_k=int(top_k), top_p=float(top_p))
        else:
            kwargs.update(do_sample=False, num_beams=int(num_beams) if strategy == "beam" else 1,
                          temperature=None, top_k=None, top_p=None)
        torch.manual_seed(int(seed))
        with torch.no_grad():
            out = self.lm.generate(input_ids=ids, attention_mask=attn, **kwargs)[:, width:].tolist()
        return [row[: row.index(self.eos_id)] if self.eos_id in row else row for row in out]

    def save(self, folder: Path) -> None:
        self.lm.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)


def story_tokenizer(model_cfg, texts, vocab_size: int, smoke: bool = False):
    if _small(model_cfg, smoke):
        return train_byte_bpe(texts, vocab_size)
    return pretrained_tokenizer(model_cfg.pretrained)


def story_model(model_cfg, tokenizer, task_cfg, smoke: bool = False) -> StoryGPT2:
    from transformers import GPT2LMHeadModel

    if _small(model_cfg, smoke):
        lm = GPT2LMHeadModel(small_config(model_cfg.small, tokenizer, int(task_cfg.max_len)))
    else:
        lm = pretrained_model(model_cfg.pretrained, GPT2LMHeadModel)
    freeze_layers(lm, int(model_cfg.get("freeze_layers") or 0))
    return StoryGPT2(lm, tokenizer)


def story_load(folder: Path) -> StoryGPT2:
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel

    lm = GPT2LMHeadModel.from_pretrained(folder, dtype=torch.float32)
    return StoryGPT2(lm, AutoTokenizer.from_pretrained(folder))


# --- classification: GPT2ForSequenceClassification (task=finsent / emotion, model=gpt2), trained as hf.py does ---

def build_classifier(model_cfg, labels: list[str], train_texts, max_length: int, smoke: bool = False):
    """(tokenizer, GPT2ForSequenceClassification). GPT-2 has no pad token: padding is end-of-text, and the
    config's pad_token_id tells the head to read the last token before the padding."""
    from transformers import GPT2ForSequenceClassification

    names = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
             "label2id": {name: i for i, name in enumerate(labels)}}
    if _small(model_cfg, smoke):
        tokenizer = train_byte_bpe(train_texts, int(model_cfg.small.get("vocab_size") or 2000))
        config = small_config(model_cfg.small, tokenizer, max(int(max_length), 64), **names)
        return tokenizer, GPT2ForSequenceClassification(config)
    tokenizer, model = load_pretrained(model_cfg.pretrained, GPT2ForSequenceClassification, **names)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model


def fit(cfg, labels: list[str], splits, run_dir: Path, device: str):
    from nlpexp.models import hf

    return hf.fit(cfg, labels, splits, run_dir, device, build_model=build_classifier)


def load(folder: Path, device: str, max_length: int = 128):
    from nlpexp.models import hf

    return hf.load(folder, device, max_length)
