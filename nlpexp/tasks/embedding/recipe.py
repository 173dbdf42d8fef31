"""Embedding customization on sentence pairs (task=embedding).

train: pairs -> split (grouped by text, stratified) -> negatives within each split -> embeddings (cached) ->
       cosine-similarity threshold accuracy before -> customize (method=matrix | finetune | none) -> after.
apply: a saved run's embedder (+ its matrix) on new texts, or its matrix on an NPY of embeddings.
Outputs: metrics.json, history.csv, history.png, similarity_histograms.png, pairs.csv (cosines before/after),
checkpoints/ (matrix.npy, embedder.json, and the embedder's own files when it cannot be rebuilt by name).
"""
import json
from pathlib import Path

import numpy as np
import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from nlpexp.config import registry
from nlpexp.errors import UserError
from nlpexp.report.metrics import accuracy_at, threshold_accuracy
from nlpexp.config.schema import typed
from nlpexp.tasks.embedding.cache import open_cache
from nlpexp.tasks.embedding.contract import EmbedderAdapter
from nlpexp.tasks.embedding.data import load_pairs

SPLIT_PREFIX = {"train": "train", "validation": "val", "test": "test"}


def run(cfg, run_dir: Path, device: str):
    return {"train": train, "apply": apply}[cfg.mode](cfg, run_dir, device)


def adapter(model: str) -> EmbedderAdapter:
    return registry.adapter(model, "embedding")


def train(cfg, run_dir: Path, device: str):
    task = cfg.task
    splits = load_pairs(cfg.data, task, cfg.seed)
    for name, frame in splits.items():
        print(f"{name}: {int((frame['label'] > 0).sum())} similar + {int((frame['label'] < 0).sum())} dissimilar pairs")
    train_texts = pd.unique(pd.concat([splits[s][c] for s in ("train", "validation") for c in ("text_1", "text_2")]))
    config = typed(cfg.model, registry.MODELS[cfg.model.name].adapters["embedding"].config)
    encodes = typed(cfg.trainer, config.encodes) if config.encodes else None
    embedder = adapter(cfg.model.name).embedder(config, encodes, int(cfg.seed), list(train_texts), device)
    cache = open_cache(task.cache)
    try:
        emb = embed_splits(cache, embedder, splits)
    finally:
        cache.close()
    labels = {name: parts[2] for name, parts in emb.items()}
    before = {name: cosine(a, b) for name, (a, b, _) in emb.items()}
    metrics = score(before, labels, task.threshold_steps, "_before")

    ckpt = run_dir / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    info, history = {"embedder": embedder.id, "method": task.method}, []
    if task.method == "matrix":
        matrix, history, best_epoch, trained = train_matrix(emb, task, cfg.trainer, cfg.seed, device, run_dir,
                                                            cfg.get("resume_from"))
        info.update(trained)
        np.save(ckpt / "matrix.npy", matrix.astype(np.float32))
        after = {name: cosine(a @ matrix, b @ matrix) for name, (a, b, _) in emb.items()}
        info["best_epoch"] = best_epoch
        last = history[best_epoch] if best_epoch < len(history) else history[-1]
        metrics.update({f"{p}_loss": round(last[f"{p}_loss"], 6) for p in ("train", "val", "test")})
    elif task.method == "finetune":
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:  # an HF encoder passes through a folder to become one
            st_model = embedder.sentence_transformer(Path(tmp))
        # the train split only: the validation pairs stay unseen, so val_accuracy is an honest sweep objective
        from nlpexp.tasks.embedding.finetune import finetune

        tuned, history, trained = finetune(st_model, splits["train"], task.finetune, cfg.trainer, cfg.seed, ckpt,
                                           device, cfg.get("resume_from"))
        info.update(trained)
        tuned_emb = embed_splits(open_cache(None), tuned, splits)
        after = {name: cosine(a, b) for name, (a, b, _) in tuned_emb.items()}
    else:
        after = before
    metrics.update(score(after, labels, task.threshold_steps, ""))
    metrics["test_gain"] = round(metrics["test_accuracy"] - metrics["test_accuracy_before"], 6)
    items = test_items(splits["test"], before["test"], after["test"], labels["test"], metrics)
    metrics["cache_hits"], metrics["cache_misses"] = cache.hits, cache.misses

    embedder.save(ckpt / "embedder")
    (ckpt / "embedder.json").write_text(json.dumps({"id": embedder.id, "model": cfg.model.name,
                                                    "method": task.method}, indent=2))
    if not history:
        history = [{"epoch": 0, **{f"{SPLIT_PREFIX[n]}_accuracy": metrics.get(f"{SPLIT_PREFIX[n]}_accuracy_before")
                                   for n in splits}}]
    if task.method == "finetune":
        history.append({"epoch": history[-1]["epoch"], **{f"{SPLIT_PREFIX[n]}_accuracy": metrics.get(
            f"{SPLIT_PREFIX[n]}_accuracy") for n in ("train", "validation", "test")}})
    pd.DataFrame(history).to_csv(run_dir / "history.csv", index=False)
    plot_curves(history, run_dir / "history.png")
    plot_histograms(before, after, labels, run_dir / "similarity_histograms.png",
                    "after" if task.method != "none" else "(no customization)")
    table = pd.concat([f.assign(split=name, cosine_before=before[name].round(6), cosine_after=after[name].round(6))
                       for name, f in splits.items()], ignore_index=True)
    table.drop(columns=["line"]).to_csv(run_dir / "pairs.csv", index=False)
    return {"metrics": metrics, "objective": "val_accuracy", "items": items, **info,
            "samples": {name: len(frame) for name, frame in splits.items()}}


def test_items(frame: pd.DataFrame, before, after, labels, metrics: dict) -> dict:
    """The test pairs for report.stats: their hash and, per accuracy, each pair right or wrong at that accuracy's
    threshold (`similarity > t` means similar), held fixed while the pairs are resampled."""
    from nlpexp.report import stats

    def right(sim, threshold):
        return ((np.asarray(sim, dtype=np.float64) > threshold) == (np.asarray(labels) > 0)).astype(int)

    return {"sha256": stats.items_hash(zip(frame["text_1"], frame["text_2"]), np.asarray(labels).tolist()),
            "blocks": [stats.mean_block(right(after, metrics["test_threshold"]), "test_accuracy"),
                       stats.mean_block(right(after, metrics["train_threshold"]), "test_accuracy_at_train_threshold"),
                       stats.mean_block(right(before, metrics["test_threshold_before"]), "test_accuracy_before")]}


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(axis=1)


def embed_splits(cache, embedder, splits) -> dict:
    """{split: (E1, E2, labels)}: every text embedded once through the cache."""
    texts = pd.unique(pd.concat([pd.concat([f["text_1"], f["text_2"]]) for f in splits.values()])).tolist()
    vectors = cache.embed(embedder, texts)
    row = {t: i for i, t in enumerate(texts)}
    return {name: (vectors[[row[t] for t in f["text_1"]]], vectors[[row[t] for t in f["text_2"]]],
                   f["label"].to_numpy().astype(np.float32)) for name, f in splits.items()}


def score(sims: dict, labels: dict, steps: int, suffix: str) -> dict:
    """Best-threshold accuracy ± 1.96·SE per split (the original study's metric), and the test accuracy at
    the threshold chosen on train (the honest one)."""
    out, best = {}, {}
    for name, sim in sims.items():
        best[name] = threshold_accuracy(sim, labels[name], steps)
        prefix = SPLIT_PREFIX[name]
        out[f"{prefix}_accuracy{suffix}"] = round(best[name]["accuracy"], 6)
        out[f"{prefix}_accuracy_ci95{suffix}"] = round(best[name]["ci95"], 6)
        out[f"{prefix}_threshold{suffix}"] = best[name]["threshold"]
    out[f"test_accuracy_at_train_threshold{suffix}"] = round(
        accuracy_at(sims["test"], labels["test"], best["train"]["threshold"]), 6)
    return out


def init_matrix(dim: int, modified_dim: int, how: str, generator):
    """random: the original study's N(0, 1). identity / orthogonal keep every cosine as it is at the start,
    scaled by sqrt(modified_dim) to the random matrix's norm so the original learning rates mean the same."""
    import torch

    if how == "random":
        return torch.randn(dim, modified_dim, generator=generator)
    matrix = torch.zeros(dim, modified_dim)
    if how == "identity":
        k = min(dim, modified_dim)
        matrix[:k, :k] = torch.eye(k)
    else:
        torch.nn.init.orthogonal_(matrix, generator=generator)
    return matrix * modified_dim ** 0.5


class Projection:
    """The projection matrix M for our loop: a batch is a tensor of training-pair indices, its loss the summed
    squared error between cos(e1 M, e2 M) and the ±1 label."""

    unit = "pairs"

    def __init__(self, matrix, train, batch_size: int, dropout: float, seed: int):
        import torch

        self.model = torch.nn.Module()
        self.model.matrix = torch.nn.Parameter(matrix)
        self.train, self.batch_size, self.dropout, self.seed = train, batch_size, dropout, seed

    def batches(self, epoch: int):
        import torch

        from nlpexp.training.loop import seeded_order

        return list(torch.as_tensor(seeded_order(len(self.train[2]), self.seed, epoch)).split(self.batch_size))

    def units(self, batch) -> int:
        return len(batch)

    def loss_sum(self, idx):
        import torch.nn.functional as F

        a_all, b_all, y_all = self.train
        idx = idx.to(a_all.device)
        a = F.dropout(a_all[idx], p=self.dropout, training=True)
        b = F.dropout(b_all[idx], p=self.dropout, training=True)
        m = self.model.matrix
        return ((F.cosine_similarity(a @ m, b @ m) - y_all[idx]) ** 2).sum()


class MatrixChoice:
    """Every split's loss and best-threshold accuracy after each epoch; the best epoch by (validation accuracy,
    -validation loss) is remembered (trainer.patience epochs without a new best stop the loop), a non-finite loss
    stops training at once."""

    def __init__(self, matrix, data: dict, steps: int):
        self.matrix, self.data, self.steps = matrix, data, steps
        self.key, self.best, self.best_epoch = None, None, 0

    def row(self) -> dict:
        import torch
        import torch.nn.functional as F

        row = {}
        with torch.no_grad():
            m = self.matrix.float()
            gram = m @ m.T  # cos(aM, bM) from a (M Mᵀ) bᵀ: dim x dim work per pair, not dim x modified_dim
            for name, (a, b, y) in self.data.items():
                ag, bg = a @ gram, b @ gram
                sim = (ag * b).sum(1) / ((ag * a).sum(1).clamp_min(1e-12) * (bg * b).sum(1).clamp_min(1e-12)).sqrt()
                row[f"{SPLIT_PREFIX[name]}_loss"] = float(F.mse_loss(sim, y))
                row[f"{SPLIT_PREFIX[name]}_accuracy"] = threshold_accuracy(sim.cpu().numpy(), y.cpu().numpy(),
                                                                           self.steps)["accuracy"]
        return row

    def __call__(self, epoch: float, step: int) -> dict:
        row = self.row()
        if not np.isfinite(row["train_loss"]):
            print(f"matrix: loss is {row['train_loss']} at epoch {epoch:g} (learning rate too high?); stopping")
            return {**row, "stop": True}
        best = self.key is None or (row["val_accuracy"], -row["val_loss"]) > tuple(self.key)
        if best:
            self.key, self.best, self.best_epoch = \
                (row["val_accuracy"], -row["val_loss"]), self.matrix.detach().clone(), int(round(epoch))
        return {**row, "best": best}

    def state(self) -> dict:
        out = {"key": self.key, "best_epoch": self.best_epoch}
        return {**out, "best": self.best} if self.best is not None else out

    def load_state(self, state: dict) -> None:
        self.key, self.best_epoch = state["key"], state["best_epoch"]
        self.best = state.get("best")


def train_matrix(emb: dict, task, trainer, seed: int, device: str, run_dir: Path | None = None, resume_from=None):
    """Plain SGD (constant rate, no clipping: the original study's) in training.loop on MSE between cos(e1 M, e2 M)
    and the ±1 label. The epoch with the best validation accuracy wins if it beats the start (epoch 0) by
    task.min_gain (default: one standard error of the start's validation accuracy); otherwise the start is kept,
    so an identity/orthogonal start never ends below the baseline."""
    import torch

    from nlpexp.training import loop

    gen = torch.Generator().manual_seed(seed)
    data = {name: tuple(torch.from_numpy(x).to(device) for x in parts) for name, parts in emb.items()}
    dim = data["train"][0].shape[1]
    initial = init_matrix(dim, int(task.modified_dim), task.init, gen).to(device)
    job = Projection(initial.clone(), data["train"], int(trainer.batch_size), float(task.dropout), seed)
    choice = MatrixChoice(job.model.matrix, data, task.threshold_steps)
    start = {"epoch": 0, **choice.row()}
    n_val = len(data["validation"][2])
    # the trained matrix replaces the start only when it beats it on validation by more than the noise
    min_gain = task.min_gain if task.min_gain is not None else \
        (start["val_accuracy"] * (1 - start["val_accuracy"]) / n_val) ** 0.5
    settings = loop.Settings.of(trainer, device, weight_decay=0.0, warmup_ratio=0.0, clip=0.0, schedule="constant")
    history, info = loop.fit(job, settings, device, run_dir=run_dir, evaluate=choice, resume_from=resume_from,
                             optimizer=lambda params, s: torch.optim.SGD(params, lr=s.lr), desc="matrix")
    history = [start] + [{k: v for k, v in r.items() if k != "step"} for r in history]
    best, best_epoch = choice.best, choice.best_epoch
    if best is None or choice.key[0] - start["val_accuracy"] < max(min_gain, 1e-12):
        print(f"matrix: no validation gain over the start beyond {min_gain:.4f}; keeping the start (epoch 0)")
        best, best_epoch = initial, 0
    return best.float().cpu().numpy(), history, best_epoch, info


def plot_histograms(sims_before: dict, sims_after: dict, labels: dict, path: Path, title_after: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    for col, name in enumerate(("train", "test")):
        for row, (sims, when) in enumerate(((sims_before, "before"), (sims_after, title_after))):
            ax = axes[row][col]
            for lab, colour, text in ((1, "tab:green", "similar (+1)"), (-1, "tab:red", "dissimilar (-1)")):
                ax.hist(sims[name][labels[name] == lab], bins=40, range=(-1, 1), alpha=0.6, color=colour, label=text)
            ax.set_title(f"{name}: cosine similarity, {when}")
            ax.legend(fontsize=8)
    for ax in axes[1]:
        ax.set_xlabel("cosine similarity")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, what in zip(axes, ("loss", "accuracy")):
        for prefix in ("train", "val", "test"):
            points = [(r["epoch"], r[f"{prefix}_{what}"]) for r in history if r.get(f"{prefix}_{what}") is not None]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=f"{prefix} {what}")
        ax.set_xlabel("epoch")
        ax.set_title(what)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def apply(cfg, run_dir: Path, device: str):
    """Embeddings of new texts (or given embeddings) transformed with a saved run's matrix -> NPY."""
    ckpt = Path(str(cfg.ckpt)).expanduser()
    saved = OmegaConf.load(ckpt / ".hydra" / "config.yaml")
    folder = ckpt / "checkpoints"
    if not (folder / "embedder.json").exists():
        raise UserError(f"{ckpt} has no checkpoints/embedder.json (is it a finished task=embedding run?)")
    from nlpexp.runs import loading, require_manifest

    source = Path(str(cfg.input)).expanduser()
    from nlpexp.inputs.readers import read_texts

    texts = None if source.suffix.lower() == ".npy" else read_texts(source, ("text", "sentence", "text_1", "content"))
    with loading(folder):
        matrix = np.load(folder / "matrix.npy", allow_pickle=False) if (folder / "matrix.npy").exists() else None
    if texts is not None:  # the embedder's folder: refused without its saved_files.json (its loader checks the rest)
        require_manifest(folder / ("encoder" if saved.task.method == "finetune" else "embedder"))
    if texts is None:
        try:
            vectors = np.load(source, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise UserError(f"{source}: not an NPY array of embeddings ({str(err).splitlines()[0][:120]})") from None
        from nlpexp import provenance

        provenance.record_file(source)  # (texts are recorded by the reader)
        if matrix is None:
            raise UserError(f"{ckpt} has no matrix.npy (method={saved.task.method}); give texts instead of an NPY")
        if vectors.ndim != 2 or vectors.shape[1] != matrix.shape[0]:
            raise UserError(f"{source}: expected an (n, {matrix.shape[0]}) array, got {vectors.shape}")
    else:
        if saved.task.method == "finetune":
            from nlpexp.tasks.embedding.finetune import load_finetuned

            embedder = load_finetuned(folder / "encoder", device)
        else:
            embedder = adapter(saved.model.name).load(folder / "embedder", device)
        cache = open_cache(saved.task.cache if saved.task.method != "finetune" else None)
        try:
            vectors = cache.embed(embedder, texts)
        finally:
            cache.close()
        pd.DataFrame({"text": texts}).to_csv(run_dir / "texts.csv", index=False)
    out = vectors @ matrix if matrix is not None else vectors
    target = Path(str(cfg.output)).expanduser() if cfg.get("output") else run_dir / "embeddings.npy"
    target.parent.mkdir(parents=True, exist_ok=True)
    from nlpexp.inputs.readers import atomic_output

    with atomic_output(target, "wb") as handle:  # whole or not at all: a full disk leaves no truncated array
        np.save(handle, out.astype(np.float32))
    print(f"{out.shape[0]} embeddings of dimension {out.shape[1]} written to {target}")
    return {"metrics": {"applied_rows": float(out.shape[0]), "applied_dim": float(out.shape[1])},
            "objective": "applied_rows", "applied": {"ckpt": str(ckpt), "input": str(source), "output": str(target)}}


class GridTable(Callback):
    """After a task=embedding sweep: one table of the runs and the best configuration by the objective."""

    def on_multirun_end(self, config, **kwargs) -> None:
        import yaml

        root = Path(config.hydra.sweep.dir)
        rows = []
        for path in sorted(root.glob("*/metrics.json")):
            summary = json.loads(path.read_text())
            overrides = yaml.safe_load((path.parent / ".hydra" / "overrides.yaml").read_text()) \
                if (path.parent / ".hydra" / "overrides.yaml").exists() else []
            metrics = summary.get("metrics", {})
            rows.append({"run": path.parent.name, "overrides": " ".join(overrides), "status": summary.get("status"),
                         **{k: metrics.get(k) for k in ("val_accuracy", "test_accuracy_before", "test_accuracy",
                                                        "test_accuracy_ci95", "test_gain")}})
        if not any(r["status"] == "complete" and r.get("test_accuracy") is not None for r in rows):
            return
        table = pd.DataFrame(rows)
        done = table[table["status"] == "complete"]
        best = done.sort_values(["val_accuracy", "test_accuracy"], ascending=False, na_position="last").iloc[0]
        (root / "grid.md").write_text(table.to_markdown(index=False, floatfmt=".4f") +
                                      f"\n\nbest by val_accuracy: {best['overrides']}\n")
        print("\n" + table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        print(f"best by val_accuracy: {best['overrides']} (test accuracy {best['test_accuracy']:.4f}); "
              f"table: {root / 'grid.md'}")
