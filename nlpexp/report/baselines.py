"""Published scores as data, and a run's gap to them.

Each wing that has published numbers keeps them beside its code, in nlpexp/tasks/<wing>/baselines.yaml: a list of
entries {name, model, citation, source, dataset {name, subset, title}, split, metrics {metrics.json key: value},
note}. A run whose data the reader recognised (nlpexp/inputs/known.py: summary["dataset"]) is set beside every
entry for the same dataset and subset: its value, the published one, the gap (run - published) and, from the run's
bootstrap interval, the gap's interval. The published number is taken as exact: the interval is the run's noise
only, and a published test set is rarely the run's test split (the entry's `split` says which it was).
"""
from functools import lru_cache
from pathlib import Path

import yaml

TASKS = Path(__file__).resolve().parent.parent / "tasks"


@lru_cache(maxsize=None)
def load(root: Path = TASKS) -> tuple:
    """Every wing's entries, in wing order, each with `wing` added (the folder its file is in)."""
    entries = []
    for path in sorted(root.glob("*/baselines.yaml")):
        listed = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("baselines") or []
        entries += [{**entry, "wing": path.parent.name} for entry in listed]
    return tuple(entries)


def run_dataset(summary: dict) -> dict | None:
    """The public dataset a run read: summary["dataset"] (the wing's result), else the provenance record's."""
    return summary.get("dataset") or ((summary.get("provenance") or {}).get("data") or {}).get("dataset")


def matching(dataset: dict | None, entries=None) -> list[dict]:
    """The entries for this dataset and subset (none for one's own data, nor for a file named like a public one
    whose content differs)."""
    if not dataset or dataset.get("name") in (None, "own") or dataset.get("differs"):
        return []
    return [entry for entry in (load() if entries is None else entries)
            if (entry["dataset"]["name"], entry["dataset"].get("subset")) == (dataset["name"], dataset.get("subset"))]


def gaps(summary: dict, entries=None) -> list[dict]:
    """One row per matching entry and metric the run has: {name, citation, source, metric, published, run, gap,
    gap_ci ([lo, hi] from summary["intervals"]["<metric>_ci"], None without one), line}."""
    metrics, intervals = summary.get("metrics") or {}, summary.get("intervals") or {}
    rows = []
    for entry in matching(run_dataset(summary), entries):
        for metric, published in entry["metrics"].items():
            value = metrics.get(metric)
            if not isinstance(value, (int, float)):
                continue
            ci = intervals.get(f"{metric}_ci")
            gap_ci = [round(ci[0] - published, 6), round(ci[1] - published, 6)] if ci else None
            rows.append({"name": entry["name"], "citation": entry["citation"], "source": entry["source"],
                         "metric": metric, "published": published, "run": value,
                         "gap": round(value - published, 6), "gap_ci": gap_ci,
                         "line": line(entry, metric, published, value, ci, gap_ci)})
    return rows


def line(entry: dict, metric: str, published: float, value: float, ci, gap_ci) -> str:
    """FinBERT (Araci 2019), PhraseBank 50% agreement: accuracy 0.86; this run 0.7107 [0.683, 0.738], gap -0.149
    [-0.177, -0.122]"""
    def interval(pair):
        return f" [{pair[0]:.3f}, {pair[1]:.3f}]" if pair else ""

    title = entry["dataset"].get("title") or f"{entry['dataset']['name']} {entry['dataset'].get('subset', '')}"
    shown = metric.removeprefix("test_").replace("_", " ")
    return (f"{entry['name']}, {title.strip()}: {shown} {published:g}; this run {value:.4f}{interval(ci)}, "
            f"gap {value - published:+.3f}{interval(gap_ci)}")
