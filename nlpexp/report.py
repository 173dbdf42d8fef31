"""Tables across runs: the comparison an experiment file asks for at the end of its sweep."""
import json
from pathlib import Path

import pandas as pd
from hydra.experimental.callback import Callback


def collect_runs(root: Path) -> list[dict]:
    """Every run below root: its metrics.json plus the overrides it was started with."""
    import yaml

    runs = []
    for path in sorted(Path(root).rglob("metrics.json")):
        if path.parent.name in ("eval", "predict") or "eval" in path.parts[-3:-1]:
            continue
        summary = json.loads(path.read_text())
        overrides_file = path.parent / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
        runs.append({"run_dir": str(path.parent), "overrides": overrides or [], **summary})
    return runs


def comparison_table(runs: list[dict], metrics: list[str]) -> pd.DataFrame:
    """One row per model with the chosen metrics; a `difference` row (first minus second) for two models."""
    rows = []
    for run in runs:
        row = {"model": run.get("model"), "status": run.get("status")}
        row.update({m: run.get("metrics", {}).get(m) for m in metrics})
        row["wall_time_s"] = run.get("wall_time_s")
        rows.append(row)
    table = pd.DataFrame(rows)
    done = table[table["status"] == "complete"]
    if len(done) == 2:
        diff = {"model": f"{done.iloc[0]['model']} - {done.iloc[1]['model']}", "status": ""}
        diff.update({m: done.iloc[0][m] - done.iloc[1][m] for m in metrics})
        table = pd.concat([table, pd.DataFrame([diff])], ignore_index=True)
    return table


def write_comparison(folder: Path, metrics: list[str]) -> pd.DataFrame:
    table = comparison_table(collect_runs(folder), metrics)
    table.to_csv(folder / "comparison.csv", index=False)
    (folder / "comparison.md").write_text(table.to_markdown(index=False, floatfmt=".4f") + "\n")
    print("\n" + table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"comparison: {folder / 'comparison.csv'}")
    return table


class CompareCallback(Callback):
    """Hydra callback: after an experiment's sweep, one table comparing its runs."""

    def __init__(self, metrics=("test_accuracy", "test_macro_f1")):
        self.metrics = list(metrics)

    def on_multirun_end(self, config, **kwargs) -> None:
        write_comparison(Path(config.hydra.sweep.dir), self.metrics)
