"""HF encoders (BERT, FinBERT, MiniLM, Chinese BERT) with a sequence-classification head, trained by the Trainer
loop of trainer.py.

`model.pretrained` is a hub id, a local folder, or a packaged model name; null builds the same BERT
architecture small from `model.small` with a WordPiece tokenizer trained on the training texts.
"""
from pathlib import Path

from nlpexp.inputs.hub import builds_small, load_pretrained, small_bert_config, train_wordpiece
from nlpexp.runs import load_error, loading
from nlpexp.tasks.classify import lora, trainer
from nlpexp.tasks.classify.config import HFClassifier
from nlpexp.tasks.classify.contract import FitRun


def build(model_cfg: HFClassifier, labels: list[str], train_texts, max_length: int):
    """(tokenizer, model) for sequence classification with len(labels) outputs."""
    from transformers import AutoModelForSequenceClassification

    id2label = dict(enumerate(labels))
    label2id = {name: i for i, name in enumerate(labels)}
    if builds_small(model_cfg):
        small = model_cfg.small
        tokenizer = train_wordpiece(train_texts, small.vocab_size)
        config = small_bert_config(small, len(tokenizer), tokenizer.pad_token_id, max(max_length, 64) + 2,
                                   num_labels=len(labels), id2label=id2label, label2id=label2id)
        return tokenizer, AutoModelForSequenceClassification.from_config(config)
    # with its own head as saved (its labels, its order: trainer.fit maps it to the task's labels by name), or a
    # fresh one when the checkpoint has none
    return load_pretrained(model_cfg.pretrained, AutoModelForSequenceClassification, model_cfg.revision)


def fit(model: HFClassifier, run: FitRun, labels: list[str], splits):
    return trainer.fit(model, run, labels, splits, build_model=build, keep_whole=True, pretrained_head=True,
                       probe_head=model.head_init == "probe", lora_cfg=model.lora)


def tokenizer(model: HFClassifier, run: FitRun, labels: list[str], train_texts):
    """The tokenizer fit encodes with (mode=prepare)."""
    return trainer.fit_tokenizer(model, run, labels, train_texts, build, keep_whole=True, lora_cfg=model.lora)


def load(folder: Path, device: str) -> trainer.TorchClassifier:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    with loading(folder):
        if lora.is_adapter(folder):  # model.lora.r > 0, not merged: the adapter on its base model
            model = lora.load(folder, AutoModelForSequenceClassification)
        else:
            model, info = AutoModelForSequenceClassification.from_pretrained(
                folder, use_safetensors=True, trust_remote_code=False, output_loading_info=True)
            unloaded = [*info.get("missing_keys", []), *info.get("mismatched_keys", [])]
            if unloaded:  # config.json of another architecture than the weights: they would be drawn at random
                raise load_error(folder, f"{len(unloaded)} weights of its config.json's {model.config.model_type} are "
                                         f"not in model.safetensors (e.g. {sorted(map(str, unloaded))[0]})")
        return trainer.TorchClassifier(AutoTokenizer.from_pretrained(folder), model, device,
                                       trainer.saved_max_length(folder), trainer.saved_precision(folder, device))
