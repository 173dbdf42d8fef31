"""Scoring a multi-label classifier (task.multi_label=true): each label is a yes/no decision at its own threshold.

The thresholds are chosen on the validation split (each label's best F1 there, report.metrics.choose_thresholds),
saved in thresholds.json, and applied unchanged to the test split and to mode=predict: the test split never
chooses anything. Outputs beside the single-label ones: thresholds.json, predictions_val.csv / predictions.csv
(gold and predicted label sets, one probability per label) and per_label_f1.png.
"""
import json
from pathlib import Path

import numpy as np
import pandas as pd

from nlpexp.report.metrics import choose_thresholds, multi_hot, multilabel_metrics
from nlpexp.tasks.classify.data import inputs

THRESHOLDS = "thresholds.json"


def score(clf, splits: dict, labels: list[str], run_dir: Path) -> tuple[dict, dict, dict]:
    """(metrics with val_/test_ keys, the per-label reports by prefix, the test items for report.stats) of `clf` on
    splits["validation"] and splits["test"] at the thresholds chosen on validation; writes thresholds.json, the
    predictions and the plot."""
    scored = {prefix: (splits[split], clf.predict_proba(inputs(splits[split])))
              for split, prefix in (("validation", "val"), ("test", "test"))}
    frame, proba = scored["val"]
    thresholds = choose_thresholds(multi_hot(list(frame["label"]), len(labels)), proba)
    # unrounded: a loaded run (mode=predict) decides exactly as this one
    (Path(run_dir) / THRESHOLDS).write_text(json.dumps(
        {name: float(t) for name, t in zip(labels, thresholds)}, ensure_ascii=False, indent=2))
    metrics, reports = {}, {}
    for prefix, (frame, proba) in scored.items():
        headline, reports[prefix], items = score_split(frame, proba, labels, thresholds, prefix, run_dir)
        metrics.update(headline)
    return metrics, reports, items


def score_split(frame: pd.DataFrame, proba, labels: list[str], thresholds, prefix: str, run_dir: Path
                ) -> tuple[dict, dict, dict]:
    """One split at fixed thresholds: (metrics with `prefix`_ keys, per-label F1 among them; the report; the items
    for report.stats), its predictions CSV, and for the test split the per-label F1 plot (mode=eval scores a saved
    run's split so)."""
    from nlpexp.report import stats

    gold = multi_hot(list(frame["label"]), len(labels))
    headline, report = multilabel_metrics(gold, proba, labels, thresholds)
    items = {"sha256": stats.items_hash(inputs(frame), [sorted(labels[i] for i in ids) for ids in frame["label"]]),
             "blocks": [stats.multilabel_block(gold > 0.5, np.asarray(proba) >= np.asarray(thresholds), prefix)]}
    per_label = {f"f1_{name}": report[name]["f1-score"] for name in labels}
    metrics = {f"{prefix}_{k}": round(float(v), 6) for k, v in {**headline, **per_label}.items()}
    write_predictions(frame, proba, labels, thresholds,
                      Path(run_dir) / f"predictions{'' if prefix == 'test' else '_' + prefix}.csv")
    if prefix == "test":
        plot_per_label_f1([metrics[f"test_f1_{name}"] for name in labels], labels, Path(run_dir) / "per_label_f1.png",
                          title=f"test micro F1 {metrics['test_micro_f1']:.3f}, macro F1 "
                                f"{metrics['test_macro_f1']:.3f}")
    return metrics, report, items


def predicted_sets(proba, labels: list[str], thresholds) -> list[list[str]]:
    """Each text's labels: those whose probability reaches their threshold (possibly none)."""
    chosen = np.asarray(proba) >= np.asarray(thresholds)
    return [[labels[j] for j in np.flatnonzero(row)] for row in chosen]


def load_thresholds(run_dir: Path, labels: list[str] | None = None) -> np.ndarray:
    """The thresholds a run chose on its validation split (thresholds.json), in the task's label order (`labels`;
    None: the file's order). A run without the file, or one naming other labels, is a one-line UserError."""
    from nlpexp.errors import UserError

    path = Path(run_dir) / THRESHOLDS
    if not path.is_file():
        raise UserError(f"{run_dir} has no {THRESHOLDS}: it is not a finished task.multi_label=true run")
    saved = json.loads(path.read_text())
    if not isinstance(saved, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                              for v in saved.values()):
        raise UserError(f"{path} is not an object of label: threshold numbers")
    if labels is not None and set(saved) != set(labels):
        raise UserError(f"{path} has thresholds for {', '.join(saved)}, the run's labels are {', '.join(labels)}")
    return np.array([float(saved[name]) for name in (labels if labels is not None else saved)])


def joined(names) -> str:
    return ",".join(names)


def write_predictions(frame: pd.DataFrame, proba, labels: list[str], thresholds, path: Path) -> None:
    """text, gold and predicted label sets (joined by ","), and p_<label> per label."""
    table = pd.DataFrame({"text": list(frame["text"]),
                          **({"text_pair": list(frame["text_pair"])} if "text_pair" in frame else {}),
                          "gold": [joined(labels[i] for i in ids) for ids in frame["label"]],
                          "predicted": [joined(names) for names in predicted_sets(proba, labels, thresholds)]})
    for j, name in enumerate(labels):
        table[f"p_{name}"] = np.asarray(proba)[:, j].round(6)
    table.to_csv(path, index=False)


def plot_per_label_f1(f1: list[float], labels: list[str], path: Path, title: str = "") -> None:
    """A horizontal bar per label (its test F1), so the labels the model misses stand out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nlpexp.report.metrics import drawable

    shown, family, note = drawable(labels)
    with plt.rc_context({"font.family": family} if family else {}):
        fig, ax = plt.subplots(figsize=(6, 0.35 * len(labels) + 1.5))
        ax.barh(range(len(labels)), f1, color="C0")
        ax.set_yticks(range(len(labels)), shown)
        ax.invert_yaxis()  # the task's label order top to bottom
        ax.set_xlim(0, 1)
        ax.set_xlabel("F1")
        for i, value in enumerate(f1):
            ax.text(min(value + 0.01, 0.9), i, f"{value:.2f}", va="center", fontsize=8)
        ax.set_title(f"{title}\n{note}" if note else title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
