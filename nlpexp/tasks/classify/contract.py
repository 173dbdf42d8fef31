"""What the classification recipe asks of a model adapter (hf, bert_heads, transformer, gpt2, mlm_prompt,
gpt2_prompt, doc2vec: one module each, named by the registry)."""
from pathlib import Path
from typing import Protocol

import numpy as np


class Classifier(Protocol):
    """A trained or loaded model that scores texts."""

    def predict_proba(self, texts) -> np.ndarray:
        """(n texts, n labels) probabilities, rows summing to 1, columns in the task's label order."""

    def extra_metrics(self, frame, labels: list[str], prefix: str) -> dict:
        """Metrics beside the standard ones for a scored split (gpt2_prompt: its unrestricted answer); {} if none."""

    def save(self, folder: Path) -> None:
        """Everything `load` needs, in files that run no code (safetensors, JSON, NPY)."""


class WeightedClassifier(Classifier, Protocol):
    """A torch classifier (the Trainer loop's): its weights can be averaged (trainer.average_last, mode=soup)."""

    def weights(self) -> dict:
        """The model's state dict."""

    def load_weights(self, state: dict) -> None:
        """Replace the model's weights."""


class ClassifierAdapter(Protocol):
    """An adapter module (checks.py lists the model.* keys each one reads; the others are refused)."""

    def fit(self, cfg, labels: list[str], splits: dict, run_dir: Path, device: str) -> tuple:
        """(Classifier saved under run_dir/checkpoints/best, per-epoch history rows, info for metrics.json);
        (None, [], {}) on data-parallel ranks other than 0."""

    def load(self, folder: Path, device: str) -> Classifier:
        """The classifier saved in `folder`, on `device`."""
