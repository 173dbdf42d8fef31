"""BERT as a masked-LM prompt classifier (model=bert_chinese_mlm).

Every text goes into the prompt `model.prompt` (`{text}`, `{choices}`; it ends in [MASK]); each label is answered
by one token: itself when it is one (a Chinese label character), else its first token (answer_ids). Training: the
answer position is masked and the masked-LM head learns the gold label's token there (a cross-entropy over the
whole vocabulary), and `model.mlm_probability` of the other prompt tokens are masked too and predicted as in
BERT's pre-training: masked-LM training on the filled prompt. Prediction: the label tokens' scores at [MASK],
softmaxed among themselves. `model.pretrained` is a hub id or folder
(bert-base-chinese); null builds a small BERT from `model.small` with a character-level WordPiece vocabulary
trained on the training texts and the prompt. Trained by trainer.py's Trainer loop; saved with
save_pretrained (the prompt and label characters live in the model config).
"""
from pathlib import Path

import torch

from nlpexp.errors import UserError
from nlpexp.inputs.hub import builds_small, load_pretrained, small_bert_config, train_wordpiece
from nlpexp.runs import loading
from nlpexp.tasks.classify import trainer
from nlpexp.tasks.classify.config import MLMPromptClassifier
from nlpexp.tasks.classify.contract import FitRun


class PromptTokenizer:
    """The tokenizer with the prompt put around every text first; everything else is the wrapped tokenizer's.

    The text is cut (by characters, which are never fewer than tokens) so that the prompt and its [MASK] always
    fit in max_length: plain truncation would cut the answer slot off the end."""

    def __init__(self, tokenizer, template: str, choices: str, max_length: int):
        self.tokenizer, self.template, self.choices = tokenizer, template, choices
        overhead = len(tokenizer(self.fill(""))["input_ids"])
        self.room = max_length - overhead
        if self.room < 8:
            raise UserError(f"trainer.max_length={max_length} leaves {self.room} tokens for the text after the "
                            f"{overhead}-token prompt; raise trainer.max_length")

    def fill(self, text: str) -> str:
        return self.template.format(text=text, choices=self.choices)

    def __call__(self, texts, **kwargs):
        if isinstance(texts, str):
            return self.tokenizer(self.fill(texts[: self.room]), **kwargs)
        return self.tokenizer([self.fill(str(t)[: self.room]) for t in texts], **kwargs)

    def __getattr__(self, name):
        if name == "tokenizer":
            raise AttributeError(name)
        return getattr(self.tokenizer, name)

    def __len__(self) -> int:
        return len(self.tokenizer)


def prompt_mlm_class():
    """BertForMaskedLM whose forward scores the labels at [MASK] (a class built on first use: heavy import)."""
    from transformers import BertForMaskedLM
    from transformers.modeling_outputs import SequenceClassifierOutput

    class BertPromptMLM(BertForMaskedLM):
        def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
            cfg = self.config
            label_ids = torch.as_tensor(cfg.prompt_label_ids, device=input_ids.device)
            rows = torch.arange(input_ids.size(0), device=input_ids.device)
            answer = (input_ids == cfg.prompt_mask_id).int().argmax(dim=1)  # the prompt's (first) [MASK]
            ids, targets = input_ids, None
            if labels is not None and self.training and cfg.prompt_mlm_probability > 0:
                ids, targets = self.mask_tokens(input_ids, attention_mask, answer)
            hidden = self.bert(input_ids=ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).last_hidden_state
            vocab_logits = self.cls(hidden[rows, answer])
            logits = vocab_logits[:, label_ids]
            loss = None
            if labels is not None:
                loss = torch.nn.functional.cross_entropy(vocab_logits, label_ids[labels])
                if targets is not None and (targets >= 0).any():
                    picked = targets >= 0
                    loss = loss + torch.nn.functional.cross_entropy(self.cls(hidden[picked]), targets[picked])
            return SequenceClassifierOutput(loss=loss, logits=logits)

        def mask_tokens(self, input_ids, attention_mask, answer):
            """BERT's 80/10/10 masking of `prompt_mlm_probability` of the real, non-special tokens."""
            cfg = self.config
            real = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=bool)
            for special in cfg.prompt_special_ids:
                real &= input_ids != special
            real[torch.arange(input_ids.size(0)), answer] = False
            picked = real & (torch.rand(input_ids.shape, device=input_ids.device) < cfg.prompt_mlm_probability)
            targets = torch.where(picked, input_ids, torch.full_like(input_ids, -100))
            draw = torch.rand(input_ids.shape, device=input_ids.device)
            ids = input_ids.clone()
            ids[picked & (draw < 0.8)] = cfg.prompt_mask_id
            swap = picked & (draw >= 0.8) & (draw < 0.9)
            ids[swap] = torch.randint(len(cfg.prompt_special_ids), cfg.vocab_size, (int(swap.sum()),),
                                      device=ids.device)
            return ids, targets

    return BertPromptMLM


def answer_ids(tokenizer, labels: list[str], name) -> list[int]:
    """The vocabulary entry that answers for each label at [MASK]: the label itself when it is one token (a
    Chinese label character), else its first token (pos -> "po"); two labels with one answer are refused."""
    ids = []
    for label in labels:
        whole = tokenizer.convert_tokens_to_ids(label)
        pieces = tokenizer.tokenize(label)
        ids.append(whole if whole != tokenizer.unk_token_id or not pieces else
                   tokenizer.convert_tokens_to_ids(pieces[0]))
    if tokenizer.unk_token_id in ids:
        raise UserError(f"label characters missing from the {name or 'trained'} vocabulary: "
                        f"{', '.join(n for n, i in zip(labels, ids) if i == tokenizer.unk_token_id)}")
    shared = [label for label, i in zip(labels, ids) if ids.count(i) > 1]
    if shared:
        raise UserError(f"model=bert_chinese_mlm answers each label with one token, and labels "
                        f"{', '.join(shared)} start with the same one "
                        f"({tokenizer.convert_ids_to_tokens(ids[labels.index(shared[0])])}): rename them "
                        "(data.label_map) or use another model")
    return ids


def build(model_cfg: MLMPromptClassifier, labels: list[str], train_texts, max_length: int):
    """(PromptTokenizer, BertPromptMLM) for trainer.fit."""

    template, choices = str(model_cfg.prompt), "、".join(labels)
    cls = prompt_mlm_class()
    name = model_cfg.pretrained
    if builds_small(model_cfg):
        small = model_cfg.small
        # the prompt's and the labels' characters are in the vocabulary even when the training texts lack them
        tokenizer = train_wordpiece(list(train_texts) + [template.format(text="", choices=choices)] + labels,
                                    small.vocab_size)
        config = small_bert_config(small, len(tokenizer), tokenizer.pad_token_id, max(max_length, 64) + 2)
        model = cls(config)
    else:
        tokenizer, model = load_pretrained(name, cls, model_cfg.revision)
    label_ids = answer_ids(tokenizer, labels, name)
    if "[MASK]" not in template or "{text}" not in template:
        raise UserError("model.prompt must contain {text} and [MASK]")
    model.config.update({"prompt": template, "prompt_labels": list(labels), "prompt_label_ids": label_ids,
                         "prompt_mask_id": tokenizer.mask_token_id, "prompt_max_length": max_length,
                         "prompt_special_ids": sorted(set(tokenizer.all_special_ids)),
                         "prompt_mlm_probability": float(model_cfg.mlm_probability)})
    model.config.num_labels = len(labels)
    return PromptTokenizer(tokenizer, template, choices, max_length), model


def fit(model: MLMPromptClassifier, run: FitRun, labels: list[str], splits):
    return trainer.fit(model, run, labels, splits, build_model=build)


def load(folder: Path, device: str) -> trainer.TorchClassifier:
    from transformers import AutoTokenizer

    with loading(folder):
        model = prompt_mlm_class().from_pretrained(folder, use_safetensors=True)
        cfg = model.config
        tokenizer = PromptTokenizer(AutoTokenizer.from_pretrained(folder), cfg.prompt, "、".join(cfg.prompt_labels),
                                    cfg.prompt_max_length)
        return trainer.TorchClassifier(tokenizer, model, device, cfg.prompt_max_length,
                                       trainer.saved_precision(folder, device))
