"""Our own Transformer encoder as a text classifier (model=transformer on the classification tasks), trained from
scratch with a WordPiece vocabulary from the data, in the Trainer loop of trainer.py."""
from pathlib import Path

import torch
from torch import nn

from nlpexp.inputs.hub import train_wordpiece
from nlpexp.models.transformer import Embedding, EncoderLayer
from nlpexp.runs import loading
from nlpexp.tasks.classify import trainer
from nlpexp.tasks.classify.config import TransformerClassifier
from nlpexp.tasks.classify.contract import FitRun


class EncoderClassifier(nn.Module):
    """Token + sinusoidal embeddings -> encoder layers (padding masked out, no causal mask) -> mean over the real
    tokens -> Dropout -> Linear to the labels. Forward matches an HF classifier's, so trainer.py's Trainer loop
    trains it; saved as model.safetensors + classifier.json + the WordPiece tokenizer."""

    def __init__(self, vocab_size: int, num_labels: int, d_model: int = 256, num_layers: int = 4, num_heads: int = 4,
                 d_ff: int = 1024, dropout: float = 0.1, max_len: int = 512, pad_id: int = 0):
        from transformers import PretrainedConfig

        super().__init__()
        self.settings = {"vocab_size": vocab_size, "num_labels": num_labels, "d_model": d_model,
                         "num_layers": num_layers, "num_heads": num_heads, "d_ff": d_ff, "dropout": dropout,
                         "max_len": max_len, "pad_id": pad_id}
        self.config = PretrainedConfig(num_labels=num_labels)  # what TorchClassifier reads
        self.embed = Embedding(vocab_size, d_model, max_len, dropout, pad_id)
        self.layers = nn.ModuleList(EncoderLayer(d_model, num_heads, d_ff, dropout) for _ in range(num_layers))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(d_model, num_labels))

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        from transformers.modeling_outputs import SequenceClassifierOutput

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        keep = attention_mask.bool()
        x = self.embed(input_ids)
        for layer in self.layers:
            x = layer(x, keep[:, None, None, :])  # every query attends to the real tokens only
        weights = keep.unsqueeze(-1).to(x.dtype)
        pooled = (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        logits = self.head(pooled)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def save_pretrained(self, folder) -> None:
        import json

        from safetensors.torch import save_model

        Path(folder).mkdir(parents=True, exist_ok=True)
        save_model(self, str(Path(folder) / "model.safetensors"))
        (Path(folder) / "classifier.json").write_text(json.dumps(self.settings, indent=1))


def build_classifier(model_cfg: TransformerClassifier, labels: list[str], train_texts, max_length: int):
    """(WordPiece tokenizer trained on the training texts, EncoderClassifier) for trainer.fit."""
    tokenizer = train_wordpiece(train_texts, model_cfg.vocab_size)
    model = EncoderClassifier(len(tokenizer), len(labels), model_cfg.d_model, model_cfg.num_layers,
                              model_cfg.num_heads, model_cfg.d_ff, model_cfg.dropout, max_len=max_length + 2,
                              pad_id=tokenizer.pad_token_id)
    return tokenizer, model


def fit(model: TransformerClassifier, run: FitRun, labels: list[str], splits):
    return trainer.fit(model, run, labels, splits, build_model=build_classifier)


def tokenizer(model: TransformerClassifier, run: FitRun, labels: list[str], train_texts):
    """The tokenizer fit encodes with (mode=prepare)."""
    return trainer.fit_tokenizer(model, run, labels, train_texts, build_classifier)


def load(folder: Path, device: str) -> trainer.TorchClassifier:
    """A saved classifier (checkpoints/best of a classification run), on `device`."""
    import json

    from safetensors.torch import load_model
    from transformers import AutoTokenizer

    with loading(folder):
        model = EncoderClassifier(**json.loads((Path(folder) / "classifier.json").read_text()))
        load_model(model, str(Path(folder) / "model.safetensors"), device="cpu")
        return trainer.TorchClassifier(AutoTokenizer.from_pretrained(folder), model, device,
                                       trainer.saved_max_length(folder), trainer.saved_precision(folder, device))
