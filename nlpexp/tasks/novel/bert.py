"""BERT encoder with a next-character head (task=novel): `bert_fc` (MLP) and `bert_lstm` (LSTM over the hidden
states).

Input: [CLS] + a window of characters. `bert_fc` reads the window's last position (or [CLS], `model.pool`)
through an MLP to the vocabulary; `bert_lstm` runs an LSTM (zero initial state) over the hidden states and
reads its output at the last position. `model.pretrained` is a hub id or folder (bert-base-chinese, whose
vocabulary is used character by character); null builds a small BERT from `model.small` with a character
vocabulary from the training text. Saved as safetensors + JSON (the BERT config and the head's settings).
"""
import torch
from torch import nn

from nlpexp.training.decoding import WindowStepper
from nlpexp.inputs.hub import builds_small, pretrained_model, pretrained_tokenizer, small_bert_config
from nlpexp.models.bert import freeze_encoder
from nlpexp.training.precision import run_lstm
from nlpexp.tasks.novel.config import NextCharBertFC
from nlpexp.tasks.novel.data import CharVocab



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
        return {"bert_config": self.bert.config.to_dict(), **self.settings}

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
        out, _ = run_lstm(self.lstm, states)  # zero initial state (nn.LSTM's default when none is given)
        return self.out(out[:, 1:] if self.causal else out[:, -1])

    def last_logits(self, ids):
        """(B, vocab) for the character after the window only: the head runs on one position, not all."""
        if not self.causal:
            return self(ids)
        states = self.encode(ids)
        if self.head == "fc":
            return self.fc(states[:, -1])
        out, _ = run_lstm(self.lstm, states)
        return self.out(out[:, -1])

    # the LSTM can carry its (h, c) across steps: one LSTM step on the newest position instead of the window
    def start(self, prompt_ids, stateful: bool = True):
        if self.head != "lstm" or not stateful:
            return super().start(prompt_ids)
        window = prompt_ids[:, -self.window:]
        out, (h, c) = run_lstm(self.lstm, self.encode(window))
        return self.out(out[:, -1]), (window, h.transpose(0, 1).contiguous(), c.transpose(0, 1).contiguous())

    def advance(self, state, next_ids):
        if len(state) == 1:
            return super().advance(state, next_ids)
        window = torch.cat([state[0], next_ids[:, None]], dim=1)[:, -self.window:]
        last = self.encode(window)[:, -1:]
        h, c = state[1].transpose(0, 1).contiguous(), state[2].transpose(0, 1).contiguous()
        out, (h, c) = run_lstm(self.lstm, last, (h, c))
        return self.out(out[:, -1]), (window, h.transpose(0, 1).contiguous(), c.transpose(0, 1).contiguous())


def codec(m, train_text: str, data_cfg) -> CharVocab:
    if builds_small(m):
        return CharVocab.from_text(train_text, int(data_cfg.min_freq), data_cfg.get("max_vocab"))
    vocab = pretrained_tokenizer(m.pretrained, m.revision).get_vocab()
    return CharVocab([t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])])


def build(m, vocab: CharVocab, seq_len: int) -> BertNextChar:
    """m: config.NextCharBertFC (bert_fc: an MLP head) or config.NextCharBertLSTM (bert_lstm: an LSTM head)."""
    from transformers import BertModel

    bert = None
    if builds_small(m):
        config = small_bert_config(m.small, len(vocab), vocab.pad_id, seq_len + 1)
    else:
        bert = pretrained_model(m.pretrained, BertModel, m.revision, add_pooling_layer=False)
        config = bert.config
    if isinstance(m, NextCharBertFC):
        head = dict(head="fc", pool=m.pool, fc_hidden=m.fc_hidden)
    else:
        head = dict(head="lstm", lstm_hidden=m.hidden_size, lstm_layers=m.num_layers)
    model = BertNextChar(config, cls_id=vocab.cls_id, window=seq_len, dropout=m.dropout, causal=bool(m.causal),
                         bert=bert, **head)
    freeze_encoder(model.bert, m.freeze)
    return model


def from_spec(spec: dict) -> BertNextChar:
    from transformers import BertConfig

    settings = {k: v for k, v in spec.items() if k != "bert_config"}
    return BertNextChar(BertConfig.from_dict(spec["bert_config"]), **settings)
