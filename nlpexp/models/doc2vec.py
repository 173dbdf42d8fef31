"""gensim Doc2Vec document vectors + scikit-learn LogisticRegression.

Saved as gensim's own format (doc2vec.model) plus the regression as NPY/JSON.
"""
import json
import re
import time
import zlib
from pathlib import Path

import numpy as np

TOKEN = re.compile(r"[a-z0-9]+(?:[.,'][a-z0-9]+)*|[^\sa-z0-9]", re.IGNORECASE)


def stable_hash(text: str) -> int:
    """gensim seeds word vectors with hash(word); Python's str hash changes per process, this one does not."""
    return zlib.crc32(text.encode("utf-8"))


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    return TOKEN.findall(text.lower() if lowercase else text)


class Doc2VecClassifier:
    def __init__(self, model_cfg, labels: list[str], seed: int):
        self.cfg, self.labels, self.seed = model_cfg, labels, seed
        self.d2v = None
        self.coef = self.intercept = None

    def _vectors(self, texts) -> np.ndarray:
        from tqdm.auto import tqdm

        epochs = self.cfg.get("infer_epochs") or self.cfg.epochs
        self.d2v.random.seed(self.seed)  # inference draws random initial vectors: make them repeatable
        return np.stack([self.d2v.infer_vector(tokenize(t, self.cfg.lowercase), epochs=epochs)
                         for t in tqdm(list(texts), desc="infer vectors", leave=False, mininterval=1)])

    def fit(self, texts, gold) -> "Doc2VecClassifier":
        from gensim.models.callbacks import CallbackAny2Vec
        from gensim.models.doc2vec import Doc2Vec, TaggedDocument
        from sklearn.linear_model import LogisticRegression
        from tqdm.auto import tqdm

        class Progress(CallbackAny2Vec):
            def __init__(self, bar):
                self.bar = bar

            def on_epoch_end(self, model):
                self.bar.update(1)

        docs = [TaggedDocument(tokenize(t, self.cfg.lowercase), [i]) for i, t in enumerate(texts)]
        c = self.cfg
        self.d2v = Doc2Vec(vector_size=c.vector_size, window=c.window, min_count=c.min_count, epochs=c.epochs,
                           dm=c.dm, dbow_words=c.dbow_words, seed=self.seed, workers=1, hashfxn=stable_hash)
        self.d2v.build_vocab(docs)
        with tqdm(total=c.epochs, desc="doc2vec epochs") as bar:
            self.d2v.train(docs, total_examples=len(docs), epochs=c.epochs, callbacks=[Progress(bar)])
        self.d2v.callbacks = ()
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
        folder.mkdir(parents=True, exist_ok=True)
        self.d2v.save(str(folder / "doc2vec.model"))
        np.save(folder / "logreg_coef.npy", self.coef)
        np.save(folder / "logreg_intercept.npy", self.intercept)
        (folder / "classifier.json").write_text(json.dumps({"labels": self.labels, "seed": self.seed}, indent=2))


def load(folder: Path, model_cfg) -> Doc2VecClassifier:
    from gensim.models.doc2vec import Doc2Vec

    meta = json.loads((folder / "classifier.json").read_text())
    clf = Doc2VecClassifier(model_cfg, meta["labels"], meta["seed"])
    clf.d2v = Doc2Vec.load(str(folder / "doc2vec.model"))
    clf.coef, clf.intercept = np.load(folder / "logreg_coef.npy"), np.load(folder / "logreg_intercept.npy")
    return clf


def fit(cfg, labels: list[str], splits, run_dir: Path, device: str):
    started = time.time()
    train = splits["train"]
    clf = Doc2VecClassifier(cfg.model, labels, cfg.seed).fit(list(train["text"]), list(train["label"]))
    seconds = time.time() - started
    clf.save(run_dir / "checkpoints" / "best")
    info = {"train_samples_per_s": round(len(train) * cfg.model.epochs / max(seconds, 1e-9), 2)}
    return clf, [], info


# --- embedding task: Doc2Vec trained on the pair texts of the training split, vectors inferred for all ---

class Doc2VecEmbedder:
    def __init__(self, model_cfg, seed: int, d2v=None):
        self.cfg, self.seed, self.d2v = model_cfg, seed, d2v

    def train(self, texts) -> "Doc2VecEmbedder":
        from gensim.models.doc2vec import Doc2Vec, TaggedDocument

        c = self.cfg
        docs = [TaggedDocument(tokenize(t, c.lowercase), [i]) for i, t in enumerate(texts)]
        self.d2v = Doc2Vec(vector_size=c.vector_size, window=c.window, min_count=c.min_count, epochs=c.epochs,
                           dm=c.dm, dbow_words=c.dbow_words, seed=self.seed, workers=1, hashfxn=stable_hash)
        self.d2v.build_vocab(docs)
        self.d2v.train(docs, total_examples=len(docs), epochs=c.epochs)
        return self

    @property
    def id(self) -> str:
        """The trained weights and the inference settings: the same training twice shares cache rows."""
        import hashlib

        digest = hashlib.sha1(self.d2v.wv.vectors.tobytes())
        digest.update(self.d2v.syn1neg.tobytes() if self.d2v.negative else self.d2v.syn1.tobytes())
        digest.update(f"{self.cfg.get('infer_epochs') or self.cfg.epochs}:{self.seed}:{self.cfg.lowercase}".encode())
        return f"doc2vec:{digest.hexdigest()[:16]}"

    def encode(self, texts) -> np.ndarray:
        epochs = self.cfg.get("infer_epochs") or self.cfg.epochs
        out = []
        for text in texts:
            # seeded by the text itself: a text's vector does not depend on what else is embedded (cacheable)
            self.d2v.random.seed((self.seed * 1_000_003 + stable_hash(text)) % 2**32)
            out.append(self.d2v.infer_vector(tokenize(text, self.cfg.lowercase), epochs=epochs))
        return np.stack(out).astype(np.float32)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.d2v.save(str(folder / "doc2vec.model"))


def embedder(cfg, train_texts, device: str) -> Doc2VecEmbedder:
    return Doc2VecEmbedder(cfg.model, cfg.seed).train(list(train_texts))


def load_embedder(saved_cfg, folder: Path, device: str) -> Doc2VecEmbedder:
    from gensim.models.doc2vec import Doc2Vec

    return Doc2VecEmbedder(saved_cfg.model, saved_cfg.seed, Doc2Vec.load(str(folder / "doc2vec.model")))
