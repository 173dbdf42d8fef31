"""The novel wing's config, as the dataclasses that read it: the task, data and generate nodes, each adapter's
model.* (its Adapter record's `config`) and the novel loop's trainer.*. A key a run does not read is not a field
of what reads it; the cross-key rules live beside the fields (`check`). Imported before any run: no torch here."""
from dataclasses import dataclass
from typing import Any, ClassVar, List, Optional

from omegaconf import MISSING

from nlpexp.config.schema import (GENERATED, SAMPLES, STEPS, TOKENS, VOCAB, WIDTH, LAYERS, BertHead, DecodingControls,
                                  Loop, Pretrained, TransformerSizes, setting, split_error)


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


AFTER_TRAINING = "only the evaluation after training reads it"


@dataclass
class NovelGenerate(DecodingControls):
    """The shared decoding controls, then mode=generate's batch, bert_lstm's stepping and the evaluation after
    training (held-out continuations: sampled, and beam-searched too with eval_beam)."""
    strategy: str = setting(MISSING, choices=("greedy", "sample", "beam"), modes=("generate",), hint=(
        "the held-out continuations after training are sampled, and beam-searched too with generate.eval_beam"))
    num_samples: int = setting(MISSING, gt=0, le=GENERATED, modes=("generate",), hint="mode=generate reads it")
    stateful: bool = True
    eval_prompts: int = setting(MISSING, gt=0, le=GENERATED, modes=("train",), hint=AFTER_TRAINING)
    eval_length: int = setting(MISSING, gt=0, le=TOKENS, modes=("train",), hint=AFTER_TRAINING)
    eval_beam: bool = setting(True, modes=("train",), hint=AFTER_TRAINING)


SCHEMAS = [("novel", "task", NovelTask), ("novel", "data", NovelData), ("novel", "generate", NovelGenerate)]
# keys that were renamed: refused at composition with the new name (nlpexp.config.validate.renamed_hint)
RENAMED = {"generate.beam_size": "generate.num_beams", "task.max_train_minutes": "trainer.max_minutes",
           "task.mixed_precision": "trainer.precision",
           "task.bigram_k": "task.ngram_discounts (the add-k bigram became Kneser-Ney bigram and trigram baselines)"}




@dataclass
class NovelLoop(Loop):
    """nlpexp.training.loop, and the scoring of the held-out windows."""
    INSTEAD: ClassVar[dict] = {"trainer.max_length": "task=novel windows hold task.seq_len characters"}
    eval_batch_size: int = setting(MISSING, gt=0, le=WIDTH)

    def check(self, cfg) -> list[str]:
        if cfg.mode == "train" and self.epochs == 0:
            return ["trainer.epochs must be an integer > 0 for task=novel (0, zero-shot, is task=story's)"]
        return []


# -- model.*: one dataclass per adapter --------------------------------------------------------------------------
@dataclass
class NextCharBert(BertHead):
    """bert_fc and bert_lstm: BERT and a next-character head (bert.py): an MLP over the last or [CLS] state, or
    an LSTM."""
    causal: bool = False


@dataclass
class NextCharBertFC(NextCharBert):
    pool: str = setting("last", choices=("last", "cls"))
    fc_hidden: int = setting(MISSING, gt=0, le=WIDTH, instead={
        "model.classifier_hidden": "bert_fc's next-character MLP is model.fc_hidden"})

    def check(self, cfg) -> list[str]:
        if self.causal and self.pool == "cls":
            return ["model.pool=cls needs model.causal=false ([CLS] sees nothing after it in causal mode)"]
        return []


@dataclass
class NextCharBertLSTM(NextCharBert):
    hidden_size: int = setting(MISSING, gt=0, le=WIDTH)
    num_layers: int = setting(MISSING, gt=0, le=LAYERS)


@dataclass
class NextCharGPT2(Pretrained):
    """GPT-2 over characters (gpt2.py)."""


@dataclass
class NextCharTransformer(TransformerSizes):
    """Our own Transformer over characters (transformer.py)."""
