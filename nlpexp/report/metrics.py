"""Metrics shared by the runners (scikit-learn does the arithmetic)."""
import numpy as np


def classification_metrics(gold, proba, labels: list[str]) -> tuple[dict, dict]:
    """Flat headline metrics and the per-class report."""
    from sklearn.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score

    gold = np.asarray(gold)
    pred = np.asarray(proba).argmax(axis=1)
    ids = list(range(len(labels)))
    headline = {
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(f1_score(gold, pred, labels=ids, average="macro", zero_division=0)),
        "weighted_precision": float(precision_score(gold, pred, labels=ids, average="weighted", zero_division=0)),
        "weighted_recall": float(recall_score(gold, pred, labels=ids, average="weighted", zero_division=0)),
    }
    report = classification_report(gold, pred, labels=ids, target_names=labels, output_dict=True, zero_division=0)
    return headline, report


# -- multi-label classification: one yes/no decision per label, each at its own threshold ------------------------
def multi_hot(label_tuples, n_labels: int) -> np.ndarray:
    """(n texts, n labels) 0/1 float32 from one tuple of label ids per text (empty: no label)."""
    out = np.zeros((len(label_tuples), n_labels), dtype=np.float32)
    for row, ids in enumerate(label_tuples):
        out[row, list(ids)] = 1.0
    return out


def choose_thresholds(gold_multi_hot, proba) -> np.ndarray:
    """Per label, the threshold (predicted: p >= threshold) with the best F1 of that label on these (validation)
    texts. Labels are rare and their probabilities calibrated unevenly, so one 0.5 for all under-predicts the rare
    ones. Candidates: the lowest probability (every text positive) and the midpoints between neighbouring distinct
    probabilities, so a threshold never sits on a text's own score; ties go to the one nearest 0.5. A label with
    no positive text here keeps 0.5 (its F1 is 0 at every threshold: nothing to choose by)."""
    gold, proba = np.asarray(gold_multi_hot) > 0.5, np.asarray(proba, dtype=np.float64)
    thresholds = np.full(gold.shape[1], 0.5)
    for j in range(gold.shape[1]):
        pos, neg = np.sort(proba[gold[:, j], j]), np.sort(proba[~gold[:, j], j])
        if not len(pos):
            continue
        values = np.unique(proba[:, j])
        candidates = np.concatenate([values[:1], (values[1:] + values[:-1]) / 2])
        tp = len(pos) - np.searchsorted(pos, candidates, side="left")  # positives with p >= t
        fp = len(neg) - np.searchsorted(neg, candidates, side="left")
        f1 = 2 * tp / (2 * tp + fp + (len(pos) - tp))
        best = np.flatnonzero(f1 == f1.max())
        thresholds[j] = candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]]
    return thresholds


def multilabel_metrics(gold_multi_hot, proba, labels: list[str], thresholds) -> tuple[dict, dict]:
    """Flat headline metrics and the per-label report of `p >= threshold` decisions. `accuracy` is the subset
    accuracy (every label of a text right) and the weighted scores are per label by support: the names that
    trainer.best_metric chooses among mean the same thing for single-label runs."""
    from sklearn.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score

    gold = (np.asarray(gold_multi_hot) > 0.5).astype(int)
    pred = (np.asarray(proba) >= np.asarray(thresholds)).astype(int)
    subset = float(accuracy_score(gold, pred))  # on indicator matrices: the exact set matches
    headline = {
        "micro_f1": float(f1_score(gold, pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(gold, pred, average="macro", zero_division=0)),
        "subset_accuracy": subset,
        "accuracy": subset,
        "weighted_precision": float(precision_score(gold, pred, average="weighted", zero_division=0)),
        "weighted_recall": float(recall_score(gold, pred, average="weighted", zero_division=0)),
    }
    report = classification_report(gold, pred, labels=list(range(len(labels))), target_names=labels,
                                   output_dict=True, zero_division=0)
    return headline, report


# fonts with the CJK ideographs, the first one installed draws Chinese (and Japanese) labels
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei",
             "SimHei", "Microsoft YaHei", "PingFang SC", "Heiti SC", "Noto Sans CJK JP", "Arial Unicode MS")


def drawable(labels: list[str]) -> tuple[list[str], list[str] | None, str]:
    """(labels as the plot can draw them, the font family to draw them with, a note): labels with CJK characters
    need a CJK font; without one installed they are drawn as #0, #1 ... in the task's label order (the note says
    so) instead of as empty boxes."""
    if all(ord(c) < 0x2E80 for label in labels for c in label):
        return labels, None, ""
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    family = next((f for f in CJK_FONTS if f in installed), None)
    if family:
        return labels, [family, "DejaVu Sans"], ""
    return [f"#{i}" for i in range(len(labels))], None, "labels by index (no CJK font installed)"


def plot_confusion(gold, pred, labels: list[str], path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    shown, family, note = drawable(labels)
    with plt.rc_context({"font.family": family} if family else {}):
        fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2.5, 1.2 * len(labels) + 2))
        ConfusionMatrixDisplay.from_predictions(gold, pred, labels=list(range(len(labels))), display_labels=shown,
                                                ax=ax, colorbar=False, cmap="Blues")
        ax.set_title(f"{title}\n{note}" if note else title, fontsize=10 if note else None)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)


def plot_history(history: list[dict], path, keys=("train_loss", "val_loss", "val_accuracy")) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in history if "epoch" in r]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    runs = sorted({r.get("ingredient") for r in rows}, key=lambda g: g or 0)  # a soup: one line per ingredient
    for n, key in enumerate(keys):
        for k, run in enumerate(runs):
            points = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None and r.get("ingredient") == run]
            if points:
                ax.plot(*zip(*points), marker="o", color=f"C{n}", alpha=1.0 if k == 0 else 0.5,
                        label=key if k == 0 else None)
    if len(runs) > 1:
        ax.set_title(f"{len(runs)} soup ingredients", fontsize=9)
    ax.set_xlabel("epoch")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def threshold_grid(steps: int = 2000) -> np.ndarray:
    """The original study's thresholds: k / 1000 for k in -1000..999 (steps=2000), computed the same way."""
    half = steps // 2
    return np.arange(-half, half) / half


def threshold_accuracy(similarity, labels, steps: int = 2000) -> dict:
    """Best accuracy of `similarity > t -> +1 else -1` over the threshold grid, its SE and the threshold.

    Sorts once and counts with searchsorted: O((n + steps) log n) instead of the n x steps double loop,
    and the same numbers (integer counts / n; the first best threshold wins, as `>` in the loop).
    """
    sim = np.asarray(similarity, dtype=np.float64)
    pos = np.asarray(labels) > 0
    grid = threshold_grid(steps)
    above_pos = pos.sum() - np.searchsorted(np.sort(sim[pos]), grid, side="right")  # positives with sim > t
    below_neg = np.searchsorted(np.sort(sim[~pos]), grid, side="right")  # negatives with sim <= t
    accuracy = (above_pos + below_neg) / len(sim)
    best = int(np.argmax(accuracy))
    acc = float(accuracy[best])
    se = (acc * (1 - acc) / len(sim)) ** 0.5
    return {"accuracy": acc, "se": se, "ci95": 1.96 * se, "threshold": float(grid[best])}


def accuracy(clf, frame) -> float:
    """Accuracy of a classifier (anything with predict_proba) on a frame with text and label columns."""
    texts = list(zip(frame["text"], frame["text_pair"])) if "text_pair" in frame else frame["text"]  # sentence pairs
    return round(float((clf.predict_proba(texts).argmax(axis=1) == frame["label"].to_numpy()).mean()), 6)


def accuracy_at(similarity, labels, threshold: float) -> float:
    """Accuracy of `similarity > threshold -> +1` (a threshold chosen on another split)."""
    pred = np.where(np.asarray(similarity, dtype=np.float64) > threshold, 1, -1)
    return float((pred == np.where(np.asarray(labels) > 0, 1, -1)).mean())


# -- language modelling and generation ------------------------------------------------------------------
def perplexity(mean_nll: float) -> float:
    """exp of the mean negative log-likelihood per token (nats)."""
    import math

    return float(math.exp(min(mean_nll, 700.0)))


def _ngrams(seq, n: int) -> list:
    return [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]


def distinct_n(texts, n: int) -> float:
    """Distinct n-grams over all n-grams across the texts (Li et al., 2016); sequences of characters or tokens."""
    grams = [g for t in texts for g in _ngrams(t, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def text_repetition(text, n: int = 2) -> float | None:
    """The share of the text's n-grams that already occurred earlier in it; None when it has no n-gram."""
    grams = _ngrams(text, n)
    return 1.0 - len(set(grams)) / len(grams) if grams else None


def repetition_rate(texts, n: int = 2) -> float:
    """Mean over texts of the share of n-grams that already occurred earlier in the same text (texts without an
    n-gram left out)."""
    rates = [r for r in (text_repetition(t, n) for t in texts) if r is not None]
    return float(np.mean(rates)) if rates else 0.0


def _gram_keys(ids: np.ndarray, k: int, vocab_size: int) -> np.ndarray:
    """Every k-gram of `ids` as one int64 (base vocab_size)."""
    n = len(ids) - k + 1
    key = np.zeros(max(n, 0), dtype=np.int64)
    for j in range(k):
        key = key * vocab_size + ids[j:j + n]
    return key


def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """values[key] for each query key, 0 where the key is absent (keys sorted)."""
    if not len(keys):
        return np.zeros(len(query))
    pos = np.clip(np.searchsorted(keys, query), 0, len(keys) - 1)
    return np.where(keys[pos] == query, values[pos], 0).astype(np.float64)


def kneser_ney_nll(train_ids, history, next_ids, vocab_size: int, order: int, discount: float) -> float:
    """Mean -log P(next | the order-1 tokens before it) of kneser_ney_nlls."""
    return float(kneser_ney_nlls(train_ids, history, next_ids, vocab_size, order, discount).mean())


def kneser_ney_nlls(train_ids, history, next_ids, vocab_size: int, order: int, discount: float) -> np.ndarray:
    """-log P(next | the order-1 tokens before it) of each target (the per-item losses of a bootstrap) under
    interpolated Kneser-Ney (Chen & Goodman 1998, one absolute discount) counted on `train_ids`: the top order on
    counts, lower orders on continuation counts (how many distinct tokens precede), the unigram interpolated with
    uniform over the vocabulary, so every token has probability > 0. `history`: (N, order-1) ids, the last column
    just before `next_ids`."""
    V, d = int(vocab_size), float(discount)
    train = np.asarray(train_ids, dtype=np.int64)
    nxt = np.asarray(next_ids, dtype=np.int64)
    hist = np.asarray(history, dtype=np.int64).reshape(len(nxt), -1)[:, hist_cols(order)] if order > 1 else \
        np.zeros((len(nxt), 0), dtype=np.int64)
    prob = np.full(len(nxt), 1.0 / V)
    for k in range(1, order + 1):
        grams = np.unique(_gram_keys(train, k + (k < order), V))
        if k < order:  # continuation counts: distinct tokens before the k-gram
            keys, counts = np.unique(grams % V ** k, return_counts=True)
        else:
            keys, counts = np.unique(_gram_keys(train, k, V), return_counts=True)
        ctx_keys, inverse = np.unique(keys // V, return_inverse=True)
        ctx_total = np.bincount(inverse, weights=counts)
        ctx_types = np.bincount(inverse)
        query_ctx = np.zeros(len(nxt), dtype=np.int64)
        for j in range(k - 1):
            query_ctx = query_ctx * V + hist[:, hist.shape[1] - (k - 1) + j]
        num = _lookup(keys, counts, query_ctx * V + nxt)
        den = _lookup(ctx_keys, ctx_total, query_ctx)
        types = _lookup(ctx_keys, ctx_types, query_ctx)
        seen = den > 0
        safe = np.where(seen, den, 1.0)
        prob = np.where(seen, np.maximum(num - d, 0) / safe + d * types / safe * prob, prob)
    return -np.log(prob)


def hist_cols(order: int) -> slice:
    """The history columns an n-gram of `order` reads: the last order-1 (all of them for a unigram: none)."""
    return slice(-(order - 1), None) if order > 1 else slice(0, 0)


def bleu_scores(hypotheses: list[str], references: list[str]) -> tuple[float, float]:
    """(corpus BLEU, mean sentence BLEU) from sacrebleu, one reference per hypothesis, on a 0-1 scale
    (sacrebleu reports 0-100; the original story study reported 0-1)."""
    import sacrebleu

    corpus = sacrebleu.corpus_bleu(hypotheses, [references]).score / 100
    return float(corpus), mean_sentence_bleu(hypotheses, references)


def mean_sentence_bleu(hypotheses: list[str], references: list[str]) -> float:
    """The mean of sacrebleu's sentence BLEU over the texts, on a 0-1 scale."""
    import sacrebleu

    sentence = [sacrebleu.sentence_bleu(h, [r]).score / 100 for h, r in zip(hypotheses, references)]
    return float(np.mean(sentence)) if sentence else 0.0


def punctuation_only(text: str) -> bool:
    """True when the text holds no letter or digit (empty included)."""
    return not any(c.isalnum() for c in text)


def plot_accuracy_matrix(matrix, path, title: str = "accuracy: train set (rows) x test set (columns)") -> None:
    """Heatmap of a train x test accuracy DataFrame (cross-dataset evaluation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 * matrix.shape[1] + 3, 0.8 * matrix.shape[0] + 2))
    image = ax.imshow(matrix.to_numpy(dtype=float), vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(matrix.shape[1]), [str(c) for c in matrix.columns], rotation=20, ha="right", fontsize=8)
    ax.set_yticks(range(matrix.shape[0]), [str(i) for i in matrix.index], fontsize=8)
    for (i, j), value in np.ndenumerate(matrix.to_numpy(dtype=float)):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.3f}", ha="center", va="center", color="white" if value > 0.6 else "black")
    ax.set_xlabel("test set")
    ax.set_ylabel("train set")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
