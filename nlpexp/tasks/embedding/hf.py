"""Any HF encoder (BERT, FinBERT, MiniLM) as a sentence embedder for task=embedding: the mean of its last hidden
states over the real tokens. A named model is rebuilt from its name; one built here (pretrained=null) is saved."""
from pathlib import Path

import numpy as np

from nlpexp.inputs.hub import LOADED, builds_small, load_pretrained, small_bert_config, train_wordpiece
from nlpexp.runs import loading, write_dir
from nlpexp.tasks.embedding.contract import read_settings, write_settings



def weights_fingerprint(model) -> str:
    """Short hash of a model's weights: the cache id of a model built here (random init, fine-tuned)."""
    import hashlib

    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def mean_pool(hidden, attention_mask):
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class MeanPooledEncoder:
    """Any HF encoder as an embedder; `id` names it in the embedding cache."""

    def __init__(self, tokenizer, model, device: str, max_length: int, model_id: str, batch_size: int = 64,
                 precision: str = "fp32", revision: str | None = None):
        self.id = f"hf-mean:{model_id}" if model_id else f"hf-mean:built:{weights_fingerprint(model)}"
        self.id += f"@{revision}" if revision else ""  # another commit of a hub model: another cache entry
        self.revision = revision
        self.id += "" if precision == "fp32" else f":{precision}"  # other numbers: another cache entry
        self.precision = precision
        self.tokenizer, self.model, self.device = tokenizer, model.to(device).eval(), device
        self.max_length, self.batch_size, self.name = max_length, batch_size, model_id
        self.built_here = model_id is None

    def encode(self, texts) -> np.ndarray:
        import torch

        from nlpexp.report.console import Progress
        from nlpexp.training.precision import autocast

        texts = list(texts)
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        quiet = None if len(texts) >= 2000 else "off"
        with torch.inference_mode(), autocast(self.precision, self.device), \
                Progress(len(texts), "embed", unit="text", every=None, leave=False, mode=quiet) as bar:
            for start in range(0, len(texts), self.batch_size):
                idx = order[start:start + self.batch_size]
                enc = self.tokenizer([texts[i] for i in idx], truncation=True, max_length=self.max_length,
                                     padding=True, return_tensors="pt").to(self.device)
                hidden = self.model(**enc).last_hidden_state
                out[idx] = mean_pool(hidden, enc["attention_mask"]).float().cpu().numpy()
                bar.update(len(idx))
        return out

    def save(self, folder: Path) -> None:
        """settings.json, and the weights of a model built here (a named one is rebuilt from its name)."""
        with write_dir(folder) as tmp:  # written whole or not at all
            if self.built_here:
                self.model.save_pretrained(tmp)
                self.tokenizer.save_pretrained(tmp)
            write_settings(tmp, {"pretrained": self.name, "revision": self.revision, "max_length": self.max_length,
                                 "batch_size": self.batch_size, "precision": self.precision})

    def sentence_transformer(self, folder: Path):
        """The same encoder + mean pooling as a SentenceTransformer (for method=finetune)."""
        from sentence_transformers import SentenceTransformer

        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        return SentenceTransformer(str(folder), device=self.device, trust_remote_code=False)


def embedder(m, encodes, seed: int, train_texts, device: str) -> MeanPooledEncoder:
    """Pretrained encoder by name; null (a hub id in smoke runs) builds it small on the training texts.
    m: config.HFEmbedder; encodes: config.EncodesTruncated (trainer.max_length, trainer.precision)."""
    from transformers import AutoModel

    from nlpexp.training.precision import resolve

    max_length, precision = encodes.max_length, resolve(encodes.precision, device)
    if builds_small(m):
        small = m.small
        tokenizer = train_wordpiece(train_texts, small.vocab_size)
        config = small_bert_config(small, len(tokenizer), tokenizer.pad_token_id, max(max_length, 64) + 2)
        return MeanPooledEncoder(tokenizer, AutoModel.from_config(config), device, max_length, None,
                                 precision=precision)
    name = str(m.pretrained)
    tokenizer, model = load_pretrained(name, AutoModel, m.revision)
    return MeanPooledEncoder(tokenizer, model, device, max_length, name, precision=precision,
                             revision=LOADED["models"].get(name, {}).get("commit"))


def load(folder: Path, device: str) -> MeanPooledEncoder:
    from transformers import AutoModel, AutoTokenizer

    from nlpexp.training.precision import of_saved

    with loading(folder):
        saved = read_settings(folder)
        name = saved["pretrained"]
        if name is None:  # built here: its weights are in the run's folder
            tokenizer = AutoTokenizer.from_pretrained(folder)
            model = AutoModel.from_pretrained(folder, use_safetensors=True, trust_remote_code=False)
        else:
            tokenizer, model = load_pretrained(name, AutoModel, saved.get("revision"))  # the commit it ran with
        return MeanPooledEncoder(tokenizer, model, device, saved["max_length"], name, saved["batch_size"],
                                 of_saved(saved, device), saved.get("revision"))
