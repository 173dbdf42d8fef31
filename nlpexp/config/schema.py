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
from typing import Any, Callable, ClassVar, Optional

from omegaconf import MISSING


def setting(default=MISSING, *, gt=None, ge=None, lt=None, le=None, choices=None, check: Callable | None = None,
            each: dict | None = None, hint: str | None = None, instead: dict | None = None, modes: tuple = None):
    """A config field with its checks: bounds (gt/ge/lt/le), allowed `choices`, `check(value) -> error | None`,
    `each` (bounds for every item of a list). `hint`: what to tell a run that gets this key and does not read it
    (who reads it). `instead`: {'group.key': why} the keys of other groups whose job this field does where it is
    read (e.g. task=novel's task.seq_len for trainer.max_length); a hint may be a function of the run's config.
    `modes`: the modes that read it (default: every
    mode that reads its dataclass)."""
    meta = {k: v for k, v in dict(gt=gt, ge=ge, lt=lt, le=le, choices=choices, check=check, each=each, hint=hint,
                                  instead=instead, modes=modes).items() if v is not None}
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
        from nlpexp.inputs.readers import is_parquet, parquet_file_error, text_file_error

        for item in [data.path] if isinstance(data.path, str) else list(data.path):  # novel takes a list
            path = Path(str(item)).expanduser()
            if not path.exists():
                errors.append(f"data file not found: {path}")
            elif not (folders and path.is_dir()):
                check = parquet_file_error if is_parquet(path, data.get("format")) else text_file_error
                errors += [problem for problem in [check(path)] if problem]
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

    from nlpexp.inputs.readers import is_parquet, parquet_file_error, special_file_error, text_file_error

    errors = []
    if cfg.get("input"):
        source = Path(str(cfg.input)).expanduser()
        if not source.exists():
            errors.append(f"input file not found: {cfg.input}")
        elif problem := special_file_error(source):  # an .npy too: np.load on a FIFO waits forever
            errors.append(f"input={problem}")
        elif source.suffix.lower() != ".npy" and (problem := (parquet_file_error if is_parquet(source) else
                                                              text_file_error)(source)):
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


# -- trainer.*: the dataclass of each training loop (its Adapter record names it); the composed trainer node holds
# the keys of every loop, and a run refuses those its loop does not read ---------------------------------------
@dataclass
class LoopSteps:
    """What every torch loop reads: accumulation, the deadline, step saves, precision (all task.method=finetune
    reads of trainer.*: its schedule is task.finetune's)."""
    grad_accum: int = setting(MISSING, gt=0, le=WIDTH)
    max_minutes: Optional[float] = setting(None, gt=0, le=1_000_000)
    save_steps: int = setting(MISSING, ge=0, le=STEPS)
    precision: str = setting("auto", choices=("auto", "fp32", "bf16", "fp16"))


@dataclass
class LoopCore(LoopSteps):
    """nlpexp.training.loop at a constant rate (the embedding matrix): how long, how big, how fast, when to stop."""
    epochs: int = setting(MISSING, ge=0, le=EPOCHS)
    batch_size: int = setting(MISSING, gt=0, le=WIDTH)
    lr: float = setting(MISSING, gt=0)
    max_steps: int = setting(MISSING, check=lambda v: None if v == -1 or 0 < v <= STEPS else
                             f"must be -1 (no cap) or an integer in [1, {STEPS}] (got {v!r})")
    patience: int = setting(0, ge=0, le=EPOCHS)


@dataclass
class Loop(LoopCore):
    """nlpexp/training/loop.py: AdamW with linear warm-up and decay."""
    weight_decay: float = setting(MISSING, ge=0)
    warmup_ratio: float = setting(MISSING, ge=0, lt=1)


@dataclass
class HFTrainerLoop(Loop):
    """nlpexp/training/hf_trainer.py: the transformers Trainer (classification), in one process or several."""
    eval_batch_size: int = setting(MISSING, gt=0, le=WIDTH)
    label_smoothing: float = setting(MISSING, ge=0, lt=1)
    max_length: int = setting(MISSING, gt=0, le=TOKENS)
    best_metric: str = setting(MISSING, choices=("accuracy", "macro_f1", "weighted_precision", "weighted_recall"))
    keep_checkpoints: bool = MISSING
    average_last: int = setting(MISSING, ge=0, le=1000)
    soup: int = setting(MISSING, gt=0, le=100)
    nproc: int = setting(MISSING, gt=0, le=1024)


def ONE_PROCESS(cfg) -> str:  # noqa: N802 (a hint computed for the run: which models train data parallel)
    from nlpexp.config import registry

    return (f"model {cfg.model.name} trains in one process (data parallel: "
            + ", ".join(m.name for m in registry.MODELS.values() if m.data_parallel) + ")")


@dataclass
class DistributedHFTrainerLoop(HFTrainerLoop):
    """The Trainer under torchrun over several machines: the data-parallel models (their Adapter records)."""
    nnodes: int = setting(1, gt=0, le=4096, hint=ONE_PROCESS)
    node_rank: Optional[int] = setting(None, ge=0, hint=ONE_PROCESS)  # null: SLURM's node id (training/distributed.py)
    master_addr: Optional[str] = setting(None, hint=ONE_PROCESS)  # node 0's host; null: SLURM's first node
    master_port: int = setting(29500, gt=0, lt=65536, hint=ONE_PROCESS)


Trainer = DistributedHFTrainerLoop  # the composed trainer node: every key of some loop


@dataclass
class Device:
    name: str = setting(MISSING, choices=("auto", "cpu", "cuda", "mps"))


@dataclass
class Eval:
    """eval.*: how sure the test metrics are (nlpexp/report/stats.py): a percentile bootstrap over the test items."""
    bootstrap: int = setting(1000, ge=0, le=100_000, hint="resamples of the test items for each metric's 95 % "
                             "interval (0: none)")


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


# -- model.*: what several wings' adapters share; each adapter's own dataclass (its Adapter record's `config`,
# in the wing's checks.py) builds on these. The schema a model's YAML is composed with is the union of the
# dataclasses of its adapters (nlpexp/conf/__init__.py), and a run refuses the keys its adapter does not read ------
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


def _freeze(value) -> str | None:
    ok = value in (None, True, False, "none", "all", "all_but_pooler") or (
        isinstance(value, int) and not isinstance(value, bool) and value >= 0)
    return None if ok else f"must be none, all, all_but_pooler or a number of layers >= 0 (got {value!r})"


@dataclass
class BertHead(Pretrained):
    """bert_fc and bert_lstm: a BERT encoder and a head of ours (next character or classification)."""
    dropout: float = setting(MISSING, ge=0, lt=1)
    freeze: Any = setting("none", check=_freeze)


@dataclass
class TransformerSizes:
    """Our own Transformer's sizes."""
    name: str = MISSING
    d_model: int = setting(MISSING, gt=0, le=WIDTH)
    num_layers: int = setting(MISSING, gt=0, le=LAYERS)
    num_heads: int = setting(MISSING, gt=0, le=LAYERS)
    d_ff: int = setting(MISSING, gt=0, le=4 * WIDTH)
    dropout: float = setting(MISSING, ge=0, lt=1)

    def check(self, cfg) -> list[str]:
        return [f"model.d_model={self.d_model} must be divisible by model.num_heads={self.num_heads}"] \
            if self.d_model % self.num_heads else []


@dataclass
class Doc2VecEmbedder:
    """gensim's Doc2Vec, as an embedder."""
    WITHOUT_TRAINER: ClassVar[str] = ("model=doc2vec trains with gensim: its settings are model.vector_size, "
                                      "model.window, model.min_count, model.epochs and model.C")
    name: str = MISSING
    vector_size: int = setting(MISSING, gt=0, le=WIDTH)
    window: int = setting(MISSING, gt=0, le=TOKENS)
    min_count: int = setting(MISSING, gt=0, le=SAMPLES)
    epochs: int = setting(MISSING, gt=0, le=EPOCHS, instead={"trainer.epochs": "Doc2Vec trains for model.epochs"})
    dm: int = setting(0, choices=(0, 1))
    dbow_words: int = setting(1, choices=(0, 1))
    infer_epochs: Optional[int] = setting(None, gt=0, le=EPOCHS)
    lowercase: bool = True
    export_native: bool = False  # also write gensim's own doc2vec.model (pickle-based, for gensim); never loaded back


# -- the top-level keys only some modes read (the rest: seed, mode, resume, dry_run ... every run reads) --------
@dataclass
class SavedRun:
    """The modes that read a saved run."""
    ckpt: Any = setting(None, hint="the saved-run modes read it: mode=eval|predict|soup|generate|apply")


@dataclass
class Inputs(SavedRun):
    """A saved run applied to a file (mode=predict|apply)."""
    input: Optional[str] = setting(None, hint="mode=predict|apply ckpt=<run> reads it")
    output: Optional[str] = setting(None, hint="mode=predict|apply ckpt=<run> reads it")


@dataclass
class Predict(Inputs):
    text: Optional[str] = setting(None, hint="mode=predict ckpt=<run> reads it")


@dataclass
class Generate(SavedRun):
    prompt: Optional[str] = setting(None, hint="mode=generate reads it")


@dataclass
class GenerateLength(Generate):
    length: Optional[int] = setting(None, hint="task=novel mode=generate reads it")


MODE_ARGS = (Predict, GenerateLength)  # every top-level key some mode reads is a field of one of these


def consumed_fields(classes) -> dict:
    """{name: dataclass field} of every field of the given dataclasses (the first declaration of a name)."""
    found = {}
    for cls in classes:
        for f in fields(cls):
            found.setdefault(f.name, f)
    return found


def typed(node, cls: type):
    """The instance of dataclass `cls` holding the values of its fields in `node` (the rest of the node is what
    other adapters of the same model read)."""
    from omegaconf import OmegaConf

    values = OmegaConf.to_container(node, resolve=True)
    names = {f.name for f in fields(cls)}
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls),
                                               {k: v for k, v in values.items() if k in names}))


def union(name: str, classes) -> type:
    """One dataclass holding the fields of all `classes` (the first declaration of a name wins): the schema a
    shared YAML is composed with when several adapters read it, each its own part."""
    from dataclasses import make_dataclass

    import dataclasses

    def copy(f):
        if f.default_factory is not dataclasses.MISSING:
            return field(default_factory=f.default_factory, metadata=f.metadata)
        return field(default=f.default, metadata=f.metadata)

    return make_dataclass(name, [(f.name, f.type, copy(f)) for f in consumed_fields(classes).values()])
