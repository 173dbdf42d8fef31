"""GPT-2 as a next-token model: hub `gpt2` with its byte-level BPE, or (model.pretrained=null) a small
GPT2Config built from `model.small` over a character vocabulary from the training text.

Saved as safetensors + JSON (the GPT2 config) + the vocabulary (vocab.json) or the BPE tokenizer files.
"""
from pathlib import Path

from torch import nn

from nlpexp.decoding import WindowStepper
from nlpexp.models.hf import hub_error
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
    from transformers import AutoTokenizer

    try:
        return BPECodec(AutoTokenizer.from_pretrained(str(model_cfg.pretrained)))
    except (OSError, ValueError, ConnectionError) as err:
        raise hub_error(str(model_cfg.pretrained), err) from None


def novel_model(model_cfg, vocab, seq_len: int, smoke: bool = False) -> GPT2NextToken:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    if _small(model_cfg, smoke):
        small = model_cfg.small
        config = GPT2Config(vocab_size=len(vocab), n_positions=seq_len, n_embd=small.hidden_size,
                            n_layer=small.num_hidden_layers, n_head=small.num_attention_heads,
                            bos_token_id=vocab.cls_id, eos_token_id=vocab.cls_id,
                            pad_token_id=vocab.pad_id)
        return GPT2NextToken(config, seq_len)
    try:
        lm = GPT2LMHeadModel.from_pretrained(str(model_cfg.pretrained), dtype=torch.float32)
    except (OSError, ValueError, ConnectionError) as err:
        raise hub_error(str(model_cfg.pretrained), err) from None
    return GPT2NextToken(lm.config, seq_len, lm=lm)


def from_spec(spec: dict) -> GPT2NextToken:
    from transformers import GPT2Config

    return GPT2NextToken(GPT2Config.from_dict(spec["gpt2_config"]), spec["window"])


# --- classification: GPT2ForSequenceClassification (task=finsent / emotion, model=gpt2), trained as hf.py does ---

def build_classifier(model_cfg, labels: list[str], train_texts, max_length: int, smoke: bool = False):
    """(tokenizer, GPT2ForSequenceClassification). GPT-2 has no pad token: padding is end-of-text, and the
    config's pad_token_id tells the head to read the last token before the padding."""
    import torch
    from transformers import AutoTokenizer, GPT2ForSequenceClassification

    names = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
             "label2id": {name: i for i, name in enumerate(labels)}}
    if _small(model_cfg, smoke):
        tokenizer = train_byte_bpe(train_texts, int(model_cfg.small.get("vocab_size") or 2000))
        config = small_config(model_cfg.small, tokenizer, max(int(max_length), 64), **names)
        return tokenizer, GPT2ForSequenceClassification(config)
    name = str(model_cfg.pretrained)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = GPT2ForSequenceClassification.from_pretrained(name, dtype=torch.float32, **names)
    except (OSError, ValueError, ConnectionError) as err:
        raise hub_error(name, err) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model


def fit(cfg, labels: list[str], splits, run_dir: Path, device: str):
    from nlpexp.models import hf

    return hf.fit(cfg, labels, splits, run_dir, device, build_fn=build_classifier)


def load(folder: Path, device: str, max_length: int = 128):
    from nlpexp.models import hf

    return hf.load(folder, device, max_length)
