"""GPT-2 as a next-token model (task=novel): hub `gpt2` with its byte-level BPE, or (model.pretrained=null) a
small GPT2Config built from `model.small` over a character vocabulary from the training text.

Saved as safetensors + JSON (the GPT2 config) + the vocabulary (vocab.json) or the BPE tokenizer files.
"""

from torch import nn

from nlpexp.training.decoding import WindowStepper
from nlpexp.inputs.hub import builds_small, pretrained_model, pretrained_tokenizer, small_gpt2_config
from nlpexp.tasks.novel.data import BPECodec, CharVocab


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
        return {"gpt2_config": self.lm.config.to_dict(), "window": self.window}


def codec(m, train_text: str, data_cfg):
    """m: config.NextCharGPT2."""
    if builds_small(m):
        return CharVocab.from_text(train_text, int(data_cfg.min_freq), data_cfg.get("max_vocab"))
    return BPECodec(pretrained_tokenizer(m.pretrained, m.revision))


def build(m, vocab, seq_len: int) -> GPT2NextToken:
    from transformers import GPT2LMHeadModel

    if builds_small(m):
        return GPT2NextToken(small_gpt2_config(m.small, len(vocab), seq_len, vocab.cls_id, vocab.pad_id), seq_len)
    lm = pretrained_model(m.pretrained, GPT2LMHeadModel, m.revision)
    return GPT2NextToken(lm.config, seq_len, lm=lm)


def from_spec(spec: dict) -> GPT2NextToken:
    from transformers import GPT2Config

    return GPT2NextToken(GPT2Config.from_dict(spec["gpt2_config"]), spec["window"])
