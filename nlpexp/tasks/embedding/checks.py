"""The embedding wing's config: schemas of task/data, the keys each adapter and method reads, and the checks
that span several keys. Imported before any run: no torch here."""
from dataclasses import dataclass, fields
from typing import List, Optional

from omegaconf import MISSING

from nlpexp import registry
from nlpexp.training.loop import READS
from nlpexp.schema import (EPOCHS, SAMPLES, SOURCES, STEPS, WIDTH, data_errors, input_errors, run_folder_errors,
                           setting, split_error)

LOSSES = ("cosine", "cosent", "angle", "contrastive", "online_contrastive")


@dataclass
class Finetune:
    loss: str = setting(MISSING, choices=LOSSES)
    negative_score: float = 0.0
    epochs: int = setting(MISSING, gt=0, le=EPOCHS)
    batch_size: int = setting(MISSING, gt=0, le=WIDTH)
    lr: float = setting(MISSING, gt=0)
    warmup_ratio: float = setting(MISSING, ge=0, lt=1)
    max_steps: int = setting(-1, check=lambda v: None if v == -1 or 0 < v <= STEPS else
                             f"must be -1 (no cap) or an integer in [1, {STEPS}] (got {v!r})")
    weight_decay: float = setting(0.01, ge=0)
    freeze_embeddings: bool = True


@dataclass
class EmbeddingTask:
    name: str = MISSING
    method: str = setting(MISSING, choices=("matrix", "finetune", "none"))
    negatives: str = setting(MISSING, choices=("random", "contradiction"))
    negatives_per_positive: int = setting(MISSING, gt=0, le=1000)
    modified_dim: int = setting(MISSING, gt=0, le=WIDTH)
    init: str = setting(MISSING, choices=("identity", "orthogonal", "random"))
    dropout: float = setting(MISSING, ge=0, lt=1)
    min_gain: Optional[float] = setting(None, ge=0)
    threshold_steps: int = setting(MISSING, gt=0, le=1_000_000)
    cache: Optional[str] = None
    finetune: Finetune = MISSING


@dataclass
class EmbeddingData:
    source: str = setting(MISSING, choices=SOURCES)
    embedded: Optional[str] = None
    hub_id: Optional[str] = None
    hub_config: Optional[str] = None     # the dataset's configuration (dair-ai/emotion: split)
    revision: Optional[str] = None       # the hub dataset's branch, tag or commit (null: main)
    path: Optional[str] = None
    format: str = setting("auto", choices=("auto", "csv", "tsv", "jsonl"))
    text_column: Optional[str] = None
    label_column: Optional[str] = None
    split: List[float] = setting(MISSING, check=split_error)
    max_pairs: Optional[int] = setting(None, gt=0, le=SAMPLES)


SCHEMAS = [("embedding", "task", EmbeddingTask), ("embedding", "data", EmbeddingData)]

# the model.* keys each adapter module reads
MODEL_KEYS = {
    "hf": ("pretrained", "revision", "small"),
    "sentence_transformers": ("pretrained", "revision", "batch_size", "normalize"),
    "doc2vec": ("vector_size", "window", "min_count", "epochs", "dm", "dbow_words", "infer_epochs", "lowercase",
                "export_native"),
    "openai": ("engine", "batch_size", "timeout"),
}
# the trainer.* keys the projection matrix (task.method=matrix: nlpexp.training.loop with plain SGD at a constant rate)
# reads; the fine-tune (task.method=finetune) takes its epochs, batch size, rate, warm-up, weight decay and step
# cap from task.finetune and the rest of the loop's keys from trainer.*; hf encoders also read max_length
MATRIX_READS = tuple(k for k in READS if k not in ("weight_decay", "warmup_ratio"))
RENAMED = {"task.patience": "trainer.patience"}  # old key -> the key that does its job
FINETUNE_READS = ("grad_accum", "max_minutes", "save_steps", "precision")
FINETUNABLE = ("hf", "sentence_transformers")


def reads(cfg) -> dict:
    if cfg.mode == "apply":
        saved = "the saved run's embedder is used"
        return {"reads": {"trainer": set(), "model": {"name"}, "": {"ckpt", "input", "output"}, "data": set()},
                "hints": {"trainer": saved, "model": saved, "data": "mode=apply embeds input= with the saved run"}}
    module = registry.MODELS[cfg.model.name].adapter("embedding")
    trainer = set({"matrix": MATRIX_READS, "finetune": FINETUNE_READS}.get(cfg.task.method, ()))
    if module == "hf":
        trainer.add("max_length")  # the encoder's truncation
    if module in FINETUNABLE:
        trainer.add("precision")  # the encoder embeds the texts in it
    finetune = {f.name for f in fields(Finetune)}
    hints = {f"trainer.{k}": f"task.method={cfg.task.method} trains with task.finetune.{k}"
             for k in finetune if cfg.task.method == "finetune" and k not in FINETUNE_READS}
    hints["trainer"] = {"matrix": "the projection matrix reads trainer." + ", trainer.".join(MATRIX_READS),
                        "finetune": "task.method=finetune reads task.finetune.* and trainer."
                                    + ", trainer.".join(FINETUNE_READS),
                        "none": "task.method=none trains nothing"}[cfg.task.method]
    if module == "doc2vec":
        hints["trainer.epochs"] = "Doc2Vec trains for model.epochs; the matrix's epochs are read only with " \
                                  "task.method=matrix" if cfg.task.method != "matrix" else None
    return {"reads": {"trainer": trainer, "model": {"name", *MODEL_KEYS[module]}, "": set()},
            "hints": {k: v for k, v in hints.items() if v}}


def check(cfg) -> list[str]:
    from nlpexp.readers import special_file_error

    errors = data_errors(cfg.data)
    cache = cfg.task.get("cache")
    if cache and (problem := special_file_error(cache)):  # an SQLite file of its own
        errors.append(f"task.cache={problem}")
    if cfg.mode == "apply":
        errors += run_folder_errors(cfg, "a task=embedding run folder")
        if not cfg.get("input"):
            errors.append("mode=apply needs input=<texts .txt/.csv/.jsonl or embeddings .npy>")
        errors += input_errors(cfg)
        return errors
    if cfg.task.method == "finetune" and registry.MODELS[cfg.model.name].adapter("embedding") not in FINETUNABLE:
        errors.append(f"task.method=finetune trains a transformer encoder; model={cfg.model.name} is not one "
                      "(use sentence_transformers, minilm, bert or finbert)")
    return errors
