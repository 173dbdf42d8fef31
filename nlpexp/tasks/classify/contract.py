"""What the classification recipe asks of a model adapter (hf, bert_heads, transformer, gpt2, mlm_prompt,
gpt2_prompt, doc2vec: one module each, named by the registry), and what it hands one to fit: the adapter's own
model.* dataclass (its Adapter record's `config`) and a FitRun. No adapter sees the run's whole config."""
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol

import numpy as np

from nlpexp.config.schema import Loop
from nlpexp.tasks.classify.config import Tokenizer


@dataclass(frozen=True)
class FitRun:
    """What fitting reads besides model.*, made once from the run's config by recipe.fit_inputs."""
    trainer: Optional[Loop]       # the adapter's loop (its Adapter record's `trainer`, typed); None: gensim (doc2vec)
    seed: int
    run_dir: Path                 # the fit's folder: checkpoints/best and the loop's checkpoints go under it
    device: str
    tokenizer: Optional[Tokenizer]  # tokenizer.keep_whole (the WordPiece encoders); None: the task has no such node
    label_map: dict               # data.label_map: a pretrained head's classes are matched to the labels through it
    resume_from: Optional[str]    # the checkpoint resume chose (None: from the start)
    verbose: bool                 # the libraries' own progress bars and log lines
    multi_label: bool             # task.multi_label: a split's "label" holds a tuple of label ids per text
    logger: str                   # logger.name
    report_to: Callable[[Path], list]      # loggers.hf_report_to of the run, for a fit's folder
    step_logger: Callable[[Path], Optional[Callable]]  # loggers.step_logger of the run, for a fit's folder


class Classifier(Protocol):
    """A trained or loaded model that scores texts."""

    def predict_proba(self, texts) -> np.ndarray:
        """(n texts, n labels) probabilities, columns in the task's label order: rows summing to 1, or with
        task.multi_label one independent probability per label. `texts`: strings, or (text, text_pair) tuples for
        sentence pairs (only the adapters with PAIRS get them; the recipe joins the pair for the others)."""

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
    """An adapter module (its Adapter record names the dataclass of the model.* keys it reads, config.py; the others
    are refused)."""

    def fit(self, model, run: FitRun, labels: list[str], splits: dict) -> tuple:
        """`model`: the adapter's model.* dataclass. (Classifier saved under run.run_dir/checkpoints/best, per-epoch
        history rows, info for metrics.json); (None, [], {}) on data-parallel ranks other than 0."""

    def load(self, folder: Path, device: str) -> Classifier:
        """The classifier saved in `folder`, on `device`."""


class PreparingAdapter(ClassifierAdapter, Protocol):
    """An adapter whose dataclass has PREPARE (it trains on tokenized data): mode=prepare fills the tokenized-data
    cache (tokenized.py) with the tokenizer its fit would make."""

    def tokenizer(self, model, run: FitRun, labels: list[str], train_texts):
        """The tokenizer `fit` encodes the splits with (train_texts: both texts of a pair), nothing trained."""
