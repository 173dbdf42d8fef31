"""The classification wing's config: schemas of task/data/tokenizer/augment, the keys each adapter and training
loop reads, and the checks that span several keys. Imported before any run: no torch here."""
from dataclasses import dataclass, fields
from typing import Dict, List, Optional

from omegaconf import MISSING, OmegaConf

from nlpexp import registry
from nlpexp.training.loop import READS
from nlpexp.schema import (EPOCHS, GENERATED, SAMPLES, SOURCES, TOKENS, VOCAB, Small, data_errors, input_errors,
                           run_folder_errors, setting, split_error)

FORMATS = ("auto", "phrasebank", "csv", "tsv", "jsonl", "clue")


@dataclass
class ClassifyTask:
    name: str = MISSING
    labels: Optional[List[str]] = None          # null: label_sets[label_set], or (clue) taken from the data
    label_set: Optional[str] = None
    label_sets: Optional[Dict[str, List[str]]] = None


@dataclass
class ClassifyData:
    source: str = setting(MISSING, choices=SOURCES)
    embedded: Optional[str] = None
    embedded_format: Optional[str] = setting(None, choices=FORMATS)
    hub_id: Optional[str] = None
    hub_config: Optional[str] = None     # the dataset's configuration (dair-ai/emotion: split)
    # {hub id: its label ids' names in order}, for a copy of that dataset without ClassLabel names
    hub_label_names: Dict[str, List[str]] = setting({})
    revision: Optional[str] = None       # the hub dataset's branch, tag or commit (null: main)
    path: Optional[str] = None
    format: str = setting("auto", choices=FORMATS)
    text_column: Optional[str] = None
    label_column: Optional[str] = None
    label_map: Dict[str, str] = setting({})  # {} not null: a command-line {a: b} or +data.label_map.a=b merges into it
    # integer labels in the data: id i is label_names[i] (then label_map applies); without it they are refused
    label_names: Optional[List[str]] = setting(None, check=lambda names: None if names else
                                               "must name the label ids in order, e.g. [negative,neutral,positive]")
    other_labels: str = setting("error", choices=("drop", "error"))
    per_label: Optional[int] = setting(None, gt=0, le=SAMPLES)
    split: List[float] = setting(MISSING, check=split_error)
    split_seed: Optional[int] = setting(None, ge=0, lt=2 ** 32)
    eval_split: str = setting("test", choices=("train", "validation", "test"))
    max_train_samples: Optional[int] = setting(None, gt=0, le=SAMPLES)
    max_eval_samples: Optional[int] = setting(None, gt=0, le=SAMPLES)


@dataclass
class Tokenizer:
    keep_whole: Optional[List[str]] = setting(None, check=lambda words: None if all(w.strip() for w in words) else
                                              "must be a list of words, e.g. [joy,sadness]")


@dataclass
class Augment:
    generated_per_label: int = setting(0, ge=0, le=GENERATED)
    generator: Optional[str] = None
    generator_small: Small = MISSING
    generator_epochs: int = setting(MISSING, gt=0, le=EPOCHS)
    generator_lr: float = setting(MISSING, gt=0)
    min_tokens: int = setting(MISSING, gt=0, le=TOKENS)
    max_tokens: int = setting(MISSING, gt=0, le=TOKENS)
    top_k: int = setting(MISSING, gt=0, le=VOCAB)


SCHEMAS = [("classify", "task", ClassifyTask), ("classify", "data", ClassifyData),
           ("classify", "tokenizer", Tokenizer), ("classify", "augment", Augment)]

# the model.* keys each adapter module reads
MODEL_KEYS = {
    "hf": ("pretrained", "revision", "small", "head_init", "lora"),
    "bert_heads": ("pretrained", "revision", "small", "classifier_hidden", "hidden_size", "num_layers", "dropout",
                   "freeze"),
    "transformer": ("d_model", "num_layers", "num_heads", "d_ff", "dropout", "vocab_size"),
    "gpt2": ("pretrained", "revision", "small", "lora"),
    "gpt2_prompt": ("pretrained", "revision", "small", "question", "answer_cue", "loss_on"),
    "mlm_prompt": ("pretrained", "revision", "small", "prompt", "mlm_probability"),
    "doc2vec": ("vector_size", "window", "min_count", "epochs", "dm", "dbow_words", "infer_epochs", "lowercase", "C",
                "class_weight", "export_native"),
}
# the trainer.* keys each training loop reads: trainer.py's Trainer loop, gpt2_prompt's language-model loop
# (one batch per optimiser step, the best epoch by validation accuracy), gensim (none: model.* has its settings)
LOOP_READS = {
    "trainer": ("epochs", "batch_size", "eval_batch_size", "lr", "weight_decay", "warmup_ratio", "grad_accum",
                "label_smoothing", "max_length", "max_steps", "best_metric", "keep_checkpoints", "average_last",
                "soup", "nproc", "save_steps", "max_minutes", "precision", "patience"),
    "lm": (*READS, "max_length"),
    "gensim": (),
}
# read only by the models that train under torchrun (registry data_parallel): several machines, one run
MULTI_NODE = ("nnodes", "node_rank", "master_addr", "master_port")
LOOP_HINTS = {
    "gensim": {"epochs": "Doc2Vec trains for model.epochs", "": "model=doc2vec trains with gensim: its settings "
               "are model.vector_size, model.window, model.min_count, model.epochs and model.C"},
    "lm": {"best_metric": "gpt2_prompt keeps the epoch with the best validation accuracy",
           "": "gpt2_prompt's loop reads trainer." + ", trainer.".join(LOOP_READS["lm"])},
}


def reads(cfg) -> dict:
    """What this task x model x mode reads, by group ('' = top-level keys), and hints for what it does not."""
    if cfg.mode != "train":
        saved = "the saved run's settings (its .hydra/config.yaml) are used"
        root = {"eval": {"ckpt"}, "predict": {"ckpt", "text", "input", "output"}, "soup": {"ckpt"}}[cfg.mode]
        data = {"predict": set()}.get(cfg.mode)  # eval and soup read data.* (the split to score)
        return {"reads": {"trainer": set(), "model": set(), "tokenizer": set(), "augment": set(), "": root,
                          "data": data},
                "hints": {"trainer": saved, "model": saved, "tokenizer": saved, "augment": saved,
                          "data": "mode=predict scores text= or input= with the saved run's label settings"}}
    module, loop = registry.MODELS[cfg.model.name].adapter("classify"), registry.loop(cfg.model.name, "classify")
    hints = {f"trainer.{k}": v for k, v in LOOP_HINTS.get(loop, {}).items() if k}
    hints["trainer"] = LOOP_HINTS.get(loop, {}).get("")
    hints["tokenizer.keep_whole"] = "only the WordPiece encoders minilm, bert, finbert, bert_chinese keep whole words"
    with_lora = int(((cfg.model.get("lora") or {}).get("r")) or 0) > 0
    if with_lora:
        hints["tokenizer.keep_whole"] = ("new whole-word tokens need new embedding rows, which LoRA keeps frozen: "
                                         "model.lora.r=0 (full fine-tuning) keeps whole words")
    hints["data.eval_split"] = "mode=eval ckpt=<run> reads it; training scores validation and test"
    parallel = registry.MODELS[cfg.model.name].data_parallel
    if not parallel:
        hints.update({f"trainer.{k}": _one_process(cfg.model.name) for k in MULTI_NODE})
    data = {f.name for f in fields(ClassifyData)} - {"eval_split"}
    return {"reads": {"trainer": set(LOOP_READS[loop]) | set(MULTI_NODE if parallel else ()),
                      "model": {"name", *MODEL_KEYS[module]},
                      "tokenizer": {"keep_whole"} if module == "hf" and not with_lora else set(), "augment": None,
                      "": set(),
                      "data": data},
            "hints": hints}


def check(cfg) -> list[str]:
    errors = []
    data, mode = cfg.data, cfg.mode
    errors += data_errors(data)
    if mode == "train":
        errors += _train_errors(cfg)
    if mode == "soup":
        runs = cfg.get("ckpt")
        if not OmegaConf.is_list(runs) or len(runs) < 2:
            errors.append("mode=soup needs ckpt=[<run folder>,<run folder>,...] (two or more)")
        else:
            errors += run_folder_errors(cfg)
        if registry.loop(cfg.model.name, "classify") != "trainer":
            errors.append(f"mode=soup averages torch weights: model={cfg.model.name} has none")
    if mode in ("eval", "predict"):
        errors += run_folder_errors(cfg)
        if mode == "predict" and not (cfg.get("text") or cfg.get("input")):
            errors.append('mode=predict needs text="..." or input=<file>')
        errors += input_errors(cfg)
    task = cfg.task
    if not task.labels and task.label_sets and str(task.label_set) not in task.label_sets:
        errors.append(f"task.label_set must be one of {', '.join(map(str, task.label_sets))} (got {task.label_set!r})")
    if mode == "train" and not task.labels and not task.label_sets and not data.get("path") \
            and data.source != "embedded":
        errors.append("task.labels=null takes the labels from a file: give data.path=<file> or task.labels")
    if cfg.model.name == "bert_chinese_mlm":
        long = [str(name) for name in (task.labels or []) if len(str(name)) != 1]
        if long:
            errors.append(f"model=bert_chinese_mlm needs one-character labels (task {task.name} has {', '.join(long)})")
    return errors


def _one_process(model: str) -> str:
    return (f"model {model} trains in one process (data parallel: "
            + ", ".join(m.name for m in registry.MODELS.values() if m.data_parallel) + ")")


def _train_errors(cfg) -> list[str]:
    errors, tr, model = [], cfg.trainer, cfg.model
    loop = registry.loop(model.name, "classify")
    if tr.epochs == 0:
        errors += _zero_shot_errors(cfg)
    if tr.nproc > 1 and not registry.MODELS[model.name].data_parallel:
        errors.append(f"trainer.nproc={tr.nproc}: {_one_process(model.name)}")
    if tr.node_rank is not None and tr.node_rank >= tr.nnodes:
        errors.append(f"trainer.node_rank={tr.node_rank} must be below trainer.nnodes={tr.nnodes}")
    if tr.soup > 1:
        if loop != "trainer":
            errors.append(f"trainer.soup={tr.soup}: only classifiers trained by the transformers Trainer make soups "
                          f"(not task={cfg.task.name} model={model.name})")
        clashes = [(tr.nproc != 1, "trainer.nproc=1"), (tr.nnodes != 1, "trainer.nnodes=1"),
                   (bool(tr.average_last), "trainer.average_last=0"),
                   (cfg.get("resume_from") is not None, "no resume_from")]
        errors += [f"trainer.soup={tr.soup} trains its ingredients one after another: use {fix}"
                   for clash, fix in clashes if clash]
    errors += _lora_errors(cfg)
    aug = cfg.get("augment")
    if aug is not None and aug.generated_per_label and aug.min_tokens > aug.max_tokens:
        errors.append(f"augment.min_tokens ({aug.min_tokens}) must not exceed augment.max_tokens ({aug.max_tokens})")
    eval_on = cfg.get("eval_on")
    if eval_on:
        from pathlib import Path

        from nlpexp.readers import resource_path, special_file_error

        if isinstance(eval_on, str):
            errors.append(f"eval_on must be a list, e.g. eval_on=[emotion_alt.csv] (got {eval_on!r})")
        else:
            errors += [f"eval_on: {special_file_error(spec) or f'{spec} is neither a file nor an embedded sample'}"
                       for spec in eval_on
                       if not (resource_path(str(spec)).is_file() or Path(str(spec)).expanduser().is_file())]
            errors += _not_text(spec for spec in eval_on if Path(str(spec)).expanduser().is_file())
    return errors


def _lora_errors(cfg) -> list[str]:
    """model.lora.r > 0: peft installed, and nothing that needs full checkpoints."""
    import importlib.util

    lora, tr = cfg.model.get("lora"), cfg.trainer
    if not lora or not int(lora.get("r") or 0):
        return []
    errors = [] if importlib.util.find_spec("peft") else [
        f"model.lora.r={lora.r} trains LoRA adapters with peft, which is not installed: pip install 'nlpexp[peft]'"]
    clashes = [(tr.epochs == 0, "trainer.epochs=0 (zero-shot) trains nothing: use trainer.epochs >= 1"),
               (bool(tr.average_last), "trainer.average_last averages whole-model checkpoints, and a LoRA run's "
                "hold only the adapter: use trainer.average_last=0")]
    return errors + [f"model.lora.r={lora.r}: {why}" for clash, why in clashes if clash]


ZERO_SHOT = ("hf", "gpt2", "mlm_prompt", "gpt2_prompt")  # adapters whose pretrained model can answer untrained


def _zero_shot_errors(cfg) -> list[str]:
    """trainer.epochs=0 scores a pretrained model as it is: its own head (hf, gpt2: mapped by label name) or its
    language-model head prompted (mlm_prompt, gpt2_prompt)."""
    from nlpexp.hub import builds_small

    model, tr = cfg.model, cfg.trainer
    module = registry.MODELS[model.name].adapter("classify")
    if module not in ZERO_SHOT:
        return [f"trainer.epochs=0 (zero-shot) scores a pretrained model as it is; model={model.name} starts "
                "untrained (" + ("its head is new" if module == "bert_heads" else "it is trained from scratch")
                + "): use trainer.epochs >= 1"]
    if builds_small(model):  # a smoke run's hub id is null by now (its wing's smoke file)
        return ["trainer.epochs=0 (zero-shot) scores a pretrained model as it is, but " + (
            "+smoke=true builds hub models small and untrained" if cfg.get("smoke") else
            "model.pretrained=null builds an untrained model") + ": give model.pretrained=<hub id or local folder>"]
    clashes = [(tr.nproc > 1, "trainer.nproc"), (tr.nnodes > 1, "trainer.nnodes"), (tr.soup > 1, "trainer.soup"),
               (bool(tr.average_last), "trainer.average_last")]
    return [f"trainer.epochs=0 (zero-shot) trains nothing: {key} has nothing to do" for clash, key in clashes if clash]


def _not_text(paths) -> list[str]:
    """Files that cannot be text data (empty, binary, a folder), said before any model is built or loaded."""
    from pathlib import Path

    from nlpexp.readers import text_file_error

    return [problem for path in paths if (problem := text_file_error(Path(str(path)).expanduser()))]
