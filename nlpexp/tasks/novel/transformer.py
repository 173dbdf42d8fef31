"""Our own decoder-only Transformer as the next-character model (task=novel): nlpexp/models/transformer.py's
CausalLM over `task.seq_len` windows, a character vocabulary from the training text."""
from nlpexp.models.transformer import CausalLM
from nlpexp.tasks.novel.data import CharVocab



def codec(model_cfg, train_text: str, data_cfg) -> CharVocab:
    return CharVocab.from_text(train_text, int(data_cfg.min_freq), data_cfg.get("max_vocab"))


def build(model_cfg, vocab, seq_len: int) -> CausalLM:
    return CausalLM(len(vocab), model_cfg.d_model, model_cfg.num_layers, model_cfg.num_heads, model_cfg.d_ff,
                    model_cfg.dropout, max_len=seq_len, pad_id=vocab.pad_id, window=seq_len)


def from_spec(spec: dict) -> CausalLM:
    return CausalLM(**spec)
