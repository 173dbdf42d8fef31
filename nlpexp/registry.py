"""Which tasks and models exist and how they go together: one record per task, one per model.

A registry, not a framework: plain records that name modules, imported only when used. A task belongs to a
wing, `nlpexp/tasks/<wing>/`, which holds its recipe (`recipe.py`), the adapters only it uses, its data readers
and its config checks; a model names, per wing it serves, the adapter module there and the training loop that
adapter trains in (whose trainer.* keys it reads).
"""
import importlib
from dataclasses import dataclass
from types import MappingProxyType

from nlpexp.errors import UserError


@dataclass(frozen=True)
class Task:
    name: str
    wing: str                   # nlpexp/tasks/<wing>/
    models: tuple[str, ...]     # the task x model matrix: every pair runs, offline in smoke form
    modes: tuple[str, ...]
    summary: str = ""


@dataclass(frozen=True)
class Model:
    name: str
    adapters: MappingProxyType  # wing -> (adapter module under nlpexp/tasks/<wing>/, training loop)
    data_parallel: bool = False  # trainer.nproc > 1 runs it under torchrun
    needs_key: str | None = None  # a paid web API: smoke sweeps run it only when this variable is set

    def adapter(self, wing: str) -> str:
        return self.adapters[wing][0]

    def loop(self, wing: str) -> str:
        return self.adapters[wing][1] if wing in self.adapters else "none"


def _model(name, data_parallel=False, needs_key=None, **adapters):
    return Model(name, MappingProxyType(adapters), data_parallel, needs_key)


CLASSIFY_MODES = ("train", "eval", "predict", "soup")
_TASKS = (
    Task("finsent", "classify", ("minilm", "finbert", "bert", "doc2vec", "bert_fc", "bert_lstm", "transformer",
                                 "gpt2", "gpt2_prompt"), CLASSIFY_MODES, "financial news sentiment"),
    Task("emotion", "classify", ("minilm", "bert", "finbert", "doc2vec", "gpt2", "gpt2_prompt", "bert_fc",
                                 "bert_lstm", "transformer"), CLASSIFY_MODES, "English emotions, 6 or 13 labels"),
    Task("chnsenti", "classify", ("bert_chinese", "bert_chinese_mlm", "bert_fc", "bert_lstm", "transformer", "gpt2"),
         CLASSIFY_MODES, "Chinese sentiment"),
    Task("zh_emotion", "classify", ("bert_chinese", "bert_chinese_mlm", "bert_fc", "bert_lstm", "transformer",
                                    "gpt2"), CLASSIFY_MODES, "Chinese emotions, 7 labels"),
    Task("clue", "classify", ("bert_fc", "bert_chinese", "bert_lstm", "transformer", "gpt2"), CLASSIFY_MODES,
         "CLUE-style classification, labels from the data"),
    Task("story", "story", ("transformer_encdec", "transformer", "gpt2", "bert2bert"), ("train", "eval", "generate"),
         "story generation, first sentence in, four out"),
    Task("novel", "novel", ("bert_lstm", "bert_fc", "transformer", "gpt2"), ("train", "generate"),
         "Chinese novel continuation, next character"),
    Task("embedding", "embedding", ("sentence_transformers", "minilm", "bert", "finbert", "doc2vec", "openai"),
         ("train", "apply"), "embedding customization on sentence pairs"),
    Task("posenc", "posenc", ("transformer",), ("train",), "the sinusoidal positional encoding, plotted"),
)
_HF = {"classify": ("hf", "trainer"), "embedding": ("hf", "embedding")}
_MODELS = (
    _model("minilm", data_parallel=True, **_HF),
    _model("bert", data_parallel=True, **_HF),
    _model("finbert", data_parallel=True, **_HF),
    _model("bert_chinese", data_parallel=True, classify=("hf", "trainer")),
    _model("bert_chinese_mlm", classify=("mlm_prompt", "trainer")),
    _model("bert_fc", classify=("bert_heads", "trainer"), novel=("bert", "novel")),
    _model("bert_lstm", classify=("bert_heads", "trainer"), novel=("bert", "novel")),
    _model("transformer", classify=("transformer", "trainer"), novel=("transformer", "novel"),
           story=("transformer", "story")),  # posenc draws the encoding: no adapter, no training
    _model("transformer_encdec", story=("transformer_encdec", "story")),
    _model("bert2bert", story=("bert2bert", "story")),
    _model("gpt2", classify=("gpt2", "trainer"), novel=("gpt2", "novel"), story=("gpt2", "story")),
    _model("gpt2_prompt", classify=("gpt2_prompt", "lm")),
    _model("doc2vec", classify=("doc2vec", "gensim"), embedding=("doc2vec", "embedding")),
    _model("sentence_transformers", embedding=("sentence_transformers", "embedding")),
    _model("openai", needs_key="OPENAI_API_KEY", embedding=("openai", "embedding")),
)
TASKS = MappingProxyType({t.name: t for t in _TASKS})
MODELS = MappingProxyType({m.name: m for m in _MODELS})


def check(task: str, model: str, mode: str = "train") -> None:
    if task not in TASKS:
        raise UserError(f"unknown task '{task}'; available tasks: {', '.join(sorted(TASKS))}")
    if model not in MODELS:
        raise UserError(f"unknown model '{model}'; available models: {', '.join(sorted(MODELS))}")
    if model not in TASKS[task].models:
        raise UserError(f"model '{model}' does not support task '{task}'; "
                        f"supported models for {task}: {', '.join(TASKS[task].models)}")
    if mode not in TASKS[task].modes:
        raise UserError(f"mode '{mode}' is not available for task '{task}'; use one of: {', '.join(TASKS[task].modes)}")


def wing(task: str) -> str:
    return TASKS[task].wing


def runner(task: str):
    """The task's recipe module: nlpexp/tasks/<wing>/recipe.py."""
    return importlib.import_module(f"nlpexp.tasks.{TASKS[task].wing}.recipe")


def adapter(model: str, wing_name: str):
    """The model's adapter module in a wing, e.g. adapter('bert_fc', 'novel') -> nlpexp.tasks.novel.bert."""
    return importlib.import_module(f"nlpexp.tasks.{wing_name}.{MODELS[model].adapter(wing_name)}")


def loop(model: str, wing_name: str) -> str:
    return MODELS[model].loop(wing_name)
