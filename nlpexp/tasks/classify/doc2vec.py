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


def load(folder: Path, device: str) -> Doc2VecClassifier:
    """A saved run's classifier (gensim has no device: `device` is part of the one load signature only)."""
    from omegaconf import OmegaConf

    with loading(folder):  # NPY/JSON only: a doc2vec.model (gensim's pickle) beside them is never opened
        meta = json.loads((folder / "classifier.json").read_text())
        clf = Doc2VecClassifier(OmegaConf.create(meta["model"]), meta["labels"], meta["seed"])
        clf.d2v = load_doc2vec(folder, clf.cfg, clf.seed)
        clf.coef = np.load(folder / "logreg_coef.npy", allow_pickle=False)
        clf.intercept = np.load(folder / "logreg_intercept.npy", allow_pickle=False)
    return clf


def fit(cfg, labels: list[str], splits, run_dir: Path, device: str):
    started = time.time()
    train = splits["train"]
    clf = Doc2VecClassifier(cfg.model, labels, cfg.seed).fit(list(train["text"]), list(train["label"]))
    seconds = time.time() - started
    clf.save(run_dir / "checkpoints" / "best")
    info = {"train_samples_per_s": round(len(train) * cfg.model.epochs / max(seconds, 1e-9), 2)}
    return clf, [], info
