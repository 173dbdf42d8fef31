"""The story wing's config: schemas of task/data/generate, the keys each adapter and the training loop read,
and the checks that span several keys. Imported before any run: no torch here."""
from dataclasses import dataclass, field, fields
from typing import Any, List, Optional

from omegaconf import MISSING, OmegaConf

from nlpexp import registry
from nlpexp.training.loop import READS
from nlpexp.schema import (GENERATED, SAMPLES, SOURCES, TOKENS, VOCAB, WIDTH, DecodingControls, data_errors,
                           run_folder_errors, setting)


def _count_or_fraction(value) -> str | None:
    ok = 0 <= value <= SAMPLES and (value < 1 or float(value).is_integer())
    return None if ok else f"must be a count (integer in [1, {SAMPLES}]) or a fraction in [0, 1) (got {value!r})"


@dataclass
class StoryTask:
    name: str = MISSING
    bpe_vocab_size: int = setting(MISSING, gt=0, le=VOCAB)
    window: int = setting(MISSING, gt=0, le=TOKENS)
    max_len: int = setting(MISSING, gt=0, le=TOKENS)


@dataclass
class StoryData:
    source: str = setting(MISSING, choices=SOURCES)
    embedded: Optional[str] = None
    path: Any = None                     # a story file or a list of them (the first is the main file)
    test_path: Any = None                # the test stories' file(s); the main file then gives none
    hub_id: Optional[str] = None
    hub_config: Optional[str] = None     # the dataset's configuration (dair-ai/emotion: split)
    revision: Optional[str] = None       # the hub dataset's branch, tag or commit (null: main)
    hub_split: str = "train"
    test_size: Optional[float] = setting(None, check=_count_or_fraction)
    val_size: float = setting(0, check=_count_or_fraction)
    max_stories: Optional[int] = setting(None, gt=0, le=SAMPLES)
    max_train_samples: Optional[int] = setting(None, gt=0, le=SAMPLES)
    max_eval_samples: Optional[int] = setting(None, gt=0, le=SAMPLES)


@dataclass
class StoryGenerate(DecodingControls):
    """The shared decoding controls, then story's length, stop rules, text cuts and evaluation."""
    max_new_tokens: int = setting(MISSING, gt=0, le=TOKENS)
    max_sentences: int = setting(MISSING, ge=0, le=GENERATED)
    no_empty_sentences: bool = True
    cut_repeated_kgram: int = setting(MISSING, ge=0, le=TOKENS)
    num_samples: int = setting(MISSING, gt=0, le=GENERATED)
    batch_size: int = setting(MISSING, gt=0, le=WIDTH)
    eval_temperatures: List[float] = setting(MISSING, check=lambda v: None if v else "must not be empty",
                                             each={"gt": 0})
    search: List[Any] = field(default_factory=list)  # decoding settings scored on validation; the best is tested


SEARCHED = ("strategy", "temperature", "top_k", "top_p", "num_beams", "repetition_penalty", "no_repeat_ngram_size",
            "repeat_window", "length_penalty", "max_new_tokens", "max_sentences", "no_empty_sentences",
            "cut_repeated_kgram")


def search_errors(cfg) -> list[str]:
    """generate.search: a list of settings, each a map of the generate.* keys it changes (checked like them);
    the grid needs validation stories to be scored on."""
    from nlpexp.schema import node_errors

    grid = cfg.generate.get("search") or []
    errors = []
    for i, item in enumerate(grid):
        where = f"generate.search[{i}]"
        if not OmegaConf.is_dict(item) or not item:
            errors.append(f"{where} must be a map of generate.* settings, e.g. {{strategy: beam, num_beams: 4}}")
            continue
        unknown = [k for k in item if k not in SEARCHED]
        if unknown:
            errors.append(f"{where}.{unknown[0]}: not a decoding setting (these are: {', '.join(SEARCHED)})")
            continue
        merged = OmegaConf.merge(OmegaConf.to_container(cfg.generate), {"search": []}, item)
        errors += [e.replace("generate.", f"{where}.", 1) for e in node_errors(merged, StoryGenerate, "generate")]
    if grid and cfg.mode in ("train", "eval") and not cfg.data.get("val_size"):
        errors.append("generate.search scores its settings on validation stories: set data.val_size (e.g. 200)")
    return errors


SCHEMAS = [("story", "task", StoryTask), ("story", "data", StoryData), ("story", "generate", StoryGenerate)]

# the model.* keys each adapter module reads
MODEL_KEYS = {
    "transformer": ("d_model", "num_layers", "num_heads", "d_ff", "dropout", "objective"),
    "transformer_encdec": ("d_model", "num_layers", "num_heads", "d_ff", "dropout"),
    "gpt2": ("pretrained", "revision", "small", "freeze_layers"),
    "bert2bert": ("pretrained", "revision", "small", "freeze_embeddings", "new_lr_scale"),
}


def task_keys(module: str, m) -> tuple:
    """The task.* keys an adapter reads when it builds its model (trainer runs; saved runs read none)."""
    from nlpexp.hub import builds_small

    if module == "transformer":
        return ("bpe_vocab_size", "max_len" if m.get("objective") == "causal_lm" else "window")
    if module == "transformer_encdec":
        return ("bpe_vocab_size", "max_len")
    small = builds_small(m)  # gpt2 and bert2bert built small; pretrained ones bring their tokenizer
    return {"gpt2": ("bpe_vocab_size", "max_len"), "bert2bert": ("max_len",)}[module] if small else ()


RENAMED = {"task.max_train_minutes": "trainer.max_minutes"}  # old key -> the key that does its job
# the trainer.* keys the story loop (nlpexp.training.loop, the training loss and the validation/test scoring) reads;
# mode=eval reads eval_batch_size and precision
LOOP_READS = (*READS, "eval_batch_size", "label_smoothing")
# the generate.* keys mode=generate reads; training and mode=eval read the others (and not these two)
GENERATE_READS = ("strategy", "temperature", "top_k", "top_p", "num_beams", "length_penalty", "repetition_penalty",
                  "no_repeat_ngram_size", "repeat_window", "max_new_tokens", "max_sentences", "no_empty_sentences",
                  "cut_repeated_kgram", "num_samples")
HINTS = {"trainer.max_length": "task=story sequences hold task.max_len positions",
         "length": "task=story writes up to generate.max_new_tokens tokens and generate.max_sentences sentences",
         "generate.temperature": "the evaluation after training decodes at each of generate.eval_temperatures",
         "generate.num_samples": "mode=generate reads it", "generate.eval_temperatures": "training and mode=eval "
         "read it", "generate.search": "training and mode=eval read it (mode=generate: set the chosen settings)",
         "generate.batch_size": "training and mode=eval read it", "data": "mode=generate reads no data",
         "task.bpe_vocab_size": "our models and a small-built gpt2 train a BPE of this size; a pretrained model "
         "keeps its own tokenizer, a small-built bert2bert a WordPiece of model.small.vocab_size",
         "task.window": "the next-token classifier's context (model=transformer model.objective=next_token)",
         "task.max_len": "the positions of transformer_encdec, the causal LM (model.objective=causal_lm) and "
         "small-built models; the next-token classifier sees task.window tokens, a pretrained model keeps its own"}


def reads(cfg) -> dict:
    module = registry.MODELS[cfg.model.name].adapter("story")
    trainer = {"train": set(LOOP_READS), "eval": {"eval_batch_size", "precision"}}.get(cfg.mode, set())
    model = {"name", *MODEL_KEYS[module]} if cfg.mode == "train" else {"name"}
    if cfg.mode == "generate" and not cfg.get("ckpt"):
        model |= {"pretrained", "revision"}  # the configured pretrained model generates as it is
    task = {"name", *task_keys(module, cfg.model)} if cfg.mode == "train" else {"name"}
    root = {"train": set(), "eval": {"ckpt"}, "generate": {"ckpt", "prompt"}}[cfg.mode]
    every = {f.name for f in fields(StoryGenerate)}
    generate = set(GENERATE_READS) if cfg.mode == "generate" else every - {"temperature", "num_samples"}
    hints = dict(HINTS)
    if cfg.mode != "train":
        hints.update(trainer="the saved run's model is used as trained", model="the saved run's model is used")
    return {"reads": {"trainer": trainer, "model": model, "task": task, "generate": generate, "": root,
                      **({"data": set()} if cfg.mode == "generate" else {})}, "hints": hints}


def check(cfg) -> list[str]:
    errors = data_errors(cfg.data) + data_errors(OmegaConf.create({"path": cfg.data.get("test_path")}))
    errors += search_errors(cfg)
    if cfg.data.get("test_path") and cfg.data.get("test_size") is not None:
        errors.append("data.test_path holds the test stories and data.test_size cuts them from the end of "
                      "data.path: give one (data.test_size=null)")
    if cfg.mode == "train" and (cfg.trainer.get("patience") or 0) > 0 and not cfg.data.get("val_size"):
        errors.append("trainer.patience stops on validation loss: give validation stories (data.val_size=200)")
    # a study's bert2bert cell still smoke-tests (story's smoke file builds it small, new_lr_scale 1: nothing to scale)
    if cfg.mode == "train" and cfg.model.get("new_lr_scale", 1.0) != 1.0 and cfg.model.get("pretrained") is None:
        errors.append("model.new_lr_scale scales the weights a warm start lacks: a small-built bert2bert "
                      "(model.pretrained=null) has none, every weight trains at trainer.lr")
    if cfg.mode == "eval":
        errors += run_folder_errors(cfg)
    if cfg.mode == "generate":
        if not cfg.get("prompt"):
            errors.append('mode=generate needs prompt="..."')
        if cfg.get("ckpt"):
            errors += run_folder_errors(cfg)
    return errors
