"""BERT encoder with a classification head: `bert_fc` (pooled [CLS] -> MLP) and `bert_lstm` (LSTM over the hidden
states), trained by the Trainer loop of trainer.py; saved as model.safetensors + classifier.json (the BERT config
and the head's settings) + the tokenizer files.

`model.pretrained` is a hub id, folder or packaged name; null builds a small BERT from `model.small` with a
WordPiece vocabulary trained on the training texts.
"""
from pathlib import Path

import torch
from torch import nn

from nlpexp.inputs.hub import builds_small, load_pretrained, small_bert_config, train_wordpiece
from nlpexp.models.bert import freeze_encoder
from nlpexp.training.precision import run_lstm
from nlpexp.runs import loading
from nlpexp.tasks.classify import trainer
from nlpexp.tasks.classify.config import BertHeadClassifier, BertLSTMClassifier
from nlpexp.tasks.classify.contract import FitRun


class BertClassifier(nn.Module):
    """bert_fc: pooled [CLS] -> Linear(hidden, fc_hidden) -> ReLU -> Dropout -> Linear(labels).
    bert_lstm: the encoder's hidden states -> LSTM -> Linear(labels), read at each text's last non-pad position
    (batches are right-padded, so the LSTM has seen exactly the text's tokens there).
    `multi_label`: one independent sigmoid per label (trainer.set_multi_label marks a model built for
    task.multi_label; classifier.json keeps it), read by TorchClassifier from config.problem_type as for HF models."""

    def __init__(self, bert_config, head: str, num_labels: int, fc_hidden: int = 200, lstm_hidden: int = 256,
                 lstm_layers: int = 1, dropout: float = 0.1, bert=None, multi_label: bool = False):
        from transformers import BertModel, PretrainedConfig

        super().__init__()
        self.head = head
        self.settings = {"head": head, "num_labels": num_labels, "fc_hidden": fc_hidden, "lstm_hidden": lstm_hidden,
                         "lstm_layers": lstm_layers, "dropout": dropout}
        self.bert = bert if bert is not None else BertModel(bert_config, add_pooling_layer=head == "fc")
        self.config = PretrainedConfig(num_labels=num_labels)  # what TorchClassifier reads
        if multi_label:
            trainer.set_multi_label(self)
        hidden = self.bert.config.hidden_size
        if head == "fc":
            self.fc = nn.Sequential(nn.Linear(hidden, fc_hidden), nn.ReLU(), nn.Dropout(dropout),
                                    nn.Linear(fc_hidden, num_labels))
        else:
            self.lstm = nn.LSTM(hidden, lstm_hidden, num_layers=lstm_layers, batch_first=True,
                                dropout=dropout if lstm_layers > 1 else 0.0)
            self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(lstm_hidden, num_labels))

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        from transformers.modeling_outputs import SequenceClassifierOutput

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        if self.head == "fc":
            logits = self.fc(out.pooler_output)
        else:
            states, _ = run_lstm(self.lstm, out.last_hidden_state)
            last = attention_mask.sum(dim=1) - 1
            logits = self.out(states[torch.arange(states.size(0), device=states.device), last])
        if labels is None:
            loss = None
        elif labels.is_floating_point() and labels.dim() == 2:  # multi-hot rows (task.multi_label)
            loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        else:
            loss = nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def save_pretrained(self, folder) -> None:
        import json

        from safetensors.torch import save_model

        Path(folder).mkdir(parents=True, exist_ok=True)
        save_model(self, str(Path(folder) / "model.safetensors"))
        spec = {"bert_config": self.bert.config.to_dict(), **self.settings,
                "multi_label": trainer.is_multi_label(self)}
        (Path(folder) / "classifier.json").write_text(json.dumps(spec, indent=1))


def build_classifier(model_cfg: BertHeadClassifier | BertLSTMClassifier, labels: list[str], train_texts,
                     max_length: int):
    """(tokenizer, BertClassifier): a hub/local/packaged BERT, or (pretrained=null, or a hub id in smoke runs)
    a small BERT from `model.small` with a WordPiece vocabulary trained on the training texts. The head is the
    dataclass's: BertLSTMClassifier (bert_lstm) an LSTM, BertHeadClassifier (bert_fc) the MLP."""
    from transformers import BertModel

    if isinstance(model_cfg, BertLSTMClassifier):
        head, sizes = "lstm", {"lstm_hidden": model_cfg.hidden_size, "lstm_layers": model_cfg.num_layers}
    else:
        head, sizes = "fc", {"fc_hidden": model_cfg.classifier_hidden}
    bert = None
    if builds_small(model_cfg):
        small = model_cfg.small
        tokenizer = train_wordpiece(train_texts, small.vocab_size)
        config = small_bert_config(small, len(tokenizer), tokenizer.pad_token_id, max(max_length, 64) + 2)
    else:
        tokenizer, bert = load_pretrained(model_cfg.pretrained, BertModel, model_cfg.revision,
                                          add_pooling_layer=head == "fc")
        config = bert.config
    model = BertClassifier(config, head, len(labels), dropout=model_cfg.dropout, bert=bert, **sizes)
    freeze_encoder(model.bert, model_cfg.freeze)
    return tokenizer, model


def fit(model: BertHeadClassifier | BertLSTMClassifier, run: FitRun, labels: list[str], splits):
    return trainer.fit(model, run, labels, splits, build_model=build_classifier)


def tokenizer(model: BertHeadClassifier | BertLSTMClassifier, run: FitRun, labels: list[str], train_texts):
    """The tokenizer fit encodes with (mode=prepare)."""
    return trainer.fit_tokenizer(model, run, labels, train_texts, build_classifier)


def load(folder: Path, device: str) -> trainer.TorchClassifier:
    """A saved classifier (checkpoints/best of a classification run), on `device`."""
    import json

    from safetensors.torch import load_model
    from transformers import AutoTokenizer, BertConfig

    with loading(folder):
        spec = json.loads((Path(folder) / "classifier.json").read_text())
        model = BertClassifier(BertConfig.from_dict(spec.pop("bert_config")), **spec)
        load_model(model, str(Path(folder) / "model.safetensors"), device="cpu")
        return trainer.TorchClassifier(AutoTokenizer.from_pretrained(folder), model, device,
                                       trainer.saved_max_length(folder), trainer.saved_precision(folder, device))
