"""The novel wing's config: schemas of task/data/generate, the keys each adapter and the training loop read,
and the checks that span several keys. Imported before any run: no torch here."""
from dataclasses import dataclass, fields
from typing import Any, List, Optional

from omegaconf import MISSING

from nlpexp import registry
from nlpexp.training.loop import READS
from nlpexp.schema import (GENERATED, SAMPLES, STEPS, TOKENS, VOCAB, DecodingControls, data_errors, run_folder_errors,
                           setting, split_error)


@dataclass
class NovelTask:
    name: str = MISSING
    seq_len: int = setting(MISSING, gt=0, le=TOKENS)
    eval_every: Optional[int] = setting(None, gt=0, le=STEPS)
    ngram_discounts: List[float] = setting(MISSING, each={"gt": 0, "le": 1})


@dataclass
class NovelData:
    source: str = setting(MISSING, choices=("embedded", "file"))
    embedded: Optional[str] = None
    path: Any = None  # a file, a folder of .txt files, or a list of them
    drop_headings: bool = False
    punctuation: str = setting("full", choices=("full", "half", "none"))
    line_sep: str = "\n"
    split: List[float] = setting(MISSING, check=split_error)
    stride: int = setting(MISSING, gt=0, le=TOKENS)
    eval_stride: int = setting(MISSING, gt=0, le=TOKENS)
    min_freq: int = setting(MISSING, gt=0, le=SAMPLES)
    max_vocab: Optional[int] = setting(None, gt=0, le=VOCAB)
    max_chars: Optional[int] = setting(None, gt=0, le=100 * SAMPLES)
    max_train_samples: Optional[int] = setting(None, gt=0, le=SAMPLES)
    max_eval_samples: Optional[int] = setting(None, gt=0, le=SAMPLES)


@dataclass
class NovelGenerate(DecodingControls):
    """The shared decoding controls, then mode=generate's batch, bert_lstm's stepping and the evaluation."""
    num_samples: int = setting(MISSING, gt=0, le=GENERATED)
    stateful: bool = True
    eval_prompts: int = setting(MISSING, gt=0, le=GENERATED)
    eval_length: int = setting(MISSING, gt=0, le=TOKENS)
    eval_beam: bool = True


SCHEMAS = [("novel", "task", NovelTask), ("novel", "data", NovelData), ("novel", "generate", NovelGenerate)]

# the model.* keys each adapter module reads
MODEL_KEYS = {
    "bert": ("pretrained", "revision", "small", "pool", "fc_hidden", "hidden_size", "num_layers", "dropout", "freeze",
             "causal"),
    "gpt2": ("pretrained", "revision", "small"),
    "transformer": ("d_model", "num_layers", "num_heads", "d_ff", "dropout"),
}
# the trainer.* keys the novel loop (nlpexp.training.loop, and the window scoring) reads
LOOP_READS = (*READS, "eval_batch_size")
HINTS = {"trainer.max_length": "task=novel windows hold task.seq_len characters",
         "model.classifier_hidden": "bert_fc's next-character MLP is model.fc_hidden",
         "generate.strategy": "the held-out continuations after training are sampled, and beam-searched too with "
                              "generate.eval_beam", "generate.num_samples": "mode=generate reads it"}
EVAL_ONLY = ("eval_prompts", "eval_length", "eval_beam")  # the held-out continuations after training
# keys that were renamed: refused at composition with the new name (nlpexp.validate.renamed_hint)
RENAMED = {"generate.beam_size": "generate.num_beams", "task.max_train_minutes": "trainer.max_minutes",
           "task.mixed_precision": "trainer.precision",
           "task.bigram_k": "task.ngram_discounts (the add-k bigram became Kneser-Ney bigram and trigram baselines)"}


def reads(cfg) -> dict:
    module = registry.MODELS[cfg.model.name].adapter("novel")
    every = {f.name for f in fields(NovelGenerate)}
    if cfg.mode == "generate":
        saved = "the saved run's model is used as trained"
        return {"reads": {"trainer": set(), "model": {"name"}, "": {"ckpt", "prompt", "length"}, "data": set(),
                          "generate": every - set(EVAL_ONLY)},
                "hints": {"trainer": saved, "model": saved, "data": "mode=generate reads no data",
                          "generate": "only the evaluation after training reads it"}}
    return {"reads": {"trainer": set(LOOP_READS), "model": {"name", *MODEL_KEYS[module]}, "": set(),
                      "generate": every - {"strategy", "num_samples"}}, "hints": dict(HINTS)}


def check(cfg) -> list[str]:
    errors = data_errors(cfg.data, folders=True)
    model = cfg.model
    if model.name in ("bert_fc", "bert_lstm") and model.get("causal") and model.get("pool") == "cls":
        errors.append("model.pool=cls needs model.causal=false ([CLS] sees nothing after it in causal mode)")
    if cfg.mode == "train" and cfg.trainer.epochs == 0:
        errors.append("trainer.epochs must be an integer > 0 for task=novel (0, zero-shot, is task=story's)")
    if cfg.mode == "generate":
        length = cfg.get("length")
        if not isinstance(length, int) or isinstance(length, bool) or not 0 < length <= TOKENS:
            errors.append(f"length must be an integer in [1, {TOKENS}] (got {length!r})")
        if not cfg.get("prompt"):
            errors.append('mode=generate needs prompt="..."')
        errors += run_folder_errors(cfg)
    return errors
