"""Doc2Vec document vectors + scikit-learn LogisticRegression (model=doc2vec on the classification tasks).

Saved without pickle: the Doc2Vec weights and vocabulary and the regression as NPY/JSON (models/doc2vec.py);
model.export_native=true adds gensim's own doc2vec.model for use elsewhere, never loaded back here.
"""
import json
import time
from pathlib import Path

import numpy as np

from nlpexp.models.doc2vec import (infer_epochs, infer_vector, load_doc2vec, save_doc2vec, text_seed, tokenize,
                                   train_doc2vec)
from nlpexp.saved import loading, write_dir


class Doc2VecClassifier:
    def __init__(self, model_cfg, labels: list[str], seed: int):
        self.cfg, self.labels, self.seed = model_cfg, labels, seed
        self.d2v = None
        self.coef = self.intercept = None

    def _vectors(self, texts) -> np.ndarray:
        from nlpexp.console import Progress

        epochs, texts, out = infer_epochs(self.cfg), list(texts), []
        # inference draws random numbers: seeded per text, a text gets the same vector in every call and process
        with Progress(len(texts), "infer vectors", unit="text", every=None, leave=False) as bar:
            for t in texts:
                out.append(infer_vector(self.d2v, tokenize(t, self.cfg.lowercase), epochs, text_seed(self.seed, t)))
                bar.update(1)
        return np.stack(out)

    def fit(self, texts, gold) -> "Doc2VecClassifier":
        from sklearn.linear_model import LogisticRegression

        c = self.cfg
        self.d2v = train_doc2vec(texts, c, self.seed, progress=True)
        features = self._vectors(texts)  # inferred like the test texts, so train and test vectors match
        lr = LogisticRegression(C=c.C, class_weight=c.get("class_weight"), max_iter=2000)
        lr.fit(features, np.asarray(gold))
        coef = np.zeros((len(self.labels), features.shape[1]))
        intercept = np.full(len(self.labels), -1e9)  # a class absent from training is never predicted
        rows = lr.coef_ if len(lr.classes_) > 2 else np.vstack([-lr.coef_[0] / 2, lr.coef_[0] / 2])
        inter = lr.intercept_ if len(lr.classes_) > 2 else np.array([-lr.intercept_[0] / 2, lr.intercept_[0] / 2])
        coef[lr.classes_], intercept[lr.classes_] = rows, inter
        self.coef, self.intercept = coef, intercept
        return self

    def predict_proba(self, texts) -> np.ndarray:
        logits = self._vectors(texts) @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        expo = np.exp(logits)
        return expo / expo.sum(axis=1, keepdims=True)

    def save(self, folder: Path) -> None:
        with write_dir(folder) as tmp:  # written whole or not at all
            save_doc2vec(self.d2v, tmp, bool(self.cfg.get("export_native")))
            np.save(tmp / "logreg_coef.npy", self.coef)
            np.save(tmp / "logreg_intercept.npy", self.intercept)
            settings = {k: self.cfg.get(k) for k in ("vector_size", "window", "min_count", "epochs", "dm",
                                                     "dbow_words", "infer_epochs", "lowercase")}
            (tmp / "classifier.json").write_text(json.dumps({"labels": self.labels, "seed": self.seed,
                                                             "model": settings}, indent=2))

    def extra_metrics(self, frame, labels, prefix: str) -> dict:
        return {}


# classifier.json's model settings: what each must be (gensim's compiled inference trusts them: a vector_size larger
# than the saved vectors' width read past the arrays and ended the process with SIGSEGV)
SETTINGS = {"vector_size": (1, None), "window": (1, None), "min_count": (1, None), "epochs": (1, None),
            "dm": (0, 1), "dbow_words": (0, 1), "infer_epochs": (1, None)}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def meta_problem(meta, vocab) -> str | None:
    """What in classifier.json / doc2vec_vocab.json cannot be a saved classifier (None: nothing): read before gensim
    is given any of it, so an edited file (with or without saved_files.json) is one line, never a crash."""
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict):
        return "classifier.json holds no model settings"
    labels, seed, model = meta.get("labels"), meta.get("seed"), meta["model"]
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels) \
            or len(set(labels)) != len(labels):
        return "classifier.json's labels are not a list of two or more distinct names"
    if not _is_int(seed) or not 0 <= seed < 2 ** 32:
        return f"classifier.json's seed {seed!r} is not an integer in [0, 2^32)"
    for key, (low, high) in SETTINGS.items():
        value = model.get(key)
        if key == "infer_epochs" and value is None:
            continue
        if not _is_int(value) or value < low or (high is not None and value > high):
            return f"classifier.json's {key} is {value!r}, not an integer " + \
                (f"in [{low}, {high}]" if high is not None else f">= {low}")
    if not isinstance(model.get("lowercase"), bool):
        return f"classifier.json's lowercase is {model.get('lowercase')!r}, not true or false"
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


def arrays_problem(clf) -> str | None:
    """The loaded arrays against the settings: word vectors and negative-sampling weights (words x vector_size,
    float32, finite), the regression's coef (labels x vector_size) and intercept (labels)."""
    size, rows, n_labels = int(clf.cfg.vector_size), len(clf.d2v.wv.index_to_key), len(clf.labels)
    for name, array, shape in (("doc2vec_word_vectors.npy", clf.d2v.wv.vectors, (rows, size)),
                               ("doc2vec_syn1neg.npy", clf.d2v.syn1neg, (rows, size)),
                               ("logreg_coef.npy", clf.coef, (n_labels, size)),
                               ("logreg_intercept.npy", clf.intercept, (n_labels,))):
        if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
            return f"{name} is not an array of floats"
        if array.shape != shape:
            return (f"{name} has shape {tuple(array.shape)}, not {shape} ({rows} words, vector_size {size}, "
                    f"{n_labels} labels in classifier.json)")
        if not np.isfinite(array).all() and name != "logreg_intercept.npy":
            return f"{name} holds NaN or infinite values"
    if np.isnan(clf.intercept).any() or np.isposinf(clf.intercept).any():
        return "logreg_intercept.npy holds NaN or +infinite values"
    return None


def load(folder: Path, device: str) -> Doc2VecClassifier:
    """A saved run's classifier (gensim has no device: `device` is part of the one load signature only).
    classifier.json and the vocabulary are checked before gensim sees them, the arrays against them after
    (meta_problem, arrays_problem): an edited file is load_error's one line."""
    from omegaconf import OmegaConf

    from nlpexp.saved import load_error

    with loading(folder):  # NPY/JSON only: a doc2vec.model (gensim's pickle) beside them is never opened
        meta = json.loads((folder / "classifier.json").read_text())
        vocab = json.loads((folder / "doc2vec_vocab.json").read_text(encoding="utf-8"))
        problem = meta_problem(meta, vocab)
        if problem:
            raise load_error(folder, problem)
        clf = Doc2VecClassifier(OmegaConf.create(meta["model"]), meta["labels"], meta["seed"])
        clf.d2v = load_doc2vec(folder, clf.cfg, clf.seed)
        clf.coef = np.load(folder / "logreg_coef.npy", allow_pickle=False)
        clf.intercept = np.load(folder / "logreg_intercept.npy", allow_pickle=False)
        problem = arrays_problem(clf)
        if problem:
            raise load_error(folder, problem)
        # gensim's compiled inference reads the arrays as C-ordered float32 (REAL): any other layout is made so
        clf.d2v.wv.vectors = np.ascontiguousarray(clf.d2v.wv.vectors, dtype=np.float32)
        clf.d2v.syn1neg = np.ascontiguousarray(clf.d2v.syn1neg, dtype=np.float32)
    return clf


def fit(cfg, labels: list[str], splits, run_dir: Path, device: str):
    started = time.time()
    train = splits["train"]
    clf = Doc2VecClassifier(cfg.model, labels, cfg.seed).fit(list(train["text"]), list(train["label"]))
    seconds = time.time() - started
    clf.save(run_dir / "checkpoints" / "best")
    info = {"train_samples_per_s": round(len(train) * cfg.model.epochs / max(seconds, 1e-9), 2)}
    return clf, [], info
