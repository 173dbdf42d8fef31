"""gensim Doc2Vec, as the classification (Doc2Vec + logistic regression) and embedding tasks both train it:
our tokenizer, a per-process-stable word hash and one set of training settings from the model config."""
import re
import zlib

TOKEN = re.compile(r"[a-z0-9]+(?:[.,'][a-z0-9]+)*|[^\sa-z0-9]", re.IGNORECASE)


def stable_hash(text: str) -> int:
    """gensim seeds word vectors with hash(word); Python's str hash changes per process, this one does not."""
    return zlib.crc32(text.encode("utf-8"))


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    return TOKEN.findall(text.lower() if lowercase else text)


def train_doc2vec(texts, model_cfg, seed: int, progress: bool = False):
    """A Doc2Vec trained on `texts` (tagged by position) with the model config's settings, one worker (repeatable)."""
    from gensim.models.callbacks import CallbackAny2Vec
    from gensim.models.doc2vec import Doc2Vec, TaggedDocument
    from tqdm.auto import tqdm

    c = model_cfg
    docs = [TaggedDocument(tokenize(t, c.lowercase), [i]) for i, t in enumerate(texts)]
    d2v = Doc2Vec(vector_size=c.vector_size, window=c.window, min_count=c.min_count, epochs=c.epochs, dm=c.dm,
                  dbow_words=c.dbow_words, seed=seed, workers=1, hashfxn=stable_hash)
    d2v.build_vocab(docs)

    class Progress(CallbackAny2Vec):
        def __init__(self, bar):
            self.bar = bar

        def on_epoch_end(self, model):
            self.bar.update(1)

    with tqdm(total=c.epochs, desc="doc2vec epochs", disable=not progress) as bar:
        d2v.train(docs, total_examples=len(docs), epochs=c.epochs, callbacks=[Progress(bar)])
    d2v.callbacks = ()
    return d2v


def infer_epochs(model_cfg) -> int:
    return int(model_cfg.get("infer_epochs") or model_cfg.epochs)
