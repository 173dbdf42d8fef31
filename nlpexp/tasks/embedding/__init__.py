"""Embedding customization on sentence pairs: a projection matrix (or a fine-tune) over any embedder."""
from nlpexp.tasks import Adapter, Task
from nlpexp.tasks.embedding import config

TASKS = (Task("embedding", ("sentence_transformers", "minilm", "bert", "finbert", "doc2vec", "openai"),
              ("train", "apply"), "embedding customization on sentence pairs"),)
ADAPTERS = (*(Adapter(name, "hf", config.HFEmbedder) for name in ("minilm", "bert", "finbert")),
            Adapter("doc2vec", "doc2vec", config.Doc2VecEmbedderConfig),
            Adapter("sentence_transformers", "sentence_transformers", config.SentenceTransformer),
            Adapter("openai", "openai", config.OpenAIEmbedder, needs_key="OPENAI_API_KEY"))
