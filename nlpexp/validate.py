"""Config checks that need no heavy import: run before any run folder exists."""
import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from nlpexp import registry
from nlpexp.errors import UserError


def _positive(errors, cfg, key, integer=False, allow_zero=False):
    value = cfg
    for part in key.split("."):
        value = value.get(part) if value is not None else None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok:
        ok = value >= 0 if allow_zero else value > 0
    if not ok:
        need = "an integer" if integer else "a number"
        need += " >= 0" if allow_zero else " > 0"
        errors.append(f"{key} must be {need} (got {value!r})")


def _check_run_folder(errors: list[str], cfg: DictConfig, what: str = "run folder") -> None:
    """Modes that read a saved run (eval, predict, apply, generate) need ckpt=<its folder>."""
    if not cfg.get("ckpt"):
        errors.append(f"mode={cfg.mode} needs ckpt=<{what}>")
    elif not (Path(str(cfg.ckpt)).expanduser() / ".hydra" / "config.yaml").exists():
        errors.append(f"ckpt={cfg.ckpt} is not a run folder (no .hydra/config.yaml inside)")


def _soup_conflicts(cfg: DictConfig) -> list[str]:
    if registry.loop(cfg.model.name, registry.wing(cfg.task.name)) != "trainer":
        return [f"trainer.soup={cfg.trainer.soup}: only classifiers trained by the transformers Trainer make soups "
                f"(not task={cfg.task.name} model={cfg.model.name})"]
    clashes = [(cfg.trainer.get("nproc", 1) not in (None, 1), "trainer.nproc=1"),
               (bool(cfg.trainer.get("average_last")), "trainer.average_last=0"),
               (cfg.get("resume_from") is not None, "no resume_from")]
    return [f"trainer.soup={cfg.trainer.soup} trains its ingredients one after another: use {fix}"
            for clash, fix in clashes if clash]


def check_config(cfg: DictConfig) -> None:
    """Raise one UserError listing every problem found."""
    registry.check(cfg.task.name, cfg.model.name, cfg.mode)
    errors: list[str] = []
    if cfg.mode == "train":
        _positive(errors, cfg, "trainer.lr")
        _positive(errors, cfg, "trainer.epochs", integer=True, allow_zero=cfg.task.name == "story")  # 0: zero-shot
        _positive(errors, cfg, "trainer.batch_size", integer=True)
        _positive(errors, cfg, "trainer.grad_accum", integer=True)
        _positive(errors, cfg, "trainer.weight_decay", allow_zero=True)
        if "nproc" in cfg.trainer:
            _positive(errors, cfg, "trainer.nproc", integer=True)
            parallel = registry.MODELS[cfg.model.name].data_parallel and registry.wing(cfg.task.name) == "classify"
            if isinstance(cfg.trainer.nproc, int) and cfg.trainer.nproc > 1 and not parallel:
                errors.append(f"trainer.nproc={cfg.trainer.nproc}: model {cfg.model.name} trains in one process "
                              "(data parallel: " + ", ".join(m.name for m in registry.MODELS.values()
                                                              if m.data_parallel) + ")")
        soup = cfg.trainer.get("soup", 1)
        if soup != 1:
            _positive(errors, cfg, "trainer.soup", integer=True)
            if isinstance(soup, int) and soup > 1:
                errors += _soup_conflicts(cfg)
        if "save_steps" in cfg.trainer:
            _positive(errors, cfg, "trainer.save_steps", integer=True, allow_zero=True)
        warm = cfg.trainer.warmup_ratio
        if not isinstance(warm, (int, float)) or not 0 <= warm < 1:
            errors.append(f"trainer.warmup_ratio must be in [0, 1) (got {warm!r})")
        if cfg.model.get("head_init", "random") not in ("random", "probe"):
            errors.append(f"model.head_init must be random or probe (got {cfg.model.head_init!r})")
        if cfg.model.family == "doc2vec":
            for key in ("vector_size", "window", "epochs", "min_count", "C"):
                _positive(errors, cfg, f"model.{key}", integer=key != "C")
    data = cfg.get("data")
    if data is not None:
        if data.get("path"):
            for item in [data.path] if isinstance(data.path, str) else list(data.path):  # novel takes a list
                path = Path(str(item)).expanduser()
                if not path.exists():
                    errors.append(f"data file not found: {path}")
        if data.source not in ("embedded", "hub", "file"):
            errors.append(f"data.source must be embedded, hub or file (got {data.source!r})")
        if data.source == "file" and not data.get("path"):
            errors.append("data.source=file needs data.path=<file>")
        split = list(data.get("split") or [])
        if "split" in data and (len(split) != 3 or any(not isinstance(f, (int, float)) or f <= 0 for f in split)
                                or abs(sum(split) - 1) > 1e-6):
            errors.append(f"data.split must be three fractions > 0 summing to 1 (got {split})")
    if cfg.mode == "soup":
        runs = cfg.get("ckpt")
        if not OmegaConf.is_list(runs) or len(runs) < 2:
            errors.append("mode=soup needs ckpt=[<run folder>,<run folder>,...] (two or more)")
        else:
            errors += [f"ckpt: {r} is not a finished run folder (no checkpoints/best inside)" for r in runs
                       if not (Path(str(r)).expanduser() / "checkpoints" / "best").exists()]
    if cfg.mode in ("eval", "predict"):
        _check_run_folder(errors, cfg)
        if cfg.mode == "predict" and not (cfg.get("text") or cfg.get("input")):
            errors.append('mode=predict needs text="..." or input=<file>')
        if cfg.get("input") and not Path(str(cfg.input)).expanduser().exists():
            errors.append(f"input file not found: {cfg.input}")
    if cfg.get("logger") is not None:
        from nlpexp.loggers import missing_dependency

        if missing_dependency(cfg):
            errors.append(missing_dependency(cfg))
    if cfg.task.name == "embedding":
        _check_embedding(errors, cfg)
    if cfg.task.name == "novel":
        _check_novel(errors, cfg)
    if cfg.task.name == "story":
        _check_story(errors, cfg)
    if registry.wing(cfg.task.name) == "classify":
        _check_classification(errors, cfg)
    if cfg.task.name == "emotion" or cfg.get("eval_on") or cfg.get("augment") or cfg.model.family == "gpt2_prompt":
        _check_emotion(errors, cfg)
    if cfg.device.name not in ("auto", "cpu", "cuda", "mps"):
        errors.append(f"device must be auto, cpu, cuda or mps (got {cfg.device.name!r})")
    if errors:
        raise UserError("; ".join(errors))


def _check_embedding(errors: list[str], cfg: DictConfig) -> None:
    task = cfg.task
    if cfg.mode == "apply":
        _check_run_folder(errors, cfg, "a task=embedding run folder")
        if not cfg.get("input"):
            errors.append("mode=apply needs input=<texts .txt/.csv/.jsonl or embeddings .npy>")
        elif not Path(str(cfg.input)).expanduser().exists():
            errors.append(f"input file not found: {cfg.input}")
        return
    choices = {"method": ("matrix", "finetune", "none"), "negatives": ("random", "contradiction"),
               "init": ("identity", "orthogonal", "random")}
    for key, allowed in choices.items():
        if task.get(key) not in allowed:
            errors.append(f"task.{key} must be one of {', '.join(allowed)} (got {task.get(key)!r})")
    _positive(errors, cfg, "task.negatives_per_positive", integer=True)
    _positive(errors, cfg, "task.modified_dim", integer=True)
    _positive(errors, cfg, "task.threshold_steps", integer=True)
    if not isinstance(task.dropout, (int, float)) or not 0 <= task.dropout < 1:
        errors.append(f"task.dropout must be in [0, 1) (got {task.dropout!r})")
    if task.min_gain is not None:
        _positive(errors, cfg, "task.min_gain", allow_zero=True)
    if task.patience is not None:
        _positive(errors, cfg, "task.patience", integer=True)
    if cfg.get("data") is not None and cfg.data.get("max_pairs") is not None:
        _positive(errors, cfg, "data.max_pairs", integer=True)
    if task.method == "finetune":
        from nlpexp.tasks.embedding.sentence_transformers import LOSSES

        if cfg.model.family not in ("sentence_transformers", "hf_encoder"):
            errors.append(f"task.method=finetune trains a transformer encoder; model={cfg.model.name} is not one "
                          "(use sentence_transformers, minilm, bert or finbert)")
        if task.finetune.loss not in LOSSES:
            errors.append(f"task.finetune.loss must be one of {', '.join(LOSSES)} (got {task.finetune.loss!r})")
        for key in ("epochs", "batch_size"):
            _positive(errors, cfg, f"task.finetune.{key}", integer=True)
        _positive(errors, cfg, "task.finetune.lr")


def _check_novel(errors: list, cfg) -> None:
    _positive(errors, cfg, "task.seq_len", integer=True)
    _positive(errors, cfg, "data.stride", integer=True)
    _positive(errors, cfg, "data.eval_stride", integer=True)
    _positive(errors, cfg, "data.min_freq", integer=True)
    if cfg.data.punctuation not in ("full", "half", "none"):
        errors.append(f"data.punctuation must be full, half or none (got {cfg.data.punctuation!r})")
    if cfg.task.get("mixed_precision", "auto") not in ("auto", "bf16", "no"):
        errors.append(f"task.mixed_precision must be auto, bf16 or no (got {cfg.task.mixed_precision!r})")
    g = cfg.generate
    if g.strategy not in ("sample", "beam"):
        errors.append(f"generate.strategy must be sample or beam (got {g.strategy!r})")
    _positive(errors, cfg, "generate.temperature")
    _positive(errors, cfg, "generate.top_k", integer=True, allow_zero=True)
    _positive(errors, cfg, "generate.repeat_window", integer=True, allow_zero=True)
    _positive(errors, cfg, "generate.beam_size", integer=True)
    _positive(errors, cfg, "generate.num_samples", integer=True)
    _positive(errors, cfg, "generate.eval_prompts", integer=True)
    _positive(errors, cfg, "generate.eval_length", integer=True)
    if not isinstance(g.top_p, (int, float)) or not 0 < g.top_p <= 1:
        errors.append(f"generate.top_p must be in (0, 1] (got {g.top_p!r})")
    if cfg.model.family == "bert_heads" and cfg.model.get("pool", "last") not in ("last", "cls"):
        errors.append(f"model.pool must be last or cls (got {cfg.model.pool!r})")
    if cfg.model.family == "bert_heads" and cfg.model.get("causal") and cfg.model.get("pool") == "cls":
        errors.append("model.pool=cls needs model.causal=false ([CLS] sees nothing after it in causal mode)")
    if cfg.mode == "generate":
        _positive(errors, cfg, "length", integer=True)
        if not cfg.get("prompt"):
            errors.append('mode=generate needs prompt="..."')
        _check_run_folder(errors, cfg)


def _check_story(errors: list, cfg) -> None:
    _positive(errors, cfg, "task.bpe_vocab_size", integer=True)
    _positive(errors, cfg, "task.window", integer=True)
    _positive(errors, cfg, "task.max_len", integer=True)
    for key in ("test_size", "val_size"):
        value = cfg.data.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0 \
                or (value >= 1 and not float(value).is_integer()):
            errors.append(f"data.{key} must be a count (integer >= 1), a fraction in [0, 1) (got {value!r})")
    if cfg.model.family == "transformer" and cfg.model.get("objective") not in ("next_token", "causal_lm"):
        errors.append(f"model.objective must be next_token or causal_lm (got {cfg.model.get('objective')!r})")
    if cfg.model.family == "gpt2":
        _positive(errors, cfg, "model.freeze_layers", integer=True, allow_zero=True)
    g = cfg.generate
    if g.strategy not in ("greedy", "sample", "beam"):
        errors.append(f"generate.strategy must be greedy, sample or beam (got {g.strategy!r})")
    _positive(errors, cfg, "generate.temperature")
    for key in ("top_k", "no_repeat_ngram_size", "max_sentences", "cut_repeated_kgram"):
        _positive(errors, cfg, f"generate.{key}", integer=True, allow_zero=True)
    for key in ("num_beams", "max_new_tokens", "num_samples", "batch_size"):
        _positive(errors, cfg, f"generate.{key}", integer=True)
    _positive(errors, cfg, "generate.repetition_penalty")
    if not isinstance(g.top_p, (int, float)) or not 0 < g.top_p <= 1:
        errors.append(f"generate.top_p must be in (0, 1] (got {g.top_p!r})")
    temps = list(g.eval_temperatures or [])
    if not temps or any(not isinstance(t, (int, float)) or t <= 0 for t in temps):
        errors.append(f"generate.eval_temperatures must be a non-empty list of numbers > 0 (got {temps})")
    if cfg.mode == "generate":
        if not cfg.get("prompt"):
            errors.append('mode=generate needs prompt="..."')
        if cfg.get("ckpt"):
            _check_run_folder(errors, cfg)


def _check_classification(errors: list, cfg) -> None:
    """Keys of the classification heads (bert_fc, bert_lstm, transformer, bert_chinese_mlm) and data formats."""
    model = cfg.model
    if model.family == "bert_heads":
        freeze = model.get("freeze")
        if not (freeze in (None, True, False, "none", "all", "all_but_pooler")
                or (isinstance(freeze, int) and freeze >= 0)):
            errors.append(f"model.freeze must be none, all, all_but_pooler or a number of layers >= 0 (got {freeze!r})")
        if "classifier_hidden" in model:
            _positive(errors, cfg, "model.classifier_hidden", integer=True)
    if model.family == "transformer" and cfg.mode == "train":
        for key in ("d_model", "num_layers", "num_heads", "d_ff", "vocab_size"):
            _positive(errors, cfg, f"model.{key}", integer=True)
        if isinstance(model.d_model, int) and isinstance(model.num_heads, int) and model.num_heads > 0 \
                and model.d_model % model.num_heads:
            errors.append(f"model.d_model={model.d_model} must be divisible by model.num_heads={model.num_heads}")
    if model.family == "mlm_prompt":
        prompt = str(model.get("prompt") or "")
        if "{text}" not in prompt or "[MASK]" not in prompt:
            errors.append("model.prompt must contain {text} and [MASK]")
        p = model.get("mlm_probability", 0.0)
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 <= p < 1:
            errors.append(f"model.mlm_probability must be in [0, 1) (got {p!r})")
        long = [str(name) for name in (cfg.task.labels or []) if len(str(name)) != 1]
        if long:
            errors.append(f"model=bert_chinese_mlm needs one-character labels (task {cfg.task.name} has "
                          f"{', '.join(long)})")
    data = cfg.get("data")
    if data is not None:
        formats = ("auto", "phrasebank", "csv", "tsv", "jsonl", "clue")
        for key in ("format", "embedded_format"):
            if key in data and data[key] not in formats:
                errors.append(f"data.{key} must be one of {', '.join(formats)} (got {data[key]!r})")
        from_file = not cfg.task.labels and not cfg.task.get("label_sets")
        if from_file and cfg.mode == "train" and not data.get("path") and data.source != "embedded":
            errors.append("task.labels=null takes the labels from a file: give data.path=<file> or task.labels")


def _check_emotion(errors: list, cfg) -> None:
    """task=emotion keys: label set, label unification, balanced sampling, keyword tokens, augmentation, eval_on."""
    task, data = cfg.task, cfg.data
    if not task.get("labels"):
        sets = task.get("label_sets") or {}
        if str(task.get("label_set")) not in sets:
            errors.append(f"task.label_set must be one of {', '.join(map(str, sets))} (got {task.get('label_set')!r})")
    if data.get("other_labels", "error") not in ("drop", "error"):
        errors.append(f"data.other_labels must be drop or error (got {data.other_labels!r})")
    if data.get("label_map") is not None and not hasattr(data.label_map, "items"):
        errors.append(f"data.label_map must be a mapping like {{happy: joy}} (got {data.label_map!r})")
    if data.get("per_label") is not None:
        _positive(errors, cfg, "data.per_label", integer=True)
    words = (cfg.get("tokenizer") or {}).get("keep_whole")
    if words is not None and (isinstance(words, str) or not all(isinstance(w, str) and w.strip() for w in words)):
        errors.append(f"tokenizer.keep_whole must be a list of words, e.g. [joy,sadness] (got {words!r})")
    aug = cfg.get("augment")
    if aug is not None and cfg.mode == "train":
        _positive(errors, cfg, "augment.generated_per_label", integer=True, allow_zero=True)
        if aug.generated_per_label:
            for key in ("generator_epochs", "min_tokens", "max_tokens", "top_k"):
                _positive(errors, cfg, f"augment.{key}", integer=True)
            _positive(errors, cfg, "augment.generator_lr")
            lo, hi = aug.get("min_tokens"), aug.get("max_tokens")
            if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
                errors.append(f"augment.min_tokens ({lo}) must not exceed augment.max_tokens ({hi})")
    eval_on = cfg.get("eval_on")
    if eval_on:
        from nlpexp.readers import resource_path

        if isinstance(eval_on, str):
            errors.append(f"eval_on must be a list, e.g. eval_on=[emotion_alt.csv] (got {eval_on!r})")
        else:
            for spec in eval_on:
                if not (resource_path(str(spec)).is_file() or Path(str(spec)).expanduser().is_file()):
                    errors.append(f"eval_on: {spec} is neither a file nor an embedded sample")
    if cfg.model.get("family") == "gpt2_prompt":
        if "{labels}" not in str(cfg.model.get("question", "")):
            errors.append("model.question must contain {labels} (the label words are listed in the prompt)")
        if cfg.model.get("loss_on", "all") not in ("all", "answer"):
            errors.append(f"model.loss_on must be all or answer (got {cfg.model.loss_on!r})")
        if not str(cfg.model.get("answer_cue", "")).strip():
            errors.append("model.answer_cue must not be empty")
