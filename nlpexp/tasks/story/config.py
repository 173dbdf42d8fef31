"""The story wing's config, as the dataclasses that read it: the task, data and generate nodes, each adapter's
model.* (its Adapter record's `config`) and the story loop's trainer.*. A key a run does not read is not a field
of what reads it; the cross-key rules live beside the fields (`check`). Imported before any run: no torch here."""
from dataclasses import dataclass
from typing import Any, ClassVar, List, Optional

from omegaconf import MISSING, OmegaConf

from nlpexp.config.schema import (GENERATED, SAMPLES, SOURCES, TOKENS, VOCAB, WIDTH, LAYERS, DecodingControls, Loop,
                                  Pretrained, TransformerSizes, setting)


def _count_or_fraction(value) -> str | None:
    ok = 0 <= value <= SAMPLES and (value < 1 or float(value).is_integer())
    return None if ok else f"must be a count (integer in [1, {SAMPLES}]) or a fraction in [0, 1) (got {value!r})"


@dataclass
class TaskName:
    """task.* as a run that builds no tokenizer or positions of its own reads it."""
    name: str = MISSING


@dataclass
class BPE(TaskName):
    bpe_vocab_size: int = setting(MISSING, gt=0, le=VOCAB, hint=(
        "our models and a small-built gpt2 train a BPE of this size; a pretrained model keeps its own tokenizer, "
        "a small-built bert2bert a WordPiece of model.small.vocab_size"))


@dataclass
class MaxLen(TaskName):
    max_len: int = setting(MISSING, gt=0, le=TOKENS, hint=(
        "the positions of transformer_encdec, the causal LM (model.objective=causal_lm) and small-built models; "
        "the next-token classifier sees task.window tokens, a pretrained model keeps its own"))


@dataclass
class Window(TaskName):
    window: int = setting(MISSING, gt=0, le=TOKENS, hint=(
        "the next-token classifier's context (model=transformer model.objective=next_token)"))


@dataclass
class BPEMaxLen(MaxLen, BPE):
    pass


@dataclass
class BPEWindow(Window, BPE):
    pass


@dataclass
class StoryTask(MaxLen, Window, BPE):
    """Every task.* key some story model reads (the composed node)."""


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


SCORED = ("train", "eval")  # the modes that score the test stories (training ends with it)


@dataclass
class StoryGenerate(DecodingControls):
    """The shared decoding controls, then story's length, stop rules, text cuts and evaluation. Training and
    mode=eval decode at each of eval_temperatures; mode=generate at temperature."""
    temperature: float = setting(MISSING, gt=0, modes=("generate",), hint=(
        "the evaluation after training decodes at each of generate.eval_temperatures"))
    max_new_tokens: int = setting(MISSING, gt=0, le=TOKENS, instead={
        "length": "task=story writes up to generate.max_new_tokens tokens and generate.max_sentences sentences"})
    max_sentences: int = setting(MISSING, ge=0, le=GENERATED)
    no_empty_sentences: bool = True
    cut_repeated_kgram: int = setting(MISSING, ge=0, le=TOKENS)
    num_samples: int = setting(MISSING, gt=0, le=GENERATED, modes=("generate",), hint="mode=generate reads it")
    batch_size: int = setting(MISSING, gt=0, le=WIDTH, modes=SCORED, hint="training and mode=eval read it")
    eval_temperatures: List[float] = setting(MISSING, check=lambda v: None if v else "must not be empty",
                                             each={"gt": 0}, modes=SCORED, hint="training and mode=eval read it")
    # decoding settings scored on validation; the best is tested
    search: List[Any] = setting([], modes=SCORED, hint=(
        "training and mode=eval read it (mode=generate: set the chosen settings)"))


SEARCHED = ("strategy", "temperature", "top_k", "top_p", "num_beams", "repetition_penalty", "no_repeat_ngram_size",
            "repeat_window", "length_penalty", "max_new_tokens", "max_sentences", "no_empty_sentences",
            "cut_repeated_kgram")


def search_errors(cfg) -> list[str]:
    """generate.search: a list of settings, each a map of the generate.* keys it changes (checked like them);
    the grid needs validation stories to be scored on."""
    from nlpexp.config.schema import node_errors

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
RENAMED = {"task.max_train_minutes": "trainer.max_minutes"}  # old key -> the key that does its job


@dataclass
class StoryLoop(Loop):
    """nlpexp.training.loop with the training loss, then the validation and test scoring."""
    INSTEAD: ClassVar[dict] = {"trainer.max_length": "task=story sequences hold task.max_len positions"}
    eval_batch_size: int = setting(MISSING, gt=0, le=WIDTH)
    label_smoothing: float = setting(MISSING, ge=0, lt=1)


@dataclass
class SavedModel:
    """trainer.* of mode=eval: the saved run's model scores the test stories."""
    UNREAD: ClassVar[str] = "the saved run's model is used as trained"
    eval_batch_size: int = setting(MISSING, gt=0, le=WIDTH)
    precision: str = setting("auto", choices=("auto", "fp32", "bf16", "fp16"))


@dataclass
class PretrainedModel:
    """model.* of mode=generate without ckpt=: the configured pretrained model generates as it is."""
    name: str = MISSING
    pretrained: Optional[str] = None
    revision: Optional[str] = None


# -- model.*: one dataclass per adapter; `task()` the task.* dataclass the adapter reads when it builds ----------
@dataclass
class StoryTransformer(TransformerSizes):
    """Our own Transformer: the next-token classifier over a window, or a causal LM (transformer.py)."""
    objective: str = setting("next_token", choices=("next_token", "causal_lm"))

    def task(self) -> type:
        return BPEMaxLen if self.objective == "causal_lm" else BPEWindow


@dataclass
class StoryEncDec(TransformerSizes):
    """Our own encoder-decoder Transformer (transformer_encdec.py)."""

    def task(self) -> type:
        return BPEMaxLen


@dataclass
class StoryGPT2(Pretrained):
    """GPT-2 as a causal LM (gpt2.py); built small it trains a BPE of task.bpe_vocab_size."""
    freeze_layers: int = setting(0, ge=0, le=LAYERS)

    def task(self) -> type:
        return BPEMaxLen if self.pretrained is None else TaskName


@dataclass
class Bert2Bert(Pretrained):
    """bert2bert: transformers' EncoderDecoderModel with both sides warm-started from one BERT."""
    freeze_embeddings: bool = False  # keep the pretrained word embeddings (and the tied output layer) fixed
    new_lr_scale: float = setting(1.0, gt=0)  # the weights the warm start lacks train at trainer.lr x this

    def task(self) -> type:
        return MaxLen if self.pretrained is None else TaskName

    def check(self, cfg) -> list[str]:
        # a study's bert2bert cell still smoke-tests (story's smoke file builds it small, new_lr_scale 1)
        if cfg.mode == "train" and self.new_lr_scale != 1.0 and self.pretrained is None:
            return ["model.new_lr_scale scales the weights a warm start lacks: a small-built bert2bert "
                    "(model.pretrained=null) has none, every weight trains at trainer.lr"]
        return []
