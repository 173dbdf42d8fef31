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


def plot_confusion(gold, pred, labels: list[str], path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2.5, 1.2 * len(labels) + 2))
    ConfusionMatrixDisplay.from_predictions(gold, pred, labels=list(range(len(labels))), display_labels=labels,
                                            ax=ax, colorbar=False, cmap="Blues")
    ax.set_title(title)
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
    for key in keys:
        points = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]
        if points:
            ax.plot(*zip(*points), marker="o", label=key)
    ax.set_xlabel("epoch")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
