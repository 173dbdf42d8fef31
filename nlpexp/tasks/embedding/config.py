"""The embedding wing's config, as the dataclasses that read it: the task and data nodes, each adapter's model.*
(its Adapter record's `config`) and the trainer.* of each task.method. A key a run does not read is not a field of
what reads it. Imported before any run: no torch here."""
from dataclasses import dataclass, fields
from typing import ClassVar, List, Optional

from omegaconf import MISSING

from nlpexp.config.schema import (EPOCHS, SAMPLES, SOURCES, STEPS, TOKENS, WIDTH, Doc2VecEmbedder, LoopCore, LoopSteps,
                                  Pretrained, setting, split_error)

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

RENAMED = {"task.patience": "trainer.patience"}  # old key -> the key that does its job


# -- trainer.*: what each task.method trains with, and what the encoders read while they embed --------------------
@dataclass
class MatrixLoop(LoopCore):
    """task.method=matrix: the projection matrix, nlpexp.training.loop with plain SGD at a constant rate."""


@dataclass
class FinetuneLoop(LoopSteps):
    """task.method=finetune: the encoder fine-tuned with task.finetune's schedule and these of trainer.*."""


FinetuneLoop.INSTEAD = {f"trainer.{f.name}": f"task.method=finetune trains with task.finetune.{f.name}"
                        for f in fields(Finetune) if f.name not in {g.name for g in fields(FinetuneLoop)}}


@dataclass
class Encodes:
    """An encoder that can be fine-tuned embeds the texts at trainer.precision."""
    precision: str = setting("auto", choices=("auto", "fp32", "bf16", "fp16"))


@dataclass
class EncodesTruncated(Encodes):
    """An HF encoder also truncates at trainer.max_length."""
    max_length: int = setting(MISSING, gt=0, le=TOKENS)


METHOD_LOOPS = {"matrix": MatrixLoop, "finetune": FinetuneLoop}


# -- model.*: one dataclass per adapter (`encodes`: its trainer.* dataclass; None: it cannot be fine-tuned) -----
@dataclass
class HFEmbedder(Pretrained):
    """minilm, bert, finbert: mean-pooled HF encoders (hf.py)."""
    encodes: ClassVar[type] = EncodesTruncated


@dataclass
class SentenceTransformer:
    """sentence-transformers (sentence_transformers.py)."""
    encodes: ClassVar[type] = Encodes
    name: str = MISSING
    pretrained: str = MISSING
    revision: Optional[str] = None
    batch_size: int = setting(MISSING, gt=0, le=WIDTH)
    normalize: bool = False


@dataclass
class Doc2VecEmbedderConfig(Doc2VecEmbedder):
    """gensim's Doc2Vec (doc2vec.py)."""
    encodes: ClassVar[Optional[type]] = None


@dataclass
class OpenAIEmbedder:
    """OpenAI's embedding API (openai.py)."""
    encodes: ClassVar[Optional[type]] = None
    name: str = MISSING
    engine: str = MISSING
    batch_size: int = setting(MISSING, gt=0, le=WIDTH)
    timeout: float = setting(MISSING, gt=0, le=86_400)
