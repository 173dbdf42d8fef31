"""gensim Doc2Vec, as the classification (Doc2Vec + logistic regression) and embedding tasks both train it:
our tokenizer, a per-process-stable word hash and one set of training settings from the model config."""
import json
import re
import zlib
from pathlib import Path

import numpy as np

TOKEN = re.compile(r"[a-z0-9]+(?:[.,'][a-z0-9]+)*|[^\sa-z0-9]", re.IGNORECASE)


def stable_hash(text: str) -> int:
    """gensim seeds word vectors with hash(word); Python's str hash changes per process, this one does not."""
    return zlib.crc32(text.encode("utf-8"))


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    return TOKEN.findall(text.lower() if lowercase else text)


def train_doc2vec(texts, model_cfg, seed: int, progress: bool = False):
    """A Doc2Vec trained on `texts` (tagged by position) with the model config's settings, one worker (repeatable)."""
    from gensim.models.callbacks import CallbackAny2Vec
    from gensim.models.doc2vec import Doc2Vec, TaggedDocument
    from nlpexp.report import console

    c = model_cfg
    docs = [TaggedDocument(tokenize(t, c.lowercase), [i]) for i, t in enumerate(texts)]
    d2v = Doc2Vec(vector_size=c.vector_size, window=c.window, min_count=c.min_count, epochs=c.epochs, dm=c.dm,
                  dbow_words=c.dbow_words, seed=seed, workers=1, hashfxn=stable_hash)
    empty_vocabulary(docs, c.min_count)
    d2v.build_vocab(docs)

    class Progress(CallbackAny2Vec):
        def __init__(self, bar):
            self.bar = bar

        def on_epoch_end(self, model):
            self.bar.update(1)

    with console.Progress(c.epochs, "doc2vec epochs", unit="epoch", mode=None if progress else "off") as bar:
        d2v.train(docs, total_examples=len(docs), epochs=c.epochs, callbacks=[Progress(bar)])
    d2v.callbacks = ()
    return d2v


def empty_vocabulary(docs, min_count: int) -> None:
    """A UserError when no word occurs min_count times in the training texts (gensim would fail in train())."""
    from collections import Counter

    from nlpexp.errors import UserError

    counts = Counter(word for doc in docs for word in doc.words)
    if not counts or max(counts.values()) < int(min_count):
        most = max(counts.values()) if counts else 0
        raise UserError(f"Doc2Vec has no vocabulary: no word occurs model.min_count={min_count} times in the "
                        f"{len(docs)} training texts ({len(counts)} distinct words, none more often than {most} "
                        f"times): lower model.min_count")


def infer_epochs(model_cfg) -> int:
    return int(model_cfg.get("infer_epochs") or model_cfg.epochs)


# -- checkpoints without pickle: gensim's own .model format unpickles, so a crafted file would run code on load.
# What inference needs is saved as NPY + JSON (word vectors, the negative-sampling weights, the vocabulary in index
# order with its counts and downsampling thresholds) and the model is rebuilt from the same settings.
# model.export_native=true also writes gensim's own doc2vec.model for use elsewhere; nlpexp never loads it.
NATIVE_EXPORT = "doc2vec.model"


def save_doc2vec(d2v, folder: Path, export_native: bool = False) -> None:
    if not d2v.negative or d2v.hs:
        raise ValueError("only negative-sampling Doc2Vec models are saved (hs=0, negative>0)")
    folder.mkdir(parents=True, exist_ok=True)
    if export_native:  # gensim's pickle-based format, for gensim users: never read back here
        d2v.save(str(folder / NATIVE_EXPORT))
    words = list(d2v.wv.index_to_key)
    np.save(folder / "doc2vec_word_vectors.npy", d2v.wv.vectors)
    np.save(folder / "doc2vec_syn1neg.npy", d2v.syn1neg)
    vocab = {"words": words, "counts": [int(d2v.wv.get_vecattr(w, "count")) for w in words],
             "sample_int": [int(d2v.wv.get_vecattr(w, "sample_int")) for w in words]}
    (folder / "doc2vec_vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))


# The saved settings gensim is rebuilt with, and what each must be: its compiled inference trusts them (a
# vector_size wider than the saved vectors read past the arrays and ended the process with SIGSEGV).
SETTINGS = {"vector_size": (1, None), "window": (1, None), "min_count": (1, None), "epochs": (1, None),
            "dm": (0, 1), "dbow_words": (0, 1), "infer_epochs": (1, None)}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def settings_problem(model, where: str, seed=None) -> str | None:
    """What in the saved model settings (`model`: a dict or config; `where`: the file they came from, named in the
    line) cannot rebuild a Doc2Vec (None: nothing); `seed` too when given. Read before gensim sees any of it."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(model):
        model = OmegaConf.to_container(model)
    if not isinstance(model, dict):
        return f"{where} holds no model settings"
    if seed is not None and (not _is_int(seed) or not 0 <= seed < 2 ** 32):
        return f"{where}'s seed {seed!r} is not an integer in [0, 2^32)"
    for key, (low, high) in SETTINGS.items():
        value = model.get(key)
        if key == "infer_epochs" and value is None:
            continue
        if not _is_int(value) or value < low or (high is not None and value > high):
            return f"{where}'s {key} is {value!r}, not an integer " + \
                (f"in [{low}, {high}]" if high is not None else f">= {low}")
    if not isinstance(model.get("lowercase"), bool):
        return f"{where}'s lowercase is {model.get('lowercase')!r}, not true or false"
    return None


def vocab_problem(vocab) -> str | None:
    """What in doc2vec_vocab.json cannot be a saved vocabulary (None: nothing)."""
    if not isinstance(vocab, dict):
        return "doc2vec_vocab.json is not a vocabulary"
    words, counts, sample_int = vocab.get("words"), vocab.get("counts"), vocab.get("sample_int")
    if not all(isinstance(x, list) for x in (words, counts, sample_int)) or not words \
            or not len(words) == len(counts) == len(sample_int):
        return "doc2vec_vocab.json's words, counts and sample_int are not lists of one length"
    if not all(isinstance(w, str) for w in words) or len(set(words)) != len(words):
        return "doc2vec_vocab.json's words are not distinct strings"
    if not all(_is_int(c) and 0 <= c < 2 ** 63 for c in counts) or \
            not all(_is_int(v) and 0 <= v < 2 ** 32 for v in sample_int):
        return "doc2vec_vocab.json's counts or sample_int are not non-negative integers in range"
    return None


def arrays_problem(arrays: dict, rows: int, size: int) -> str | None:
    """The word vectors and negative-sampling weights ({file name: array}) against the vocabulary and the settings:
    words x vector_size floats, finite (None: they fit)."""
    for name, array in arrays.items():
        if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
            return f"{name} is not an array of floats"
        if array.shape != (rows, size):
            return f"{name} has shape {tuple(array.shape)}, not {(rows, size)} ({rows} words, vector_size {size})"
        if not np.isfinite(array).all():
            return f"{name} holds NaN or infinite values"
    return None


def load_doc2vec(folder: Path, model_cfg, seed: int, where: str = "the saved settings"):
    """The Doc2Vec save_doc2vec wrote, rebuilt with train_doc2vec's settings: it infers the same vectors. Reads
    only the NPY/JSON files (a doc2vec.model beside them is never opened). The settings (`where`: the file they
    were read from) and the vocabulary are checked before gensim sees them, the arrays against them after
    (settings_problem, vocab_problem, arrays_problem): a damaged or edited file is load_error's one line, never a
    crash of gensim's compiled code."""
    from gensim.models.doc2vec import Doc2Vec

    from nlpexp.runs import load_error, loading

    with loading(folder):
        problem = settings_problem(model_cfg, where, seed)
        if problem:
            raise load_error(folder, problem)
        vocab = json.loads((folder / "doc2vec_vocab.json").read_text(encoding="utf-8"))
        problem = vocab_problem(vocab)
        if problem:
            raise load_error(folder, problem)
        vectors = np.load(folder / "doc2vec_word_vectors.npy", allow_pickle=False)
        syn1neg = np.load(folder / "doc2vec_syn1neg.npy", allow_pickle=False)
        words, counts, sample_int = vocab["words"], vocab["counts"], vocab["sample_int"]
        problem = arrays_problem({"doc2vec_word_vectors.npy": vectors, "doc2vec_syn1neg.npy": syn1neg}, len(words),
                                 int(model_cfg.vector_size))
        if problem:
            raise load_error(folder, problem)
        # gensim's compiled inference reads the arrays as C-ordered float32 (REAL): any other layout is made so
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        syn1neg = np.ascontiguousarray(syn1neg, dtype=np.float32)
    c = model_cfg
    d2v = Doc2Vec(vector_size=c.vector_size, window=c.window, min_count=c.min_count, epochs=c.epochs, dm=c.dm,
                  dbow_words=c.dbow_words, seed=seed, workers=1, hashfxn=stable_hash)
    d2v.build_vocab_from_freq(dict(zip(words, counts)))
    wv = d2v.wv  # the saved index order: negative sampling draws indices through the cumulative table
    wv.index_to_key, wv.key_to_index = list(words), {w: i for i, w in enumerate(words)}
    wv.expandos["count"] = np.asarray(counts, dtype=wv.expandos["count"].dtype)
    wv.expandos["sample_int"] = np.asarray(sample_int, dtype=wv.expandos["sample_int"].dtype)
    d2v.make_cum_table()
    wv.vectors, d2v.syn1neg = vectors, syn1neg
    return d2v


def text_seed(seed: int, text: str) -> int:
    """The inference seed of one text: the run's seed and the text itself, so a text's vector does not depend on
    what else is inferred in the same call (mode=predict text=... agrees with mode=eval; cacheable)."""
    return (int(seed) * 1_000_003 + stable_hash(str(text))) % 2**32


def infer_vector(d2v, words: list[str], epochs: int, seed: int | None = None) -> np.ndarray:
    """d2v.infer_vector, the same in every call and every process: d2v.random (negative sampling, window and
    downsampling draws) is seeded with `seed` first (see text_seed; None: as the caller left it), and the start
    vector comes from stable_hash.

    gensim draws the start from Python's built-in hash() of the text, which changes per process
    (PYTHONHASHSEED), ignoring the model's hashfxn: a saved run re-scored in a new shell disagreed with itself."""
    from gensim.models import doc2vec as gensim_doc2vec

    original = gensim_doc2vec.pseudorandom_weak_vector
    gensim_doc2vec.pseudorandom_weak_vector = lambda size, seed_string=None, hashfxn=None: original(
        size, seed_string=seed_string, hashfxn=stable_hash)
    try:
        if seed is not None:
            d2v.random.seed(int(seed) % 2**32)
        return d2v.infer_vector(words, epochs=epochs)
    finally:
        gensim_doc2vec.pseudorandom_weak_vector = original
