"""BERT encoder with a next-character head (task=novel) or a classification head (classification tasks):
`bert_fc` (MLP) and `bert_lstm` (LSTM over the hidden states).

Input: [CLS] + a window of characters. `bert_fc` reads the window's last position (or [CLS], `model.pool`)
through an MLP to the vocabulary; `bert_lstm` runs an LSTM (zero initial state) over the hidden states and
reads its output at the last position. `model.pretrained` is a hub id or folder (bert-base-chinese, whose
vocabulary is used character by character); null builds a small BERT from `model.small` with a character
vocabulary from the training text. Saved as safetensors + JSON (the BERT config and the head's settings).
"""
import torch
from torch import nn

from nlpexp.data.novel import CharVocab
from nlpexp.decoding import WindowStepper
from nlpexp.models.hf import load_pretrained, pretrained_model, pretrained_tokenizer, small_bert_config
from nlpexp.runtime import is_hub_id


class BertNextChar(WindowStepper, nn.Module):
    def __init__(self, bert_config, head: str, cls_id: int, window: int, pool: str = "last", fc_hidden: int = 512,
                 lstm_hidden: int = 256, lstm_layers: int = 1, dropout: float = 0.1, causal: bool = False, bert=None):
        from transformers import BertModel

        super().__init__()
        self.head, self.cls_id, self.window, self.pool, self.causal = head, cls_id, window, pool, bool(causal)
        self.settings = {"head": head, "cls_id": cls_id, "window": window, "pool": pool, "fc_hidden": fc_hidden,
                         "lstm_hidden": lstm_hidden, "lstm_layers": lstm_layers, "dropout": dropout, "causal": causal}
        if causal:  # BERT's decoder mode: position t attends to positions <= t only
            bert_config.is_decoder = True
        self.bert = bert if bert is not None else BertModel(bert_config, add_pooling_layer=False)
        hidden, vocab = self.bert.config.hidden_size, self.bert.config.vocab_size
        if head == "fc":
            self.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, fc_hidden), nn.GELU(),
                                    nn.Dropout(dropout), nn.Linear(fc_hidden, vocab))
        else:
            self.lstm = nn.LSTM(hidden, lstm_hidden, num_layers=lstm_layers, batch_first=True,
                                dropout=dropout if lstm_layers > 1 else 0.0)
            self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(lstm_hidden, vocab))

    def spec(self) -> dict:
        return {"family": "bert_heads", "bert_config": self.bert.config.to_dict(), **self.settings}

    def encode(self, ids):
        cls = torch.full((ids.size(0), 1), self.cls_id, dtype=ids.dtype, device=ids.device)
        return self.bert(input_ids=torch.cat([cls, ids], dim=1)).last_hidden_state  # (B, 1 + T, H)

    def forward(self, ids):
        """(B, T) window ids -> (B, vocab) logits for the character after the window; causal: (B, T, vocab),
        the character after every position (each sees only the positions up to it)."""
        states = self.encode(ids)
        if self.head == "fc":
            if self.causal:
                return self.fc(states[:, 1:])
            return self.fc(states[:, 0] if self.pool == "cls" else states[:, -1])
        out, _ = self.lstm(states)  # zero initial state (nn.LSTM's default when none is given)
        return self.out(out[:, 1:] if self.causal else out[:, -1])

    def last_logits(self, ids):
        """(B, vocab) for the character after the window only: the head runs on one position, not all."""
        if not self.causal:
            return self(ids)
        states = self.encode(ids)
        if self.head == "fc":
            return self.fc(states[:, -1])
        out, _ = self.lstm(states)
        return self.out(out[:, -1])

    # the LSTM can carry its (h, c) across steps: one LSTM step on the newest position instead of the window
    def start(self, prompt_ids, stateful: bool = True):
        if self.head != "lstm" or not stateful:
            return super().start(prompt_ids)
        window = prompt_ids[:, -self.window:]
        out, (h, c) = self.lstm(self.encode(window))
        return self.out(out[:, -1]), (window, h.transpose(0, 1).contiguous(), c.transpose(0, 1).contiguous())

    def advance(self, state, next_ids):
        if len(state) == 1:
            return super().advance(state, next_ids)
        window = torch.cat([state[0], next_ids[:, None]], dim=1)[:, -self.window:]
        last = self.encode(window)[:, -1:]
        h, c = state[1].transpose(0, 1).contiguous(), state[2].transpose(0, 1).contiguous()
        out, (h, c) = self.lstm(last, (h, c))
        return self.out(out[:, -1]), (window, h.transpose(0, 1).contiguous(), c.transpose(0, 1).contiguous())


def freeze_encoder(bert, freeze) -> None:
    """What stays fixed while training. none/false/0: nothing; all/true: the whole encoder; all_but_pooler: the
    whole encoder except its pooler (the classifiers' [CLS] projection); an integer N: embeddings and the first
    N layers."""
    if freeze is None or freeze is False or freeze in ("none", 0):
        return
    if freeze is True or freeze in ("all", "all_but_pooler"):
        for p in bert.parameters():
            p.requires_grad = False
        if freeze == "all_but_pooler" and getattr(bert, "pooler", None) is not None:
            for p in bert.pooler.parameters():
                p.requires_grad = True
        return
    if int(freeze) > len(bert.encoder.layer):
        from nlpexp.errors import UserError

        raise UserError(f"model.freeze={freeze}: the encoder has only {len(bert.encoder.layer)} layers")
    for p in bert.embeddings.parameters():
        p.requires_grad = False
    for layer in bert.encoder.layer[: int(freeze)]:
        for p in layer.parameters():
            p.requires_grad = False


def novel_codec(model_cfg, train_text: str, data_cfg, smoke: bool = False) -> CharVocab:
    name = model_cfg.get("pretrained")
    if name is None or (smoke and is_hub_id(name)):
        return CharVocab.from_text(train_text, int(data_cfg.min_freq), data_cfg.get("max_vocab"))
    vocab = pretrained_tokenizer(name).get_vocab()
    return CharVocab([t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])])


def novel_model(model_cfg, vocab: CharVocab, seq_len: int, smoke: bool = False) -> BertNextChar:
    from transformers import BertModel

    name = model_cfg.get("pretrained")
    head = "fc" if model_cfg.name == "bert_fc" or model_cfg.get("head") == "fc" else "lstm"
    bert = None
    if name is None or (smoke and is_hub_id(name)):
        small = model_cfg.small
        config = small_bert_config(small, len(vocab), vocab.pad_id, seq_len + 1)
    else:
        bert = pretrained_model(name, BertModel, add_pooling_layer=False)
        config = bert.config
    model = BertNextChar(config, head, vocab.cls_id, seq_len, pool=model_cfg.get("pool", "last"),
                         fc_hidden=model_cfg.get("fc_hidden", 512), lstm_hidden=model_cfg.get("hidden_size", 256),
                         lstm_layers=model_cfg.get("num_layers", 1), dropout=model_cfg.get("dropout", 0.1),
                         causal=bool(model_cfg.get("causal", False)), bert=bert)
    freeze_encoder(model.bert, model_cfg.get("freeze"))
    return model


def from_spec(spec: dict) -> BertNextChar:
    from transformers import BertConfig

    settings = {k: v for k, v in spec.items() if k not in ("family", "bert_config")}
    return BertNextChar(BertConfig.from_dict(spec["bert_config"]), **settings)


# --- classification (finsent, chnsenti, zh_emotion, clue): the same encoder with a classification head ---------
# Trained by the HF Trainer loop in models/hf.py (fit below passes build_classifier to it); saved as
# model.safetensors + classifier.json (the BERT config and the head's settings) + the tokenizer files.

class BertClassifier(nn.Module):
    """bert_fc: pooled [CLS] -> Linear(hidden, fc_hidden) -> ReLU -> Dropout -> Linear(labels).
    bert_lstm: the encoder's hidden states -> LSTM -> Linear(labels), read at each text's last non-pad position
    (batches are right-padded, so the LSTM has seen exactly the text's tokens there)."""

    def __init__(self, bert_config, head: str, num_labels: int, fc_hidden: int = 200, lstm_hidden: int = 256,
                 lstm_layers: int = 1, dropout: float = 0.1, bert=None):
        from transformers import BertModel, PretrainedConfig

        super().__init__()
        self.head = head
        self.settings = {"head": head, "num_labels": num_labels, "fc_hidden": fc_hidden, "lstm_hidden": lstm_hidden,
                         "lstm_layers": lstm_layers, "dropout": dropout}
        self.bert = bert if bert is not None else BertModel(bert_config, add_pooling_layer=head == "fc")
        self.config = PretrainedConfig(num_labels=num_labels)  # what hf.Classifier reads
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
            states, _ = self.lstm(out.last_hidden_state)
            last = attention_mask.sum(dim=1) - 1
            logits = self.out(states[torch.arange(states.size(0), device=states.device), last])
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def save_pretrained(self, folder) -> None:
        import json
        from pathlib import Path

        from safetensors.torch import save_model

        Path(folder).mkdir(parents=True, exist_ok=True)
        save_model(self, str(Path(folder) / "model.safetensors"))
        spec = {"family": "bert_heads", "bert_config": self.bert.config.to_dict(), **self.settings,
                "max_length": getattr(self, "max_length", self.bert.config.max_position_embeddings - 2)}
        (Path(folder) / "classifier.json").write_text(json.dumps(spec, indent=1))


def build_classifier(model_cfg, labels: list[str], train_texts, max_length: int, smoke: bool = False):
    """(tokenizer, BertClassifier): a hub/local/packaged BERT, or (pretrained=null, or a hub id in smoke runs)
    a small BERT from `model.small` with a WordPiece vocabulary trained on the training texts."""
    from transformers import BertModel

    from nlpexp.models.hf import train_wordpiece

    name = model_cfg.get("pretrained")
    head = "fc" if model_cfg.name == "bert_fc" else "lstm"
    bert = None
    if name is None or (smoke and is_hub_id(name)):
        small = model_cfg.small
        tokenizer = train_wordpiece(train_texts, small.get("vocab_size", 8000))
        config = small_bert_config(small, len(tokenizer), tokenizer.pad_token_id, max(max_length, 64) + 2)
    else:
        tokenizer, bert = load_pretrained(name, BertModel, add_pooling_layer=head == "fc")
        config = bert.config
    model = BertClassifier(config, head, len(labels), fc_hidden=model_cfg.get("classifier_hidden", 200),
                           lstm_hidden=model_cfg.get("hidden_size", 256), lstm_layers=model_cfg.get("num_layers", 1),
                           dropout=model_cfg.get("dropout", 0.1), bert=bert)
    freeze_encoder(model.bert, model_cfg.get("freeze"))
    model.max_length = max_length  # saved with the weights: a reloaded run truncates as the trained one did
    return tokenizer, model


def fit(cfg, labels: list[str], splits, run_dir, device: str):
    from nlpexp.models import hf

    return hf.fit(cfg, labels, splits, run_dir, device, build_model=build_classifier)


def load(folder, model_cfg, device: str | None = None):
    """A saved classifier (checkpoints/best of a classification run) as an hf.Classifier."""
    import json
    from pathlib import Path

    from safetensors.torch import load_model
    from transformers import AutoTokenizer, BertConfig

    from nlpexp.models.hf import Classifier

    spec = json.loads((Path(folder) / "classifier.json").read_text())
    bert_config = BertConfig.from_dict(spec.pop("bert_config"))
    spec.pop("family")
    max_length = spec.pop("max_length")
    model = BertClassifier(bert_config, **spec)
    load_model(model, str(Path(folder) / "model.safetensors"), device="cpu")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return Classifier(AutoTokenizer.from_pretrained(folder), model, device, max_length)
