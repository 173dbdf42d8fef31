"""Which runner serves a task, which builder serves a model, and which pairs go together.

A registry, not a framework: plain dicts that name modules, imported only when used.
"""
import importlib

from nlpexp.errors import UserError

# task name -> runner module under nlpexp/tasks/
TASKS = {
    "finsent": "classify",
    "embedding": "embedding",
    "novel": "novel",
    "story": "story",
    "posenc": "posenc",
    "chnsenti": "classify",
    "zh_emotion": "classify",
    "clue": "classify",
    "emotion": "classify",
}

# model name -> builder module under nlpexp/models/
MODELS = {
    "finbert": "hf",
    "bert": "hf",
    "minilm": "hf",
    "doc2vec": "doc2vec",
    "sentence_transformers": "sentence_transformers",
    "openai": "openai",
    "bert_fc": "bert_heads",
    "bert_lstm": "bert_heads",
    "transformer": "transformer",
    "gpt2": "gpt2",
    "transformer_encdec": "transformer_encdec",
    "bert_chinese": "hf",
    "bert_chinese_mlm": "mlm_prompt",
    "gpt2_prompt": "gpt2_prompt",
}

# the task x model matrix: every listed pair must run (offline in smoke form)
SUPPORTED = {
    "finsent": ("minilm", "finbert", "bert", "doc2vec", "bert_fc", "bert_lstm", "transformer", "gpt2", "gpt2_prompt"),
    "embedding": ("sentence_transformers", "minilm", "bert", "finbert", "doc2vec", "openai"),
    "novel": ("bert_lstm", "bert_fc", "transformer", "gpt2"),
    "story": ("transformer_encdec", "transformer", "gpt2"),
    "posenc": ("transformer",),
    "chnsenti": ("bert_chinese", "bert_chinese_mlm", "bert_fc", "bert_lstm", "transformer", "gpt2"),
    "zh_emotion": ("bert_chinese", "bert_chinese_mlm", "bert_fc", "bert_lstm", "transformer", "gpt2"),
    "clue": ("bert_fc", "bert_chinese", "bert_lstm", "transformer", "gpt2"),
    "emotion": ("minilm", "bert", "finbert", "doc2vec", "gpt2", "gpt2_prompt", "bert_fc", "bert_lstm", "transformer"),
}

MODES = {
    "classify": ("train", "eval", "predict", "soup"),
    "embedding": ("train", "apply"),
    "novel": ("train", "generate"),
    "story": ("train", "eval", "generate"),
    "posenc": ("train",),
}

# models that call a paid web API: smoke sweeps run them only when their key is in the environment
NEEDS_KEY = {"openai": "OPENAI_API_KEY"}

# model builder modules whose training runs data-parallel under torchrun (trainer.nproc > 1)
DATA_PARALLEL = {"hf"}

# model builder modules whose classifiers train in models/hf.py's Trainer loop (trainer.soup, trainer.average_last)
TRAINER_LOOP = {"hf", "bert_heads", "gpt2", "mlm_prompt", "transformer"}


def check(task: str, model: str, mode: str = "train") -> None:
    if task not in TASKS:
        raise UserError(f"unknown task '{task}'; available tasks: {', '.join(sorted(TASKS))}")
    if model not in MODELS:
        raise UserError(f"unknown model '{model}'; available models: {', '.join(sorted(MODELS))}")
    if model not in SUPPORTED[task]:
        raise UserError(
            f"model '{model}' does not support task '{task}'; "
            f"supported models for {task}: {', '.join(SUPPORTED[task])}"
        )
    modes = MODES[TASKS[task]]
    if mode not in modes:
        raise UserError(f"mode '{mode}' is not available for task '{task}'; use one of: {', '.join(modes)}")


def runner(task: str):
    return importlib.import_module(f"nlpexp.tasks.{TASKS[task]}")


def builder(model: str):
    return importlib.import_module(f"nlpexp.models.{MODELS[model]}")
