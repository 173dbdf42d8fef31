"""Config schemas: the type of every key and its range check, next to each other; values stay in YAML.

Every shipped YAML names its schema in its defaults list (`- /schema/model/bert_fc@_here_`), so Hydra types the
node at composition: a wrong type fails there, in one line. The schemas of what several tasks share (trainer,
models, device, loggers) are here; each task wing keeps its own (task, data, generate) in its checks.py.
`setting(...)` puts the range check into the field's metadata; `node_errors` runs them all and names unknown
keys (a `+key=` on a typed node), so a config is checked completely, every error listed at once. The ConfigStore
entries are made in nlpexp/conf/__init__.py, next to the YAML that names them.
"""
import math
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import MISSING


def setting(default=MISSING, *, gt=None, ge=None, lt=None, le=None, choices=None, check: Callable | None = None,
            each: dict | None = None):
    """A schema field with its checks: bounds (gt/ge/lt/le), allowed `choices`, `check(value) -> error | None`,
    `each` (bounds for every item of a list)."""
    meta = {k: v for k, v in dict(gt=gt, ge=ge, lt=lt, le=le, choices=choices, check=check, each=each).items()
            if v is not None}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def value_error(value, meta: dict, kind: str = "a number") -> str | None:
    """What is wrong with one value under a field's checks (None: nothing). kind: 'an integer' or 'a number'."""
    if value is None:
        return None
    if "choices" in meta and value not in meta["choices"]:
        names = [str(c) for c in meta["choices"]]
        allowed = " or ".join(names) if len(names) == 2 else "one of " + ", ".join(names)
        return f"must be {allowed} (got {value!r})"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number (got {value!r})"
        lo = ("gt", "(") if "gt" in meta else ("ge", "[") if "ge" in meta else None
        hi = ("lt", ")") if "lt" in meta else ("le", "]") if "le" in meta else None
        too_low = lo and not (value > meta["gt"] if lo[0] == "gt" else value >= meta["ge"])
        fails = too_low or (hi and not (value < meta["lt"] if hi[0] == "lt" else value <= meta["le"]))
        if fails:
            if too_low and kind == "an integer":  # a count below its floor: the floor (its cap only says how big)
                hi = None
            if lo and hi:
                need = f"in {lo[1]}{meta[lo[0]]}, {meta[hi[0]]}{hi[1]}"
            else:
                key, sign = (lo[0], ">" if lo[0] == "gt" else ">=") if lo else (hi[0], "<" if hi[0] == "lt" else "<=")
                need = f"{kind} {sign} {meta[key]}"
            return f"must be {need} (got {value!r})"
    if "each" in meta and isinstance(value, (list, tuple)):
        for item in value:
            problem = value_error(item, meta["each"])
            if problem:
                return f"every item {problem}"
    if "check" in meta:
        return meta["check"](value)
    return None


def node_errors(node, schema, prefix: str) -> list[str]:
    """Unknown keys and failed checks of a config node against its schema dataclass, recursively."""
    from omegaconf import DictConfig, OmegaConf

    names = {f.name: f for f in fields(schema)}
    errors = [f"{prefix}.{key}: unknown key (the keys of {prefix} are: {', '.join(names)})"
              for key in node if key not in names]
    for name, spec in names.items():
        if OmegaConf.is_missing(node, name):
            errors.append(f"{prefix}.{name} must be set")
            continue
        value = node.get(name)
        if is_dataclass(spec.type) and isinstance(value, DictConfig):
            errors += node_errors(value, spec.type, f"{prefix}.{name}")
            continue
        if isinstance(value, DictConfig) or OmegaConf.is_list(value):
            value = OmegaConf.to_container(value)
        problem = value_error(value, spec.metadata, "an integer" if "int" in str(spec.type) else "a number")
        if problem:
            errors.append(f"{prefix}.{name} {problem}")
    return errors


def typed_errors(cfg) -> list[str]:
    """node_errors for every top-level node that composition typed with a schema."""
    from omegaconf import DictConfig, OmegaConf

    errors = []
    for key in cfg:
        node = cfg.get(key)
        schema = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
        if schema is not None and is_dataclass(schema):
            errors += node_errors(node, schema, key)
    return errors


# -- upper bounds: every size, length and count a user sets has one, so a typo (an extra 0, a stray paste) is
# refused in one line before any work, instead of running until the disk, memory or patience ends ----------------
LAYERS = 1024           # layers, heads
WIDTH = 65_536          # hidden sizes, embedding widths, batch sizes
VOCAB = 1_000_000       # vocabulary sizes, top_k
TOKENS = 100_000        # lengths in tokens or characters: sequences, generated text
EPOCHS = 100_000
STEPS = 1_000_000_000   # optimiser steps, evaluation intervals
SAMPLES = 1_000_000_000  # caps on examples, stories, pairs, characters
GENERATED = 10_000      # texts generated or prompts decoded in one run
BEAMS = 64


# -- checks several wings share ----------------------------------------------------------------------------
SOURCES = ("embedded", "hub", "file")


def split_error(split) -> str | None:
    ok = len(split) == 3 and all(f > 0 for f in split) and abs(sum(split) - 1) < 1e-6
    return None if ok else f"must be three fractions > 0 summing to 1 (got {list(split)})"


def data_errors(data, folders: bool = False) -> list[str]:
    """data.path files exist and can be text (not empty, not binary; not a folder unless `folders`: task=novel
    reads folders of .txt), said before any run folder is made; data.source=file has a path."""
    errors = []
    if data.get("path"):
        from nlpexp.readers import text_file_error

        for item in [data.path] if isinstance(data.path, str) else list(data.path):  # novel takes a list
            path = Path(str(item)).expanduser()
            if not path.exists():
                errors.append(f"data file not found: {path}")
            elif not (folders and path.is_dir()):
                errors += [problem for problem in [text_file_error(path)] if problem]
    if data.get("source") == "file" and not data.get("path"):
        errors.append("data.source=file needs data.path=<file>")
    return errors


def run_folder_errors(cfg, what: str = "run folder") -> list[str]:
    """Modes that read a saved run (eval, predict, apply, generate, soup) need ckpt=<its folder>: a finished run
    (metrics.json says complete) of this task and model."""
    if not cfg.get("ckpt"):
        return [f"mode={cfg.mode} needs ckpt=<{what}>"]
    from omegaconf import OmegaConf

    runs = list(cfg.ckpt) if OmegaConf.is_list(cfg.ckpt) else [cfg.ckpt]
    if len(runs) > 1 and cfg.mode != "soup":
        return [f"mode={cfg.mode} reads one run: ckpt=<run folder>, not a list (mode=soup averages several)"]
    folders = [Path(str(run)).expanduser() for run in runs]
    repeated = [str(f) for i, f in enumerate(folders) if f.resolve() in {g.resolve() for g in folders[:i]}]
    if repeated:
        return [f"ckpt lists {repeated[0]} twice: a soup averages different runs"]
    return [e for folder in folders for e in saved_run_errors(cfg, folder)]


def saved_run_errors(cfg, folder: Path) -> list[str]:
    import yaml

    from nlpexp.runs import folder_state

    name = f"ckpt={folder}"
    if not folder.exists():
        return [f"{name}: no such folder"]
    if not folder.is_dir():
        return [f"{name} is a file: give the run folder"]
    saved = folder / ".hydra" / "config.yaml"
    if not saved.exists():
        return [f"{name} is not a run folder (no .hydra/config.yaml inside)"]
    try:
        config = yaml.safe_load(saved.read_text()) or {}
        task, model = config["task"]["name"], config["model"]["name"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return [f"{name}: its .hydra/config.yaml is unreadable or has no task/model"]
    if (config.get("mode") or "train") != "train":
        return [f"{name} is a mode={config['mode']} folder, not a training run: give the run folder it came from"]
    if task != cfg.task.name:
        return [f"{name} is a task={task} run (model={model}), not task={cfg.task.name}: drop task= (it is taken "
                f"from the run) or give task={task}"]
    if model != cfg.model.name:
        return [f"{name} is a model={model} run, not model={cfg.model.name}: drop model= (it is taken from the run)"]
    state, why = folder_state(folder)
    if state == "complete":
        return []
    advice = {"running": "wait for it to finish", "failed": "train it again",
              "unfinished": f"resume={folder} finishes it"}.get(state, "train it to the end first")
    return [f"{name} is not a finished run: {why}; {advice}"]


def input_errors(cfg) -> list[str]:
    """mode=predict|apply: input= a text file (or, for apply, an .npy of embeddings), not also text=; output= a
    file in a folder that can be written; all said before any model is loaded."""
    import os

    from nlpexp.readers import special_file_error, text_file_error

    errors = []
    if cfg.get("input"):
        source = Path(str(cfg.input)).expanduser()
        if not source.exists():
            errors.append(f"input file not found: {cfg.input}")
        elif problem := special_file_error(source):  # an .npy too: np.load on a FIFO waits forever
            errors.append(f"input={problem}")
        elif source.suffix.lower() != ".npy" and (problem := text_file_error(source)):
            errors.append(f"input={problem}")
        if cfg.get("text") is not None:
            errors.append("give text= (one text) or input= (a file), not both")
    if cfg.get("output"):
        target = Path(str(cfg.output)).expanduser()
        folder = target.parent if str(target.parent) else Path(".")
        if target.is_dir():
            errors.append(f"output={cfg.output} is a folder: give a file name")
        elif problem := special_file_error(target):  # written by renaming a finished file over it
            errors.append(f"output={problem}")
        elif not folder.is_dir():
            errors.append(f"output={cfg.output}: {folder} is not a folder")
        elif not os.access(folder, os.W_OK):
            errors.append(f"output={cfg.output}: {folder} is not writable")
    return errors


# -- shared schemas -----------------------------------------------------------------------------------------
@dataclass
class DecodingControls:
    """generate.*: the decoding controls of nlpexp/training/decoding.py (its CONTROLS), one meaning for every generation
    wing and model; each wing's generate schema extends it with its own lengths, stop rules and evaluation."""
    strategy: str = setting(MISSING, choices=("greedy", "sample", "beam"))
    temperature: float = setting(MISSING, gt=0)
    top_k: int = setting(MISSING, ge=0, le=VOCAB)
    top_p: float = setting(MISSING, gt=0, le=1)
    num_beams: int = setting(MISSING, gt=0, le=BEAMS)
    repetition_penalty: float = setting(MISSING, gt=0)
    no_repeat_ngram_size: int = setting(MISSING, ge=0, le=TOKENS)
    repeat_window: int = setting(MISSING, ge=0, le=TOKENS)
    length_penalty: float = MISSING


@dataclass
class Small:
    """`model.small`: the architecture built from config when model.pretrained=null (offline)."""
    hidden_size: int = setting(MISSING, gt=0, le=WIDTH)
    num_hidden_layers: int = setting(MISSING, gt=0, le=LAYERS)
    num_attention_heads: int = setting(MISSING, gt=0, le=LAYERS)
    intermediate_size: Optional[int] = setting(None, gt=0, le=4 * WIDTH)
    vocab_size: Optional[int] = setting(None, gt=0, le=VOCAB)


def _freeze(value) -> str | None:
    ok = value in (None, True, False, "none", "all", "all_but_pooler") or (
        isinstance(value, int) and not isinstance(value, bool) and value >= 0)
    return None if ok else f"must be none, all, all_but_pooler or a number of layers >= 0 (got {value!r})"


@dataclass
class Trainer:
    """trainer.*: which keys a training loop reads is declared with the loop (see the wings' checks.py)."""
    epochs: int = setting(MISSING, ge=0, le=EPOCHS)
    batch_size: int = setting(MISSING, gt=0, le=WIDTH)
    eval_batch_size: int = setting(MISSING, gt=0, le=WIDTH)
    lr: float = setting(MISSING, gt=0)
    weight_decay: float = setting(MISSING, ge=0)
    warmup_ratio: float = setting(MISSING, ge=0, lt=1)
    grad_accum: int = setting(MISSING, gt=0, le=WIDTH)
    label_smoothing: float = setting(MISSING, ge=0, lt=1)
    max_length: int = setting(MISSING, gt=0, le=TOKENS)
    max_steps: int = setting(MISSING, check=lambda v: None if v == -1 or 0 < v <= STEPS else
                             f"must be -1 (no cap) or an integer in [1, {STEPS}] (got {v!r})")
    best_metric: str = setting(MISSING, choices=("accuracy", "macro_f1", "weighted_precision", "weighted_recall"))
    keep_checkpoints: bool = MISSING
    average_last: int = setting(MISSING, ge=0, le=1000)
    soup: int = setting(MISSING, gt=0, le=100)
    nproc: int = setting(MISSING, gt=0, le=1024)
    nnodes: int = setting(1, gt=0, le=4096)
    node_rank: Optional[int] = setting(None, ge=0)  # null: SLURM's node id (nlpexp/training/distributed.py)
    master_addr: Optional[str] = None  # node 0's host; null: SLURM's first node
    master_port: int = setting(29500, gt=0, lt=65536)
    save_steps: int = setting(MISSING, ge=0, le=STEPS)
    max_minutes: Optional[float] = setting(None, gt=0, le=1_000_000)
    precision: str = setting("auto", choices=("auto", "fp32", "bf16", "fp16"))
    patience: int = setting(0, ge=0, le=EPOCHS)


@dataclass
class Device:
    name: str = setting(MISSING, choices=("auto", "cpu", "cuda", "mps"))


@dataclass
class CsvLogger:
    name: str = "csv"


@dataclass
class TensorboardLogger:
    name: str = "tensorboard"
    dir: str = "tensorboard"


@dataclass
class MlflowLogger:
    name: str = "mlflow"
    tracking_uri: Optional[str] = None
    experiment: Optional[str] = None


@dataclass
class WandbLogger:
    name: str = "wandb"
    project: Optional[str] = None   # null: nlpexp-<task>
    entity: Optional[str] = None    # a team or user (null: the logged-in default)
    mode: Optional[str] = setting(None, choices=("online", "offline", "disabled"))  # null: WANDB_MODE, else W&B's


# the model files (nlpexp/conf/model/): one schema each
@dataclass
class Pretrained:
    """A hub id, a local folder or a packaged name in `pretrained`; null builds the architecture from `small`."""
    name: str = MISSING
    pretrained: Optional[str] = MISSING
    revision: Optional[str] = None  # a hub model's branch, tag or commit (null: the hub's main); recorded as a commit
    small: Small = MISSING


@dataclass
class Lora:
    """`model.lora`: LoRA adapters through peft for classification (r=0: full fine-tuning)."""
    r: int = setting(0, ge=0, le=WIDTH)
    alpha: int = setting(16, gt=0, le=WIDTH)
    dropout: float = setting(0.05, ge=0, lt=1)
    target_modules: Optional[list] = setting(None, check=lambda v: None if v and all(str(m).strip() for m in v)
                                             else "must name modules, e.g. [query,value] (null: peft's choice)")
    merge: bool = False  # save the merged model (plain from_pretrained) instead of the adapter


@dataclass
class HFEncoder(Pretrained):
    """minilm, bert, finbert, bert_chinese: an HF encoder with a classification head (or mean-pooled embedder)."""
    head_init: str = setting("random", choices=("random", "probe"))
    lora: Lora = field(default_factory=Lora)


@dataclass
class BertMLMPrompt(Pretrained):
    prompt: str = setting(MISSING, check=lambda v: None if "{text}" in v and "[MASK]" in v else
                          "must contain {text} and [MASK]")
    mlm_probability: float = setting(0.0, ge=0, lt=1)


@dataclass
class BertHead(Pretrained):
    """bert_fc and bert_lstm: a BERT encoder and a head of ours (next character or classification)."""
    dropout: float = setting(MISSING, ge=0, lt=1)
    freeze: Any = setting("none", check=_freeze)
    causal: bool = False


@dataclass
class BertFC(BertHead):
    pool: str = setting("last", choices=("last", "cls"))
    fc_hidden: int = setting(MISSING, gt=0, le=WIDTH)
    classifier_hidden: int = setting(MISSING, gt=0, le=WIDTH)


@dataclass
class BertLSTM(BertHead):
    hidden_size: int = setting(MISSING, gt=0, le=WIDTH)
    num_layers: int = setting(MISSING, gt=0, le=LAYERS)


@dataclass
class GPT2(Pretrained):
    freeze_layers: int = setting(0, ge=0, le=LAYERS)
    lora: Lora = field(default_factory=Lora)


@dataclass
class Bert2Bert(Pretrained):
    """bert2bert: transformers' EncoderDecoderModel with both sides warm-started from one BERT."""
    freeze_embeddings: bool = False  # keep the pretrained word embeddings (and the tied output layer) fixed
    new_lr_scale: float = setting(1.0, gt=0)  # the weights the warm start lacks train at trainer.lr x this


@dataclass
class GPT2Prompt(Pretrained):
    question: str = setting(MISSING, check=lambda v: None if "{labels}" in v else
                            "must contain {labels} (the label words are listed in the prompt)")
    answer_cue: str = setting(MISSING, check=lambda v: None if v.strip() else "must not be empty")
    loss_on: str = setting("all", choices=("all", "answer"))


@dataclass
class TransformerEncDec:
    """Our own Transformer's sizes (transformer_encdec; transformer adds its own keys)."""
    name: str = MISSING
    d_model: int = setting(MISSING, gt=0, le=WIDTH)
    num_layers: int = setting(MISSING, gt=0, le=LAYERS)
    num_heads: int = setting(MISSING, gt=0, le=LAYERS)
    d_ff: int = setting(MISSING, gt=0, le=4 * WIDTH)
    dropout: float = setting(MISSING, ge=0, lt=1)


@dataclass
class Transformer(TransformerEncDec):
    objective: str = setting("next_token", choices=("next_token", "causal_lm"))
    vocab_size: int = setting(MISSING, gt=0, le=VOCAB)


@dataclass
class Doc2Vec:
    name: str = MISSING
    vector_size: int = setting(MISSING, gt=0, le=WIDTH)
    window: int = setting(MISSING, gt=0, le=TOKENS)
    min_count: int = setting(MISSING, gt=0, le=SAMPLES)
    epochs: int = setting(MISSING, gt=0, le=EPOCHS)
    dm: int = setting(0, choices=(0, 1))
    dbow_words: int = setting(1, choices=(0, 1))
    infer_epochs: Optional[int] = setting(None, gt=0, le=EPOCHS)
    lowercase: bool = True
    C: float = setting(MISSING, gt=0)
    class_weight: Optional[str] = setting(None, choices=("balanced",))
    export_native: bool = False  # also write gensim's own doc2vec.model (pickle-based, for gensim); never loaded back


@dataclass
class SentenceTransformers:
    name: str = MISSING
    pretrained: str = MISSING
    revision: Optional[str] = None
    batch_size: int = setting(MISSING, gt=0, le=WIDTH)
    normalize: bool = False


@dataclass
class OpenAI:
    name: str = MISSING
    engine: str = MISSING
    batch_size: int = setting(MISSING, gt=0, le=WIDTH)
    timeout: float = setting(MISSING, gt=0, le=86_400)


MODEL_SCHEMAS = {"minilm": HFEncoder, "bert": HFEncoder, "finbert": HFEncoder, "bert_chinese": HFEncoder,
                 "bert_chinese_mlm": BertMLMPrompt, "bert_fc": BertFC, "bert_lstm": BertLSTM, "gpt2": GPT2,
                 "gpt2_prompt": GPT2Prompt, "transformer": Transformer, "transformer_encdec": TransformerEncDec,
                 "bert2bert": Bert2Bert,
                 "doc2vec": Doc2Vec, "sentence_transformers": SentenceTransformers, "openai": OpenAI}
