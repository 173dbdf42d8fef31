"""The classification wing's config, as the dataclasses that read it: the task, data, tokenizer and augment
nodes, each adapter's model.* (its Adapter record's `config`) and gpt2_prompt's loop. A key a run does not read is
not a field of what reads it; the cross-key rules live beside the fields (`check`). Imported before any run: no
torch here."""
from dataclasses import dataclass, field
from typing import ClassVar, Dict, List, Optional

from omegaconf import MISSING

from nlpexp.config.schema import (EPOCHS, GENERATED, SAMPLES, SOURCES, TOKENS, VOCAB, WIDTH, LAYERS, BertHead,
                                  Doc2VecEmbedder, Loop, Lora, Pretrained, Small, TransformerSizes, setting,
                                  split_error)

FORMATS = ("auto", "phrasebank", "csv", "tsv", "jsonl", "parquet", "clue")


@dataclass
class ClassifyTask:
    name: str = MISSING
    labels: Optional[List[str]] = None          # null: label_sets[label_set], or taken from the data
    label_set: Optional[str] = None
    label_sets: Optional[Dict[str, List[str]]] = None
    # several labels per text: one sigmoid per label, binary cross-entropy, per-label thresholds chosen on
    # validation (the adapters whose dataclass has MULTI_LABEL; the others refuse it)
    multi_label: bool = False


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
    text_pair_column: Optional[str] = None   # a second text: sentence-pair classification (given as a pair)
    label_column: Optional[str] = None
    # task.multi_label: the labels of a text joined by this in one column (a JSONL/Parquet list needs none)
    label_separator: str = setting(",", check=lambda v: None if v else "must not be empty")
    # hub data: {train|validation|test: the dataset's own split name}, e.g. {validation: dev}
    hub_splits: Dict[str, str] = setting({})
    label_map: Dict[str, str] = setting({})  # {} not null: a command-line {a: b} or +data.label_map.a=b merges into it
    # integer labels in the data: id i is label_names[i] (then label_map applies); without it they are refused
    label_names: Optional[List[str]] = setting(None, check=lambda names: None if names else
                                               "must name the label ids in order, e.g. [negative,neutral,positive]")
    other_labels: str = setting("error", choices=("drop", "error"))
    per_label: Optional[int] = setting(None, gt=0, le=SAMPLES)
    split: List[float] = setting(MISSING, check=split_error)
    split_seed: Optional[int] = setting(None, ge=0, lt=2 ** 32)
    max_train_samples: Optional[int] = setting(None, gt=0, le=SAMPLES)
    max_eval_samples: Optional[int] = setting(None, gt=0, le=SAMPLES)
    eval_split: str = setting("test", choices=("train", "validation", "test"), modes=("eval",),
                              hint="mode=eval ckpt=<run> reads it; training scores validation and test")


@dataclass
class PredictColumns:
    """mode=predict input=<table>: which of its columns hold the texts (null: text/sentence/... as for training;
    the pair column: the saved run's data.text_pair_column when it had one). The other data.* are the run's."""
    UNREAD: ClassVar[str] = "mode=predict scores text= or input= with the saved run's label settings"
    text_column: Optional[str] = None
    text_pair_column: Optional[str] = None


@dataclass
class Tokenizer:
    keep_whole: Optional[List[str]] = setting(
        None, check=lambda words: None if all(w.strip() for w in words) else
        "must be a list of words, e.g. [joy,sadness]",
        hint="only the WordPiece encoders minilm, bert, finbert, bert_chinese keep whole words")


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

    def check(self, cfg) -> list[str]:
        if self.generated_per_label and self.min_tokens > self.max_tokens:
            return [f"augment.min_tokens ({self.min_tokens}) must not exceed augment.max_tokens ({self.max_tokens})"]
        return []


SCHEMAS = [("classify", "task", ClassifyTask), ("classify", "data", ClassifyData),
           ("classify", "tokenizer", Tokenizer), ("classify", "augment", Augment)]


# -- model.*: one dataclass per adapter. UNTRAINED: why trainer.epochs=0 (zero-shot) cannot score it (None: its
# pretrained model answers as it is). MULTI_LABEL: it runs task.multi_label=true. PAIRS: its tokenizer is given
# sentence pairs as pairs (the others read the two texts joined by " [SEP] "). PREPARE: mode=prepare caches the
# tokenized splits it trains on (trainer.fit's; the others read raw text) -----------------------------------------
@dataclass
class HFClassifier(Pretrained):
    """minilm, bert, finbert, bert_chinese: an HF encoder with a classification head (hf.py)."""
    UNTRAINED: ClassVar[Optional[str]] = None
    PREPARE: ClassVar[bool] = True
    PAIRS: ClassVar[bool] = True  # sentence pairs reach its tokenizer as pairs
    MULTI_LABEL: ClassVar[bool] = True
    head_init: str = setting("random", choices=("random", "probe"))
    lora: Lora = field(default_factory=Lora)

    def reads(self) -> dict:
        return {"tokenizer": (Tokenizer,)}

    def check(self, cfg) -> list[str]:
        if self.lora.r and (cfg.get("tokenizer") or {}).get("keep_whole"):
            return ["tokenizer.keep_whole is not read with LoRA (new whole-word tokens need new embedding rows, which "
                    "LoRA keeps frozen: model.lora.r=0 (full fine-tuning) keeps whole words)"]
        return []


@dataclass
class MLMPromptClassifier(Pretrained):
    """bert_chinese_mlm: the masked LM answers a prompt with one label character (mlm_prompt.py)."""
    UNTRAINED: ClassVar[Optional[str]] = None
    prompt: str = setting(MISSING, check=lambda v: None if "{text}" in v and "[MASK]" in v else
                          "must contain {text} and [MASK]")
    mlm_probability: float = setting(0.0, ge=0, lt=1)


@dataclass
class BertHeadClassifier(BertHead):
    """bert_fc: BERT and Linear -> ReLU -> Dropout -> Linear (bert_heads.py)."""
    UNTRAINED: ClassVar[Optional[str]] = "its head is new"
    PREPARE: ClassVar[bool] = True
    PAIRS: ClassVar[bool] = True  # sentence pairs reach its tokenizer as pairs
    MULTI_LABEL: ClassVar[bool] = True
    classifier_hidden: int = setting(MISSING, gt=0, le=WIDTH)


@dataclass
class BertLSTMClassifier(BertHead):
    """bert_lstm: BERT and an LSTM over its token states (bert_heads.py)."""
    UNTRAINED: ClassVar[Optional[str]] = "its head is new"
    PREPARE: ClassVar[bool] = True
    PAIRS: ClassVar[bool] = True  # sentence pairs reach its tokenizer as pairs
    MULTI_LABEL: ClassVar[bool] = True
    hidden_size: int = setting(MISSING, gt=0, le=WIDTH)
    num_layers: int = setting(MISSING, gt=0, le=LAYERS)


@dataclass
class TransformerClassifier(TransformerSizes):
    """Our own Transformer encoder with a WordPiece trained on the data (transformer.py)."""
    UNTRAINED: ClassVar[Optional[str]] = "it is trained from scratch"
    PREPARE: ClassVar[bool] = True
    PAIRS: ClassVar[bool] = True  # sentence pairs reach its tokenizer as pairs
    vocab_size: int = setting(MISSING, gt=0, le=VOCAB)


@dataclass
class GPT2Classifier(Pretrained):
    """GPT-2 with a sequence-classification head (gpt2.py)."""
    UNTRAINED: ClassVar[Optional[str]] = None
    PREPARE: ClassVar[bool] = True
    PAIRS: ClassVar[bool] = True  # sentence pairs reach its tokenizer as pairs
    lora: Lora = field(default_factory=Lora)


@dataclass
class GPT2PromptClassifier(Pretrained):
    """gpt2_prompt: GPT-2 fine-tuned as a language model to answer with a label word (gpt2_prompt.py)."""
    UNTRAINED: ClassVar[Optional[str]] = None
    question: str = setting(MISSING, check=lambda v: None if "{labels}" in v else
                            "must contain {labels} (the label words are listed in the prompt)")
    answer_cue: str = setting(MISSING, check=lambda v: None if v.strip() else "must not be empty")
    loss_on: str = setting("all", choices=("all", "answer"))


@dataclass
class Doc2VecClassifier(Doc2VecEmbedder):
    """Doc2Vec embeddings and a logistic regression (doc2vec.py)."""
    UNTRAINED: ClassVar[Optional[str]] = "it is trained from scratch"
    MULTI_LABEL: ClassVar[bool] = True  # one logistic regression per label (one-vs-rest)
    C: float = setting(MISSING, gt=0)
    class_weight: Optional[str] = setting(None, choices=("balanced",))


@dataclass
class PrepareLoop:
    """What mode=prepare reads of trainer.*: the length the texts are truncated at when tokenized."""
    UNREAD: ClassVar[str] = "mode=prepare only tokenizes the data: it reads trainer.max_length"
    max_length: int = setting(MISSING, gt=0, le=TOKENS)


@dataclass
class PromptLoop(Loop):
    """gpt2_prompt's language-model loop (nlpexp.training.loop): one batch per optimiser step, the best epoch by
    validation accuracy."""
    INSTEAD: ClassVar[dict] = {"trainer.best_metric": "gpt2_prompt keeps the epoch with the best validation accuracy"}
    max_length: int = setting(MISSING, gt=0, le=TOKENS)
