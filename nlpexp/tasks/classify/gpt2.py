"""GPT2ForSequenceClassification (model=gpt2 on the classification tasks), trained by the Trainer loop of
trainer.py: hub `gpt2` with its byte-level BPE, or (model.pretrained=null) a small GPT-2 from `model.small` with a
byte-level BPE trained on the training texts."""
from pathlib import Path

from nlpexp.inputs.hub import builds_small, load_pretrained, small_gpt2_config, train_byte_bpe
from nlpexp.tasks.classify import hf, trainer
from nlpexp.tasks.classify.config import GPT2Classifier
from nlpexp.tasks.classify.contract import FitRun


def build_classifier(model_cfg: GPT2Classifier, labels: list[str], train_texts, max_length: int):
    """(tokenizer, GPT2ForSequenceClassification). GPT-2 has no pad token: padding is end-of-text, and the
    config's pad_token_id tells the head to read the last token before the padding."""
    from transformers import GPT2ForSequenceClassification

    names = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
             "label2id": {name: i for i, name in enumerate(labels)}}
    if builds_small(model_cfg):
        tokenizer = train_byte_bpe(train_texts, int(model_cfg.small.vocab_size or 2000))
        config = small_gpt2_config(model_cfg.small, len(tokenizer), max(int(max_length), 64), tokenizer.eos_token_id,
                                   tokenizer.pad_token_id, **names)
        return tokenizer, GPT2ForSequenceClassification(config)
    # its own head if the checkpoint has one (trainer.fit maps it to the task's labels by name), else a fresh one
    tokenizer, model = load_pretrained(model_cfg.pretrained, GPT2ForSequenceClassification, model_cfg.revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model


def fit(model: GPT2Classifier, run: FitRun, labels: list[str], splits):
    return trainer.fit(model, run, labels, splits, build_model=build_classifier, pretrained_head=True,
                       lora_cfg=model.lora)


def tokenizer(model: GPT2Classifier, run: FitRun, labels: list[str], train_texts):
    """The tokenizer fit encodes with (mode=prepare)."""
    return trainer.fit_tokenizer(model, run, labels, train_texts, build_classifier, lora_cfg=model.lora)


def load(folder: Path, device: str) -> trainer.TorchClassifier:
    return hf.load(folder, device)  # a plain GPT2ForSequenceClassification folder
