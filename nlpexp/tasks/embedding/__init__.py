"""Embedding customization on sentence pairs: a projection matrix (or a fine-tune) over any embedder."""
from nlpexp.tasks import Adapter, Task

TASKS = (Task("embedding", ("sentence_transformers", "minilm", "bert", "finbert", "doc2vec", "openai"),
              ("train", "apply"), "embedding customization on sentence pairs"),)
ADAPTERS = (*(Adapter(name, "hf", "embedding") for name in ("minilm", "bert", "finbert")),
            Adapter("doc2vec", "doc2vec", "embedding"),
            Adapter("sentence_transformers", "sentence_transformers", "embedding"),
            Adapter("openai", "openai", "embedding", needs_key="OPENAI_API_KEY"))
