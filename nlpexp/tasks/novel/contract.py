"""What the novel recipe asks of a model adapter (bert for bert_fc/bert_lstm, gpt2, transformer).

An adapter module provides (checks.py lists the model.* keys each one reads)
  codec(config, train_text, data_cfg) -> Codec              characters (CharVocab) or a hub tokenizer (BPECodec)
  build(config, codec, seq_len) -> NovelModel               config: the dataclass its Adapter record names
  from_spec(spec) -> NovelModel                                 the untrained model NovelModel.spec() describes
"""
from pathlib import Path
from typing import Protocol


class Codec(Protocol):
    pad_id: int
    special_ids: list[int]
    kind: str  # "chars" | "bpe": which class loads it back

    def __len__(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids, skip_special: bool = True) -> str: ...

    def save(self, folder: Path) -> None: ...


class NovelModel(Protocol):
    """A torch module mapping (B, T) window ids to next-token logits, stepping through nlpexp.training.decoding."""

    causal: bool   # forward gives (B, T, V), a next token at every position; else (B, V) after the window
    window: int

    def __call__(self, ids): ...

    def last_logits(self, ids):
        """(B, V) logits of the token after the window."""

    def start(self, prompt_ids, stateful: bool = True) -> tuple: ...

    def advance(self, state, next_ids) -> tuple: ...

    def spec(self) -> dict:
        """JSON-able constructor settings: from_spec(spec) rebuilds the untrained model."""


class NovelAdapter(Protocol):
    def codec(self, config, train_text: str, data_cfg) -> Codec: ...

    def build(self, config, codec: Codec, seq_len: int) -> NovelModel: ...

    def from_spec(self, spec: dict) -> NovelModel: ...


def load_codec(folder: Path, kind: str) -> Codec:
    from nlpexp.tasks.novel.data import BPECodec, CharVocab

    return CharVocab.load(folder) if kind == "chars" else BPECodec.load(folder)
