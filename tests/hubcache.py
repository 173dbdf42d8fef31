"""Test-time builder of a hub-shaped local Hugging Face cache.

``build_hub_cache(home)`` writes, under ``home`` (use it as ``HF_HOME``), what a
real user's machine holds after an *online* ``from_pretrained`` /
``load_dataset`` of the repos the project uses, so tests can run the real
huggingface_hub / transformers / datasets code paths with ``HF_HUB_OFFLINE=1``:

* ``home/hub/models--<org>--<name>/`` and ``home/hub/datasets--<org>--<name>/``:
  ``refs/main`` (a 40-hex commit id = sha1 of the repo id), ``blobs/<etag>``
  (git-sha1 for small files, sha256 for LFS-type files, as the Hub does) and
  ``snapshots/<commit>/<path>`` relative symlinks to the blobs (plain copies
  where the platform has no symlinks).
* ``home/datasets/<org>___<name>/<config>/0.0.0/<commit>/``: the Arrow cache
  that ``datasets.load_dataset`` prepares online (and the only thing it reads
  when offline, see the note below), with its ``dataset_info.json``.

Every text and vocabulary is generated here or taken from the project's own
``nlpexp/resources`` files; models are tiny (hidden 32, 1 layer, 2 heads,
intermediate 64) and randomly initialised with a fixed seed, except the
FinBERT head, rigged to answer ``finbert_answers`` for every text.

Note on datasets 5.2.0 offline: ``dataset_module_factory`` raises
``OfflineModeIsEnabled`` *before* consulting the hub cache (load.py, the
``_raise_if_offline_mode_is_enabled()`` call in the hub branch) and then falls
back to ``CachedDatasetModuleFactory`` which only globs
``HF_HOME/datasets/<org>___<name>/*/*/*`` and ignores ``revision``; hence the
prepared Arrow cache is written too.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import re
import shutil
import string
import tempfile
from pathlib import Path

RESOURCES = Path(__file__).resolve().parents[1] / "nlpexp" / "resources"

FINBERT = "ProsusAI/finbert"
BERT_EN = "google-bert/bert-base-uncased"
GPT2 = "openai-community/gpt2"
BERT_ZH = "google-bert/bert-base-chinese"
PHRASEBANK = "atrost/financial_phrasebank"
EMOTION = "dair-ai/emotion"
ROCSTORIES = "mintujupally/ROCStories"

PHRASEBANK_LABELS = ["negative", "neutral", "positive"]
EMOTION_LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]

_TINY = dict(hidden=32, layers=1, heads=2, intermediate=64)
_LFS_SUFFIXES = (".safetensors", ".bin", ".parquet", ".arrow", ".h5", ".msgpack", ".pt")


# --------------------------------------------------------------------------
# cache layout helpers
# --------------------------------------------------------------------------
def commit_for(repo_id: str, repo_type: str = "model") -> str:
    """Deterministic 40-hex commit id of a fake repo."""
    return hashlib.sha1(f"{repo_type}:{repo_id}".encode()).hexdigest()


def repo_folder(home: Path, repo_id: str, repo_type: str = "model") -> Path:
    return Path(home) / "hub" / f"{repo_type}s--{repo_id.replace('/', '--')}"


def _etag(data: bytes, path: str) -> str:
    if path.endswith(_LFS_SUFFIXES):  # LFS files: etag is the sha256 of the content
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git blob sha1


def _write_repo(home: Path, repo_id: str, files: dict[str, bytes], repo_type: str = "model") -> str:
    """Write {path_in_repo: bytes} as a hub cache repo; return its commit id."""
    commit = commit_for(repo_id, repo_type)
    root = repo_folder(home, repo_id, repo_type)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "blobs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)  # no trailing newline, like the hub
    snap = root / "snapshots" / commit
    for rel, data in sorted(files.items()):
        blob = root / "blobs" / _etag(data, rel)
        if not blob.exists():
            blob.write_bytes(data)
        dst = snap / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists() or dst.is_symlink():
            dst.unlink()
        try:
            os.symlink(os.path.relpath(blob, dst.parent), dst)
        except (OSError, NotImplementedError):
            shutil.copyfile(blob, dst)
    return commit


def _read_dir(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --------------------------------------------------------------------------
# texts (all ours: project resources or generated here)
# --------------------------------------------------------------------------
def _csv_rows(name: str) -> list[dict]:
    with open(RESOURCES / name, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _english_texts() -> list[str]:
    texts = [r["text"] for r in _csv_rows("finsent.csv")]
    texts += [r["text"] for r in _csv_rows("emotion.csv")]
    for r in _csv_rows("stories.csv"):
        texts += [r[f"sentence{i}"] for i in range(1, 6)]
    return texts


def _split_balanced(rows: list[tuple[str, int]], n_labels: int, sizes=(60, 20, 20), seed=0):
    """Split (text, label) rows into len(sizes) parts, every label in every part."""
    rng = random.Random(seed)
    by_label = {k: [r for r in rows if r[1] == k] for k in range(n_labels)}
    for v in by_label.values():
        rng.shuffle(v)
    parts = []
    for size in sizes:
        part = []
        for k in range(n_labels):  # one of each label first
            part.append(by_label[k].pop())
        pool = [r for k in range(n_labels) for r in by_label[k]]
        rng.shuffle(pool)
        while len(part) < size and pool:
            r = pool.pop()
            by_label[r[1]].remove(r)
            part.append(r)
        rng.shuffle(part)
        parts.append(part)
    return parts


# --------------------------------------------------------------------------
# tokenizers
# --------------------------------------------------------------------------
_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_ASCII = string.ascii_lowercase + string.digits + string.punctuation


def _bert_en_vocab() -> list[str]:
    words: dict[str, int] = {}
    for t in _english_texts():
        for w in re.findall(r"[a-z0-9]+", t.lower()):
            words[w] = words.get(w, 0) + 1
    common = sorted(w for w, c in words.items() if c >= 2 and len(w) > 1)
    vocab = _SPECIALS + list(_ASCII) + [f"##{c}" for c in string.ascii_lowercase + string.digits]
    return vocab + [w for w in common if w not in vocab]


def _bert_zh_vocab() -> list[str]:
    chars: set[str] = set("正负乐哀怒爱惊惧恶")
    for name in ("chnsenti.csv", "novel_zh.txt", "zh_emotion.csv"):
        chars.update((RESOURCES / name).read_text(encoding="utf-8"))
    chars = {c for c in chars if not c.isspace() and c.isprintable()}
    chars -= set(string.ascii_uppercase)  # do_lower_case: uppercase never reaches the vocab
    vocab = _SPECIALS + list(_ASCII) + [f"##{c}" for c in string.ascii_lowercase + string.digits]
    return vocab + sorted(c for c in chars if c not in vocab)


def _save_bert_tokenizer(vocab: list[str], out: Path, chinese: bool) -> None:
    from transformers import BertTokenizerFast  # transformers 5: alias of the tokenizers-backed BertTokenizer

    # transformers 5's BertTokenizer takes ``vocab`` (a dict); ``vocab_file=`` is silently ignored
    # and leaves a 5-token vocabulary.
    tok = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True,
                            tokenize_chinese_chars=True, strip_accents=None)
    tok.model_max_length = 512
    tok.save_pretrained(out)
    assert len(tok) == len(vocab), (len(tok), len(vocab))
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")


def _save_gpt2_tokenizer(out: Path, vocab_size: int = 500):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(_english_texts(), vocab_size=vocab_size - 1, min_frequency=2,
                            show_progress=False, special_tokens=[])
    bpe.add_special_tokens(["<|endoftext|>"])  # last id, like the real gpt2 (50256)
    tok = GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>",
                            eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                            add_prefix_space=False)
    tok.model_max_length = 1024
    tok.save_pretrained(out)
    bpe._tokenizer.model.save(str(out))  # vocab.json + merges.txt (slow-format files)
    return tok


# --------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------
def _bert_config(vocab_size: int, **extra):
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=_TINY["hidden"],
                      num_hidden_layers=_TINY["layers"], num_attention_heads=_TINY["heads"],
                      intermediate_size=_TINY["intermediate"], max_position_embeddings=512, **extra)


def _finbert(out: Path, labels, answer) -> None:
    import torch
    from transformers import BertForSequenceClassification

    labels = list(labels)
    if answer not in labels:
        raise ValueError(f"finbert_answers={answer!r} not in {labels}")
    vocab = _bert_en_vocab()
    _save_bert_tokenizer(vocab, out, chinese=False)
    cfg = _bert_config(len(vocab), id2label=dict(enumerate(labels)),
                       label2id={name: i for i, name in enumerate(labels)})
    cfg.architectures = ["BertForSequenceClassification"]
    model = BertForSequenceClassification(cfg)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        model.classifier.bias[labels.index(answer)] = 10.0
    model.save_pretrained(out)


def _bert_mlm(out: Path, vocab: list[str], chinese: bool) -> None:
    from transformers import BertForMaskedLM

    _save_bert_tokenizer(vocab, out, chinese=chinese)
    cfg = _bert_config(len(vocab))
    cfg.architectures = ["BertForMaskedLM"]
    BertForMaskedLM(cfg).save_pretrained(out)


def _gpt2(out: Path) -> None:
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

    tok = _save_gpt2_tokenizer(out)
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    cfg = GPT2Config(vocab_size=len(tok), n_positions=1024, n_embd=_TINY["hidden"],
                     n_layer=_TINY["layers"], n_head=_TINY["heads"], n_inner=_TINY["intermediate"],
                     bos_token_id=eos, eos_token_id=eos)
    cfg.architectures = ["GPT2LMHeadModel"]
    model = GPT2LMHeadModel(cfg)
    model.generation_config = GenerationConfig(bos_token_id=eos, eos_token_id=eos)
    model.save_pretrained(out)


# --------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------
def _features_yaml(features) -> list[str]:
    lines = ["  features:"]
    for name, feat in features.items():
        lines.append(f"  - name: {name}")
        if getattr(feat, "names", None) is not None:
            lines += ["    dtype:", "      class_label:", "        names:"]
            lines += [f"          '{i}': {n}" for i, n in enumerate(feat.names)]
        else:
            lines.append(f"    dtype: {feat.dtype}")
    return lines


def _readme(configs: list[dict], title: str) -> str:
    """configs: [{name, features, splits: {split: (path_glob, num_examples, num_bytes)},
    download_size, default}] -> README.md with the Hub's YAML front matter."""
    multi = len(configs) > 1
    out = ["---", "dataset_info:"]
    for c in configs:
        block = _features_yaml(c["features"]) + ["  splits:"]
        for split, (_, n, nbytes) in c["splits"].items():
            block += [f"  - name: {split}", f"    num_bytes: {nbytes}", f"    num_examples: {n}"]
        size = sum(v[2] for v in c["splits"].values())
        block += [f"  download_size: {c['download_size']}", f"  dataset_size: {size}"]
        out += ([f"- config_name: {c['name']}"] if multi else []) + block
    out.append("configs:")
    for c in configs:
        out.append(f"- config_name: {c['name']}")
        out.append("  data_files:")
        for split, (glob, _, _) in c["splits"].items():
            out += [f"  - split: {split}", f"    path: {glob}"]
        if c.get("default") and multi:
            out.append("  default: true")
    out += ["---", "", f"# {title}", "",
            "Synthetic test fixture written by nlpexp's tests/hubcache.py.", ""]
    return "\n".join(out)


def _write_dataset(home: Path, repo_id: str, configs: list[dict], title: str, stage: Path,
                   prepared: bool = True) -> str:
    """configs: [{name, features, splits: {split: rows_dict}, dir, default}]"""
    from datasets import Dataset

    files: dict[str, bytes] = {}
    card = []
    for c in configs:
        splits = {}
        dl = 0
        for split, rows in c["splits"].items():
            ds = Dataset.from_dict(rows, features=c["features"])
            rel = f"{c['dir']}/{split}-00000-of-00001.parquet"
            p = stage / repo_id / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            ds.to_parquet(str(p))
            files[rel] = p.read_bytes()
            dl += len(files[rel])
            splits[split] = (f"{c['dir']}/{split}-*", len(ds), ds.data.nbytes)
        card.append(dict(name=c["name"], features=c["features"], splits=splits,
                         download_size=dl, default=c.get("default")))
    files["README.md"] = _readme(card, title).encode()
    files[".gitattributes"] = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"
    commit = _write_repo(home, repo_id, files, repo_type="dataset")
    for c in configs if prepared else ():
        _prepare_arrow_cache(home, repo_id, commit, c["name"])
    return commit


def _prepare_arrow_cache(home: Path, repo_id: str, commit: str, config_name: str) -> None:
    """Write HF_HOME/datasets/<org>___<name>/<config>/0.0.0/<commit>/ as an online
    ``load_dataset(repo_id, config_name)`` would (same builder, names and hash),
    reading the parquet files from the snapshot instead of hf://."""
    from datasets import DownloadConfig
    from datasets.info import DatasetInfosDict
    from datasets.load import (BuilderConfigsParameters, DatasetModule,
                               create_builder_configs_from_metadata_configs,
                               get_dataset_builder_class)
    from datasets.naming import camelcase_to_snakecase
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    snap = repo_folder(home, repo_id, "dataset") / "snapshots" / commit
    card = DatasetCard.load(snap / "README.md").data
    metadata_configs = MetadataConfigs.from_dataset_card_data(card)
    dataset_infos = DatasetInfosDict.from_dataset_card_data(card)
    base_path = str(snap)
    module_path, _ = _PACKAGED_DATASETS_MODULES["parquet"]
    builder_configs, default_config_name = create_builder_configs_from_metadata_configs(
        module_path, metadata_configs, base_path=base_path, default_builder_kwargs={},
        download_config=DownloadConfig())
    if default_config_name is None and len(dataset_infos) == 1:
        default_config_name = next(iter(dataset_infos))
    module = DatasetModule(module_path, commit,
                           {"base_path": base_path, "repo_id": repo_id,
                            "dataset_name": camelcase_to_snakecase(Path(repo_id).name)},
                           dataset_infos=dataset_infos,
                           builder_configs_parameters=BuilderConfigsParameters(
                               metadata_configs=metadata_configs, builder_configs=builder_configs,
                               default_config_name=default_config_name))
    kwargs = dict(module.builder_kwargs)
    dataset_name = kwargs.pop("dataset_name")
    kwargs.pop("repo_id")  # the builder insists data files be hf://datasets/<repo_id>@... URLs
    builder = get_dataset_builder_class(module, dataset_name=dataset_name)(
        cache_dir=str(Path(home) / "datasets"), dataset_name=dataset_name, config_name=config_name,
        hash=commit, info=dataset_infos.get(config_name), **kwargs)
    builder.repo_id = repo_id  # ... so set it afterwards: it names the <org>___<name> folder
    builder._cache_dir = builder._build_cache_dir()
    builder.download_and_prepare()
    # online, the download checksums are keyed by hf:// URLs pinned to the commit
    info_path = Path(builder.cache_dir) / "dataset_info.json"
    info = json.loads(info_path.read_text())
    if info.get("download_checksums"):
        info["download_checksums"] = {
            f"hf://datasets/{repo_id}@{commit}/" + Path(k).resolve().relative_to(snap.resolve()).as_posix()
            if str(Path(k).resolve()).startswith(str(snap.resolve())) else k: v
            for k, v in info["download_checksums"].items()
        }
        info_path.write_text(json.dumps(info, sort_keys=True))


def _phrasebank_splits():
    lab = {n: i for i, n in enumerate(PHRASEBANK_LABELS)}
    rows = [(r["text"], lab[r["label"]]) for r in _csv_rows("finsent.csv") if r["label"] in lab]
    return _split_balanced(rows, len(PHRASEBANK_LABELS), seed=1)


def _emotion_splits():
    lab = {n: i for i, n in enumerate(EMOTION_LABELS)}
    rows = [(r["text"], lab[r["label"]]) for r in _csv_rows("emotion.csv") if r["label"] in lab]
    return _split_balanced(rows, len(EMOTION_LABELS), seed=2)


def _stories():
    rows = _csv_rows("stories.csv")
    return [" ".join(r[f"sentence{i}"].strip() for i in range(1, 6)) for r in rows]


# --------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------
def build_hub_cache(home: Path, finbert_labels=("positive", "negative", "neutral"),
                    finbert_answers="negative", prepared: bool = True) -> dict:
    """Write a hub-shaped cache under ``home`` (to be used as HF_HOME).

    ``prepared=False``: the dataset repos' snapshots only, without the Arrow cache datasets prepares online.
    Returns {repo_id: commit} for every model and dataset repo written.
    """
    import torch
    from datasets import ClassLabel, Features, Value
    from datasets.utils.logging import disable_progress_bar, is_progress_bar_enabled

    home = Path(home)
    (home / "hub").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    progress = is_progress_bar_enabled()
    disable_progress_bar()
    commits: dict[str, str] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="hubcache-") as tmp:
            stage = Path(tmp)
            builders = {
                FINBERT: lambda d: _finbert(d, finbert_labels, finbert_answers),
                BERT_EN: lambda d: _bert_mlm(d, _bert_en_vocab(), chinese=False),
                GPT2: _gpt2,
                BERT_ZH: lambda d: _bert_mlm(d, _bert_zh_vocab(), chinese=True),
            }
            for repo_id, build in builders.items():
                d = stage / repo_id
                d.mkdir(parents=True)
                build(d)
                commits[repo_id] = _write_repo(home, repo_id, _read_dir(d))

            dstage = stage / "_datasets"
            tr, va, te = _phrasebank_splits()
            feats = Features({"sentence": Value("string"), "label": ClassLabel(names=PHRASEBANK_LABELS)})

            def cols(rows, t="sentence"):
                return {t: [r[0] for r in rows], "label": [r[1] for r in rows]}

            commits[PHRASEBANK] = _write_dataset(home, PHRASEBANK, [dict(
                name="default", dir="data", features=feats, default=True,
                splits={"train": cols(tr), "validation": cols(va), "test": cols(te)})],
                "financial_phrasebank", dstage, prepared)

            tr, va, te = _emotion_splits()
            feats = Features({"text": Value("string"), "label": ClassLabel(names=EMOTION_LABELS)})
            commits[EMOTION] = _write_dataset(home, EMOTION, [
                dict(name="split", dir="split", features=feats, default=True,
                     splits={"train": cols(tr, "text"), "validation": cols(va, "text"),
                             "test": cols(te, "text")}),
                dict(name="unsplit", dir="unsplit", features=feats,
                     splits={"train": cols(tr + va + te, "text")}),
            ], "emotion", dstage, prepared)

            stories = _stories()
            feats = Features({"text": Value("string")})
            commits[ROCSTORIES] = _write_dataset(home, ROCSTORIES, [dict(
                name="default", dir="data", features=feats, default=True,
                splits={"train": {"text": stories[:60]}, "test": {"text": stories[60:80]}})],
                "ROCStories", dstage, prepared)
    finally:
        if progress:
            from datasets.utils.logging import enable_progress_bar

            enable_progress_bar()
    return commits


if __name__ == "__main__":  # python tests/hubcache.py /tmp/somewhere
    import sys

    print(json.dumps(build_hub_cache(Path(sys.argv[1])), indent=1))
