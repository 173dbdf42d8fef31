"""OpenAI embeddings API as an embedder (optional: pip install 'nlpexp[openai]').

The key comes only from the OPENAI_API_KEY environment variable and is never put into the config, the cache or
any file a run writes: the client reads it from the environment itself.
"""
import os
from pathlib import Path

import numpy as np

from nlpexp.errors import UserError
from nlpexp.tasks.embedding.contract import read_settings, write_settings

KEY_VARIABLE = "OPENAI_API_KEY"


def require_key() -> None:
    if not os.environ.get(KEY_VARIABLE, "").strip():
        raise UserError(f"model=openai needs an API key in the {KEY_VARIABLE} environment variable "
                        "(it is read from there only and never written to any file)")


class OpenAIEmbedder:
    def __init__(self, engine: str, batch_size: int, timeout: float):
        require_key()
        try:
            import openai
        except ImportError:
            raise UserError("model=openai needs the openai package: pip install 'nlpexp[openai]'") from None
        self.openai, self.engine, self.batch_size, self.timeout = openai, engine, batch_size, timeout
        self.client = openai.OpenAI(timeout=timeout, max_retries=2)  # reads the key from the environment
        self.id = f"openai:{engine}"

    def encode(self, texts) -> np.ndarray:
        texts, out = list(texts), []
        for start in range(0, len(texts), self.batch_size):
            try:
                response = self.client.embeddings.create(model=self.engine, input=texts[start:start + self.batch_size])
            except self.openai.OpenAIError as err:
                first = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
                raise UserError(f"OpenAI embeddings request failed ({type(err).__name__}: {first}); check the network "
                                f"and {KEY_VARIABLE}, or use an offline embedder: model=sentence_transformers"
                                ) from None
            out += [item.embedding for item in sorted(response.data, key=lambda d: d.index)]
        return np.asarray(out, dtype=np.float32)

    def save(self, folder: Path) -> None:
        """The engine and request settings only (never the key), written whole with its saved_files.json."""
        from nlpexp.runs import write_dir

        with write_dir(folder) as tmp:
            write_settings(tmp, {"engine": self.engine, "batch_size": self.batch_size, "timeout": self.timeout})


def embedder(m, encodes, seed: int, train_texts, device: str) -> OpenAIEmbedder:
    """m: config.OpenAIEmbedder (it reads no trainer.*)."""
    return OpenAIEmbedder(str(m.engine), int(m.batch_size), float(m.timeout))


def load(folder: Path, device: str) -> OpenAIEmbedder:
    from nlpexp.runs import loading

    with loading(folder):
        saved = read_settings(folder)
        return OpenAIEmbedder(saved["engine"], saved["batch_size"], saved["timeout"])
