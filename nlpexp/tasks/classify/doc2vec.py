"""Doc2Vec document vectors + scikit-learn LogisticRegression (model=doc2vec on the classification tasks).

Saved without pickle: the Doc2Vec weights and vocabulary and the regression as NPY/JSON (models/doc2vec.py);
model.export_native=true adds gensim's own doc2vec.model for use elsewhere, never loaded back here.
task.multi_label: one binary regression per label (one-vs-rest) in the same arrays, scored with a sigmoid per
label instead of a softmax over them (classifier.json says which).
"""
import json
import time
from pathlib import Path

import numpy as np

from nlpexp.models.doc2vec import (infer_epochs, infer_vector, load_doc2vec, save_doc2vec, text_seed, tokenize,
                                   train_doc2vec)
from nlpexp.runs import loading, write_dir
from nlpexp.tasks.classify import config
from nlpexp.tasks.classify.contract import FitRun


class Doc2VecClassifier:
    def __init__(self, model_cfg, labels: list[str], seed: int, multi_label: bool = False):
        self.cfg, self.labels, self.seed, self.multi_label = model_cfg, labels, seed, multi_label
        self.d2v = None
        self.coef = self.intercept = None

    def _vectors(self, texts) -> np.ndarray:
        from nlpexp.report.console import Progress

        epochs, texts, out = infer_epochs(self.cfg), list(texts), []
        # inference draws random numbers: seeded per text, a text gets the same vector in every call and process
        with Progress(len(texts), "infer vectors", unit="text", every=None, leave=False) as bar:
            for t in texts:
                out.append(infer_vector(self.d2v, tokenize(t, self.cfg.lowercase), epochs, text_seed(self.seed, t)))
                bar.update(1)
        return np.stack(out)

    def fit(self, texts, gold) -> "Doc2VecClassifier":
        """`gold`: label ids, or (multi_label) a tuple of label ids per text."""
        c = self.cfg
        self.d2v = train_doc2vec(texts, c, self.seed, progress=True)
        features = self._vectors(texts)  # inferred like the test texts, so train and test vectors match
        if self.multi_label:
            self.coef, self.intercept = self._one_vs_rest(features, gold)
        else:
            self.coef, self.intercept = self._multinomial(features, gold)
        return self

    def _multinomial(self, features, gold) -> tuple:
        from sklearn.linear_model import LogisticRegression

        c = self.cfg
        lr = LogisticRegression(C=c.C, class_weight=c.get("class_weight"), max_iter=2000)
        lr.fit(features, np.asarray(gold))
        coef = np.zeros((len(self.labels), features.shape[1]))
        intercept = np.full(len(self.labels), -1e9)  # a class absent from training is never predicted
        rows = lr.coef_ if len(lr.classes_) > 2 else np.vstack([-lr.coef_[0] / 2, lr.coef_[0] / 2])
        inter = lr.intercept_ if len(lr.classes_) > 2 else np.array([-lr.intercept_[0] / 2, lr.intercept_[0] / 2])
        coef[lr.classes_], intercept[lr.classes_] = rows, inter
        return coef, intercept

    def _one_vs_rest(self, features, gold) -> tuple:
        """One binary logistic regression per label: its row of coef and intercept give that label's sigmoid. A
        label that every training text has, or none has, is that constant (intercept +-1e9, no weights)."""
        from sklearn.linear_model import LogisticRegression

        from nlpexp.report.metrics import multi_hot

        targets = multi_hot(list(gold), len(self.labels))
        coef, intercept = np.zeros((len(self.labels), features.shape[1])), np.zeros(len(self.labels))
        for j in range(len(self.labels)):
            if len(np.unique(targets[:, j])) < 2:
                intercept[j] = 1e9 if len(targets) and targets[0, j] else -1e9
                continue
            lr = LogisticRegression(C=self.cfg.C, class_weight=self.cfg.get("class_weight"), max_iter=2000)
            lr.fit(features, targets[:, j].astype(int))
            coef[j], intercept[j] = lr.coef_[0], lr.intercept_[0]
        return coef, intercept

    def predict_proba(self, texts) -> np.ndarray:
        from scipy.special import expit

        logits = self._vectors(texts) @ self.coef.T + self.intercept
        if self.multi_label:  # each label on its own
            return expit(logits)
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
                                                             "multi_label": self.multi_label, "model": settings},
                                                            indent=2))

    def extra_metrics(self, frame, labels, prefix: str) -> dict:
        return {}


def labels_problem(meta) -> str | None:
    """What in classifier.json is not a saved classifier's (None: nothing); its model settings, the vocabulary and
    the word arrays are load_doc2vec's to check (models/doc2vec.py), before gensim sees them."""
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict):
        return "classifier.json holds no model settings"
    labels = meta.get("labels")
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels) \
            or len(set(labels)) != len(labels):
        return "classifier.json's labels are not a list of two or more distinct names"
    if meta.get("seed") is None:  # (its range: load_doc2vec)
        return "classifier.json has no seed"
    if not isinstance(meta.get("multi_label", False), bool):  # absent: saved before multi-label runs existed
        return "classifier.json's multi_label is not true or false"
    return None


def regression_problem(clf) -> str | None:
    """The regression's arrays against the settings: coef (labels x vector_size floats, finite) and intercept."""
    size, n_labels = int(clf.cfg.vector_size), len(clf.labels)
    for name, array, shape in (("logreg_coef.npy", clf.coef, (n_labels, size)),
                               ("logreg_intercept.npy", clf.intercept, (n_labels,))):
        if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
            return f"{name} is not an array of floats"
        if array.shape != shape:
            return f"{name} has shape {tuple(array.shape)}, not {shape} ({n_labels} labels, vector_size {size})"
    if not np.isfinite(clf.coef).all() or np.isnan(clf.intercept).any() or np.isposinf(clf.intercept).any():
        return "logreg_coef.npy or logreg_intercept.npy holds NaN or infinite values"
    return None


def load(folder: Path, device: str) -> Doc2VecClassifier:
    """A saved run's classifier (gensim has no device: `device` is part of the one load signature only).
    Everything is checked before it is used (labels_problem, load_doc2vec, regression_problem): an edited file is
    load_error's one line, never a crash of gensim's compiled code."""
    from omegaconf import OmegaConf

    from nlpexp.runs import load_error

    with loading(folder):  # NPY/JSON only: a doc2vec.model (gensim's pickle) beside them is never opened
        meta = json.loads((folder / "classifier.json").read_text())
        problem = labels_problem(meta)
        if problem:
            raise load_error(folder, problem)
        clf = Doc2VecClassifier(OmegaConf.create(meta["model"]), meta["labels"], meta["seed"],
                                meta.get("multi_label", False))
        clf.d2v = load_doc2vec(folder, clf.cfg, clf.seed, where="classifier.json")
        clf.coef = np.load(folder / "logreg_coef.npy", allow_pickle=False)
        clf.intercept = np.load(folder / "logreg_intercept.npy", allow_pickle=False)
        problem = regression_problem(clf)
        if problem:
            raise load_error(folder, problem)
    return clf


def fit(model: config.Doc2VecClassifier, run: FitRun, labels: list[str], splits):
    """gensim reads no trainer.* (run.trainer is None) and has no device."""
    from omegaconf import OmegaConf

    started = time.time()
    train = splits["train"]
    # as a node: models/doc2vec.py reads it as it reads a loaded classifier's settings (with .get)
    clf = Doc2VecClassifier(OmegaConf.structured(model), labels, run.seed, run.multi_label).fit(
        list(train["text"]), list(train["label"]))
    seconds = time.time() - started
    clf.save(run.run_dir / "checkpoints" / "best")
    info = {"train_samples_per_s": round(len(train) * model.epochs / max(seconds, 1e-9), 2)}
    return clf, [], info
