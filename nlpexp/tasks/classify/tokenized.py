"""A split's tokenized texts, cached on disk by content, for trainer.fit and mode=prepare.

Tokenizing a large training set takes minutes and gives the same ids every time for the same texts, labels,
tokenizer and truncation length: the result is kept under `<cache>/tokenized/<key>/`, where the key is a sha256 of
exactly those (the tokenizer by its full definition: a WordPiece trained on the training texts is the same
tokenizer, and finds the same entry, in every run on them). The cache root is the one the embedding cache uses:
$NLPEXP_CACHE_DIR, else ~/.cache/nlpexp. Entries are Arrow folders (Dataset.save_to_disk, no pickle), written to a
temporary folder and renamed into place, so one is whole or absent; one that does not load (cut short, edited) is
built again.
"""
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

FORMAT = 1  # what an entry holds and how its key is made: raise it when either changes (old entries go unread)
CHUNK = 65536  # texts hashed per update: one chunk's bytes in memory at a time


def cache_root() -> Path:
    """$NLPEXP_CACHE_DIR, else ~/.cache/nlpexp (task=embedding's cache lives there too)."""
    return Path(os.environ.get("NLPEXP_CACHE_DIR") or "~/.cache/nlpexp").expanduser()


def cacheable(tokenizer) -> bool:
    """A transformers tokenizer, whose whole definition can be hashed. A wrapper that changes the texts before
    tokenizing (mlm_prompt's PromptTokenizer puts its prompt around each) is not: its data is tokenized each run."""
    from transformers import PreTrainedTokenizerBase

    return isinstance(tokenizer, PreTrainedTokenizerBase)


def tokenizer_identity(tokenizer) -> bytes:
    """What decides the ids a tokenizer gives: a fast tokenizer's full definition (vocabulary, normalizer, added
    tokens, post-processor) with its class, special tokens and truncation side; any other, the files
    save_pretrained writes. The backend's truncation and padding are left out: they are the state its last call
    left (encode sets them anew), and with them a split tokenized before would change the next split's key."""
    head = json.dumps({"class": type(tokenizer).__name__, "special": tokenizer.special_tokens_map,
                       "truncation_side": getattr(tokenizer, "truncation_side", None),
                       "padding_side": getattr(tokenizer, "padding_side", None)}, sort_keys=True, default=str)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
        return head.encode() + b"\0" + json.dumps(definition, sort_keys=True).encode()
    digest = hashlib.sha256(head.encode())
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        for path in sorted(p for p in Path(tmp).rglob("*") if p.is_file()):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest().encode()


def hash_texts(digest, texts: list[str]) -> None:
    """Feed `texts` to `digest` a chunk at a time: their lengths, then their characters (the lengths make the
    concatenation unambiguous). ~0.4 s for a million short texts."""
    digest.update(len(texts).to_bytes(8, "little"))
    for start in range(0, len(texts), CHUNK):
        chunk = texts[start:start + CHUNK]
        digest.update(np.fromiter(map(len, chunk), dtype=np.int64, count=len(chunk)).tobytes())
        digest.update("".join(chunk).encode("utf-8", "surrogatepass"))


def content_key(texts: list[str], pairs: list[str] | None, labels, tokenizer, max_length: int) -> str:
    """sha256 of the format, the truncation length, the tokenizer, the texts (and second texts) and the labels."""
    digest = hashlib.sha256(f"nlpexp-tokenized {FORMAT} max_length={int(max_length)}\n".encode())
    digest.update(hashlib.sha256(tokenizer_identity(tokenizer)).digest())
    hash_texts(digest, texts)
    digest.update(b"pairs" if pairs is not None else b"single")
    if pairs is not None:
        hash_texts(digest, pairs)
    gold = np.asarray(labels)  # ids, or one row of floats per text (multi-label)
    digest.update(f"{gold.dtype.str} {gold.shape}".encode())
    digest.update(np.ascontiguousarray(gold).tobytes())
    return digest.hexdigest()


def load_entry(folder: Path, rows: int):
    """The cached dataset in `folder`, or None when there is none or it is not whole (it is then removed)."""
    from datasets import load_from_disk

    if not folder.is_dir():
        return None
    try:
        meta = json.loads((folder / "nlpexp.json").read_text())
        ds = load_from_disk(str(folder))
        if meta.get("rows") != rows or len(ds) != rows or "input_ids" not in ds.column_names:
            raise ValueError(f"{len(ds)} rows, expected {rows}")
        return ds
    except Exception as err:  # noqa: BLE001 -- any damage (a cut file, a missing one, bad JSON) means: build again
        print(f"tokenized cache: {folder.name[:12]} is damaged ({type(err).__name__}); building it again")
        shutil.rmtree(folder, ignore_errors=True)
        return None


def save_entry(ds, folder: Path) -> None:
    """`ds` into `folder` whole or not at all: written in a temporary folder beside it, then renamed. When another
    process saved the same entry first, its copy is kept."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        ds.save_to_disk(str(tmp))
        (tmp / "nlpexp.json").write_text(json.dumps({"format": FORMAT, "rows": len(ds)}))
        try:
            os.rename(tmp, folder)
        except OSError:
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tokenize(texts: list[str], pairs: list[str] | None, labels, tokenizer, max_length: int):
    """The Dataset trainer.fit trains on: label, input_ids, attention_mask (and token_type_ids); a second text is
    tokenized as the pair's second segment."""
    from datasets import Dataset

    columns = {"text": texts, "label": labels, **({"text_pair": pairs} if pairs is not None else {})}

    def batch(b):  # a second text only when there is one (mlm_prompt's PromptTokenizer takes none)
        return tokenizer(b["text"], *([b["text_pair"]] if pairs is not None else []), truncation=True,
                         max_length=max_length)

    return Dataset.from_dict(columns).map(batch, batched=True, remove_columns=[c for c in columns if c != "label"])


def encode(frame, tokenizer, max_length: int, labels_for_dataset, split: str = "data"):
    """`frame`'s texts (and its `text_pair` column: sentence pairs) tokenized with `tokenizer`, truncated at
    `max_length`, with `labels_for_dataset` as the label column (ids, or float rows for multi-label): from the cache
    when the same content was tokenized before, else tokenized and saved there. One line says which."""
    texts = frame["text"].astype(str).tolist()
    pairs = frame["text_pair"].astype(str).tolist() if "text_pair" in frame else None
    labels = list(labels_for_dataset)
    started = time.time()
    if not cacheable(tokenizer):
        ds = tokenize(texts, pairs, labels, tokenizer, max_length)
        print(f"tokenized {split}: {len(ds):,} texts in {time.time() - started:.1f} s")
        return ds
    key = content_key(texts, pairs, labels, tokenizer, max_length)
    folder = cache_root() / "tokenized" / key
    cached = load_entry(folder, len(texts))
    if cached is not None:
        print(f"tokenized {split}: {len(cached):,} texts (cached: {key[:12]})")
        return cached
    ds = tokenize(texts, pairs, labels, tokenizer, max_length)
    seconds = time.time() - started
    try:
        save_entry(ds, folder)
    except OSError as err:  # a full or read-only cache folder: train on the tokenized data all the same
        print(f"tokenized {split}: {len(ds):,} texts in {seconds:.1f} s (not cached: {err})")
        return ds
    print(f"tokenized {split}: {len(ds):,} texts in {seconds:.1f} s (saved to cache)")
    return load_entry(folder, len(texts)) or ds  # memory-mapped: the copy in memory is freed
