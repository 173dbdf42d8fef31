"""Doc2Vec as an embedder (model=doc2vec on task=embedding): trained on the pair texts of the training split,
vectors inferred for all, each seeded by its text (cacheable)."""
from pathlib import Path

import numpy as np

from nlpexp.models.doc2vec import (infer_epochs, infer_vector, load_doc2vec, save_doc2vec, settings_problem,
                                   text_seed, tokenize, train_doc2vec)
from nlpexp.runs import loading, write_dir
from dataclasses import fields

from nlpexp.tasks.embedding.config import Doc2VecEmbedderConfig
from nlpexp.tasks.embedding.contract import read_settings, write_settings


class Doc2VecEmbedder:
    def __init__(self, model_cfg, seed: int, d2v=None):
        self.cfg, self.seed, self.d2v = model_cfg, seed, d2v

    def train(self, texts) -> "Doc2VecEmbedder":
        self.d2v = train_doc2vec(texts, self.cfg, self.seed)
        return self

    @property
    def id(self) -> str:
        """The trained weights and the inference settings: the same training twice shares cache rows."""
        import hashlib

        digest = hashlib.sha1(self.d2v.wv.vectors.tobytes())
        digest.update(self.d2v.syn1neg.tobytes() if self.d2v.negative else self.d2v.syn1.tobytes())
        digest.update(f"{infer_epochs(self.cfg)}:{self.seed}:{self.cfg.lowercase}".encode())
        return f"doc2vec:{digest.hexdigest()[:16]}"

    def encode(self, texts) -> np.ndarray:
        epochs = infer_epochs(self.cfg)
        out = []
        for text in texts:
            # seeded by the text itself: a text's vector does not depend on what else is embedded (cacheable)
            out.append(infer_vector(self.d2v, tokenize(text, self.cfg.lowercase), epochs, text_seed(self.seed, text)))
        return np.stack(out).astype(np.float32)

    def save(self, folder: Path) -> None:
        with write_dir(folder) as tmp:  # written whole or not at all
            save_doc2vec(self.d2v, tmp, bool(self.cfg.get("export_native")))
            read = [f.name for f in fields(Doc2VecEmbedderConfig) if f.name != "name"]
            write_settings(tmp, {"seed": self.seed, "model": {k: self.cfg.get(k) for k in read}})


def embedder(m, encodes, seed: int, train_texts, device: str) -> Doc2VecEmbedder:
    """m: config.Doc2VecEmbedderConfig (it reads no trainer.*), as the node gensim's wrapper reads."""
    from omegaconf import OmegaConf

    return Doc2VecEmbedder(OmegaConf.structured(m), seed).train(list(train_texts))


def load(folder: Path, device: str) -> Doc2VecEmbedder:
    """A saved run's embedder. settings.json, the vocabulary and the arrays are checked before and after gensim
    sees them (models/doc2vec.py load_doc2vec): an edited file is one line, never a crash."""
    from omegaconf import OmegaConf

    from nlpexp.runs import load_error

    with loading(folder):  # NPY/JSON only: a doc2vec.model (gensim's pickle) beside them is never opened
        saved = read_settings(folder)
        problem = None if isinstance(saved, dict) else "settings.json holds no settings"
        problem = problem or settings_problem(saved.get("model"), "settings.json", saved.get("seed"))
        if problem:
            raise load_error(folder, problem)
        model_cfg = OmegaConf.create(saved["model"])
        return Doc2VecEmbedder(model_cfg, saved["seed"],
                               load_doc2vec(folder, model_cfg, saved["seed"], where="settings.json"))
