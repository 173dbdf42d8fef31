"""What the embedding recipe asks of a model adapter (hf, sentence_transformers, doc2vec, openai).

An adapter module provides (its config: the dataclass its Adapter record names, in config.py)
  embedder(config, encodes, seed, train_texts, device) -> Embedder    encodes: the trainer.* dataclass
      config.encodes names (None: it reads none); doc2vec trains on the training texts, the others ignore them
  load(folder, device) -> Embedder                  a folder Embedder.save wrote
"""
import json
from pathlib import Path
from typing import Protocol

import numpy as np


class Embedder(Protocol):
    id: str  # names the embedder in the embedding cache: the same id must mean the same vectors

    def encode(self, texts) -> np.ndarray:
        """(n, dim) float32 vectors."""

    def save(self, folder: Path) -> None:
        """settings.json (and weights where the embedder cannot be rebuilt by name)."""


class FineTunable(Embedder, Protocol):
    """An encoder task.method=finetune can train (hf encoders, sentence-transformers models)."""

    def sentence_transformer(self, folder: Path):
        """The encoder + mean pooling as a SentenceTransformer."""


class EmbedderAdapter(Protocol):
    def embedder(self, config, encodes, seed: int, train_texts: list[str], device: str) -> Embedder: ...

    def load(self, folder: Path, device: str) -> Embedder: ...


def write_settings(folder: Path, settings: dict) -> None:
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / "settings.json").write_text(json.dumps(settings, indent=2))


def read_settings(folder: Path) -> dict:
    return json.loads((Path(folder) / "settings.json").read_text())
