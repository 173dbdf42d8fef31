"""Tables across runs: `nlpexp-report DIR` over a sweep (or all of outputs/), and the comparison an
experiment file asks for at the end of its sweep.

A run is a folder holding Hydra's `.hydra/`. Its `metrics.json` says whether it finished
(`"status": "complete"`); a folder without one was killed or is still running ("incomplete").
Only complete runs enter means, standard deviations and the best-run table.

What the report shows of a run passes through nlpexp.secrets (a run written before a secret's shape was known is
redacted here too). Each report file is written to a temp name and renamed into place: a full disk leaves one line
naming the file (exit 2) and no truncated report.
"""
import argparse
import math
import os
import sys
from pathlib import Path

import pandas as pd
from hydra.experimental.callback import Callback

from nlpexp.errors import UserError
from nlpexp.report.html import LOWER_IS_BETTER, WriteError, write_atomic, write_html
from nlpexp.runs import RunFileError, load_run_file
from nlpexp.secrets import redact, redact_text

IGNORED_OVERRIDES = {"resume"}  # how a run was started, not what it computed


def _read_hydra(run: Path, name: str, kind: type):
    """run/.hydra/<name> (None: there is none). A run folder is data: a file that is a link, a FIFO, too large,
    not YAML, of another shape, or with a !!python tag (yaml.safe_load refuses it) raises RunFileError."""
    path = run / ".hydra" / name
    if not os.path.lexists(path):
        return None
    found = load_run_file(path)
    found = kind() if found is None else found
    if not isinstance(found, kind) or (kind is list and not all(isinstance(o, str) for o in found)):
        raise RunFileError(f"{path} is not a {'list of overrides' if kind is list else 'mapping'}")
    return found


def _read_overrides(run: Path) -> list[str]:
    try:
        return _read_hydra(run, "overrides.yaml", list) or []
    except (OSError, ValueError):
        return []


def collect_runs(root: Path) -> list[dict]:
    """Every run below root: its metrics.json (or status "incomplete") plus the overrides it was started with; a
    run whose .hydra/ files cannot be read shows as "unreadable" (never averaged in)."""
    root = Path(root)
    folders = {p.parent for p in root.rglob("metrics.json")} | {p.parent for p in root.rglob(".hydra")}
    if (root / ".hydra").is_dir() or (root / "metrics.json").exists():
        folders.add(root)
    runs = []
    for run in sorted(folders):
        if run.parent.name in ("eval", "predict"):  # eval/predict of a saved run: not a training run
            continue
        path = run / "metrics.json"
        try:  # a link, a FIFO (it would wait forever), 100000 nested [ (RecursionError): unreadable
            summary = load_run_file(path) if os.path.lexists(path) else {"status": "incomplete"}
        except (OSError, ValueError):
            summary = None
        if not isinstance(summary, dict):  # torn, or not a JSON object (a list, a number)
            summary = {"status": "incomplete", "error": "unreadable metrics.json"}
        try:
            overrides = _read_hydra(run, "overrides.yaml", list) or []
            saved = _read_hydra(run, "config.yaml", dict) if "task" not in summary else None
        except (OSError, ValueError) as err:
            why = str(err).replace(str(run), "").lstrip("/")
            runs.append(redact({**summary, "overrides": [], "run_dir": str(run), "status": "unreadable",
                                "error": f"unreadable .hydra file: {why}"}))
            continue
        if saved is not None:
            summary.setdefault("task", (saved.get("task") or {}).get("name") if isinstance(saved.get("task"), dict)
                               else None)
            summary.setdefault("model", (saved.get("model") or {}).get("name")
                               if isinstance(saved.get("model"), dict) else None)
            tags = saved.get("tags")
            summary.setdefault("tags", [str(t) for t in tags] if isinstance(tags, list) else [])
        runs.append(redact({"overrides": overrides, **summary, "run_dir": str(run)}))  # where it is now
    return runs


def _override_dict(overrides: list[str]) -> dict[str, str]:
    out = {}
    for item in overrides:
        key, _, value = item.partition("=")
        key = key.lstrip("+~")
        if key not in IGNORED_OVERRIDES and not key.startswith("hydra."):
            out[key] = value
    return out


def runs_table(runs: list[dict], root: Path, metrics: list[str] | None = None) -> tuple[pd.DataFrame, list, list]:
    """One row per run: the overrides that differ between runs, status, final metrics, wall time.

    Returns (table, differing override keys, metric columns)."""
    given = [_override_dict(r.get("overrides", [])) for r in runs]
    keys = list(dict.fromkeys(k for g in given for k in g))
    differing = [k for k in keys if len({g.get(k, "") for g in given}) > 1]
    if metrics is None:
        metrics = list(dict.fromkeys(k for r in runs if r.get("status") == "complete"
                                     for k in (r.get("metrics") or {})))
    rows = []
    for run, over in zip(runs, given):
        try:
            name = str(Path(run["run_dir"]).resolve().relative_to(Path(root).resolve())) or "."
        except ValueError:
            name = run["run_dir"]
        row = {"run": name, "status": run.get("status", "incomplete")}
        row.update({k: over.get(k, "") for k in differing})
        values = (run.get("metrics") or {}) if row["status"] == "complete" else {}
        row.update({m: values.get(m, math.nan) for m in metrics})
        row["wall_time_s"] = run.get("wall_time_s", math.nan) if row["status"] == "complete" else math.nan
        if row["status"] != "complete" and run.get("error"):
            row["error"] = str(run["error"])[:120]
        rows.append(row)
    table = pd.DataFrame(rows)
    if "error" not in table:
        table["error"] = ""
    table["error"] = table["error"].fillna("")
    return table, differing, metrics + ["wall_time_s"]


def seed_summary(table: pd.DataFrame, differing: list[str], metrics: list[str]) -> pd.DataFrame | None:
    """Mean ± std (sample std, ddof=1) over seeds for runs that differ only by seed; complete runs only."""
    if "seed" not in differing:
        return None
    group_keys = [k for k in differing if k != "seed"]
    done = table[table["status"] == "complete"]
    if done.empty:
        return None
    grouped = done.groupby(group_keys, sort=False, dropna=False) if group_keys else [((), done)]
    rows = []
    for key, part in grouped:
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(group_keys, key))
        row["n_seeds"] = len(part)
        row["seeds"] = ",".join(str(s) for s in part["seed"])
        not_done = table[(table["status"] != "complete")]
        for k, v in zip(group_keys, key):
            not_done = not_done[not_done[k] == v]
        row["not_complete"] = len(not_done)
        for m in metrics:
            values = pd.to_numeric(part[m], errors="coerce").dropna()
            row[f"{m}_mean"] = values.mean() if len(values) else math.nan
            row[f"{m}_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def best_runs(table: pd.DataFrame, differing: list[str], metrics: list[str]) -> pd.DataFrame:
    """The best complete run for each metric (lowest for losses and times, highest otherwise)."""
    done = table[table["status"] == "complete"]
    rows = []
    for m in metrics:
        values = pd.to_numeric(done[m], errors="coerce")
        if values.notna().sum() == 0:
            continue
        lower = any(word in m for word in LOWER_IS_BETTER)
        idx = values.idxmin() if lower else values.idxmax()
        best = done.loc[idx]
        rows.append({"metric": m, "best": "min" if lower else "max", "value": values[idx], "run": best["run"],
                     **{k: best[k] for k in differing}})
    return pd.DataFrame(rows)


def _mean_std_text(summary: pd.DataFrame, group_keys: list[str], metrics: list[str]) -> pd.DataFrame:
    shown = summary[group_keys + ["n_seeds", "seeds", "not_complete"]].copy()
    for m in metrics:
        mean, std = summary[f"{m}_mean"], summary[f"{m}_std"]
        shown[m] = [("" if math.isnan(a) else f"{a:.4f}" + ("" if math.isnan(b) else f" ± {b:.4f}"))
                    for a, b in zip(mean, std)]
    return shown


def plot_report(table: pd.DataFrame, summary: pd.DataFrame | None, differing: list[str], metrics: list[str],
                path: Path) -> bool:
    """Bars of the headline metrics per configuration (mean with std error bars over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if summary is not None:
        group_keys = [k for k in differing if k != "seed"]
        labels = [" ".join(f"{k}={row[k]}" for k in group_keys) or "all" for _, row in summary.iterrows()]
        means = {m: summary[f"{m}_mean"].to_numpy(float) for m in metrics}
        stds = {m: np.nan_to_num(summary[f"{m}_std"].to_numpy(float)) for m in metrics}
    else:
        done = table[table["status"] == "complete"]
        labels = [" ".join(f"{k}={row[k]}" for k in differing) or row["run"] for _, row in done.iterrows()]
        means = {m: pd.to_numeric(done[m], errors="coerce").to_numpy(float) for m in metrics}
        stds = {m: np.zeros(len(done)) for m in metrics}
    if not labels or not metrics:
        return False
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(labels) * len(metrics) + 2), 4.2))
    width = 0.8 / len(metrics)
    x = np.arange(len(labels))
    for i, m in enumerate(metrics):
        ax.bar(x + i * width - 0.4 + width / 2, means[m], width, yerr=stds[m], capsize=3, label=m)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("mean ± std over seeds" if summary is not None else "final metrics per run")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _plot_metrics(runs: list[dict], metrics: list[str]) -> list[str]:
    """The sweep objective (e.g. val_accuracy) and its test_ counterpart when present."""
    objective = next((r.get("objective") for r in runs if r.get("status") == "complete" and r.get("objective")), None)
    chosen = [objective] if objective in metrics else metrics[:1]
    if chosen and chosen[0].startswith("val_") and "test_" + chosen[0][4:] in metrics:
        chosen.append("test_" + chosen[0][4:])
    return [m for m in chosen if m != "wall_time_s"]


def _fmt(table: pd.DataFrame) -> str:
    return table.to_markdown(index=False, floatfmt=".4f")


def with_tags(runs: list[dict], tags: list[str] | None) -> list[dict]:
    """The runs that carry every one of `tags` (all runs when none are asked for)."""
    return [r for r in runs if set(tags or ()) <= set(r.get("tags") or ())]


def write_report(root: Path, out: Path | None = None, metrics: list[str] | None = None,
                 tags: list[str] | None = None) -> dict:
    """Collect the runs below root (those with every tag of `tags`); write report.csv / report.md / report.png /
    report.html (and report_seeds.csv)."""
    root = Path(root)
    out = Path(out) if out else root
    runs = with_tags(collect_runs(root), tags)
    table, differing, columns = runs_table(runs, root, metrics)
    metric_cols = [c for c in columns if c != "wall_time_s"]
    summary = seed_summary(table, differing, columns)
    summary_text = _mean_std_text(summary, [k for k in differing if k != "seed"], columns) \
        if summary is not None else None
    best = best_runs(table, differing, metric_cols)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WriteError(out, err) from None
    write_atomic(out / "report.csv", lambda tmp: table.to_csv(tmp, index=False))
    parts = [f"# Runs below {root}", "",
             f"{len(table)} runs: " + ", ".join(f"{n} {s}" for s, n in table["status"].value_counts().items()),
             "", _fmt(table.drop(columns=["error"]))]
    if summary is not None:
        write_atomic(out / "report_seeds.csv", lambda tmp: summary.to_csv(tmp, index=False))
        parts += ["", "## Mean ± std over seeds (complete runs only, sample std)", "", _fmt(summary_text)]
    if not best.empty:
        parts += ["", "## Best run per metric", "", _fmt(best)]
    for title, text in optuna_best(root):
        parts += ["", f"## {title}", "", "```", text, "```"]
    cross = cross_eval_matrix(runs)
    if cross is not None:
        from nlpexp.report.metrics import plot_accuracy_matrix

        write_atomic(out / "cross_eval_matrix.csv", lambda tmp: cross.to_csv(tmp))
        write_atomic(out / "cross_eval_matrix.png", lambda tmp: plot_accuracy_matrix(cross, tmp))
        parts += ["", "## Cross-dataset accuracy (rows: train set, columns: test set)", "",
                  _fmt(cross.reset_index()), "", "![cross-dataset](cross_eval_matrix.png)"]
    failed = table[table["status"] != "complete"]
    if not failed.empty:
        parts += ["", "## Not complete (never averaged in)", "", _fmt(failed[["run", "status", "error"]])]
    plotted = write_atomic(out / "report.png", lambda tmp: plot_report(table, summary, differing,
                                                                      _plot_metrics(runs, metric_cols), tmp))
    if plotted:
        parts += ["", "![report](report.png)"]
    text = "\n".join(parts) + "\n"
    write_atomic(out / "report.md", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    write_html(out, root, runs, table, differing, summary_text, best, metric_cols, cross)
    return {"table": table, "summary": summary, "best": best, "markdown": text, "out": out}


def optuna_best(root: Path) -> list[tuple[str, str]]:
    """(title, optimization_results.yaml text) per Optuna study below root. A study fed by several sweepers (the
    cluster recipe: worker_k/ folders) has one file per sweeper, each the study's best when that sweeper ended:
    the best of them by the study's direction (from the sweep's saved Hydra config)."""
    def read(path: Path) -> dict:  # written by Hydra, but data: unreadable (link, FIFO, !!python tag) reads as {}
        try:
            found = load_run_file(path)
        except (OSError, ValueError):
            return {}
        return found if isinstance(found, dict) else {}

    def sweeper_of(sweep: Path) -> dict:  # hydra.sweeper of the sweep (submitit writes no multirun.yaml)
        for saved in [sweep / "multirun.yaml", *sorted(sweep.glob("*/.hydra/hydra.yaml"))]:
            if saved.exists():
                found = read(saved)
                hydra = found.get("hydra", found)
                sweeper = hydra.get("sweeper") if isinstance(hydra, dict) else None
                return sweeper if isinstance(sweeper, dict) else {}
        return {}

    studies: dict = {}
    for path in sorted(Path(root).rglob("optimization_results.yaml")):
        results = read(path)
        if not results:  # unreadable: no best trial to show
            continue
        sweeper = sweeper_of(path.parent)
        key = (str(sweeper.get("storage")) if sweeper.get("storage") else str(path.parent), sweeper.get("study_name"))
        studies.setdefault(key, []).append((path, results, str(sweeper.get("direction", "maximize"))))
    found = []
    for (_, name), files in studies.items():
        sign = -1 if "minimize" in files[0][2] else 1
        scored = [f for f in files if isinstance(f[1].get("best_value"), (int, float))] or files
        path, _, _ = max(scored, key=lambda f: sign * float(f[1].get("best_value", 0) or 0))
        where = path.parent.relative_to(root) if path.parent != Path(root) else None
        said = [f"study {name}"] if name else []
        said += [f"best of {len(files)} sweepers: {where}"] if len(files) > 1 else [str(where)] if where else []
        found.append(("Optuna best trial" + (f" ({', '.join(said)})" if said else ""),
                      redact_text(path.read_text(encoding="utf-8").strip())))  # read (and found regular) above
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="nlpexp-report", description=(
        "One table over every run below DIR (a sweep folder, or all of outputs/): the overrides that differ, "
        "final metrics, wall time, mean ± std over seeds, the best run per metric, and a plot."))
    parser.add_argument("dir", type=Path)
    parser.add_argument("--metrics", help="comma-separated metric keys (default: every metric the runs report)")
    parser.add_argument("--out", type=Path, help="where to write report.* (default: DIR)")
    parser.add_argument("--tags", help="comma-separated tags: only the runs started with all of them (tags=[...])")
    args = parser.parse_args(argv)
    if not args.dir.is_dir():
        print(f"nlpexp-report: error: not a folder: {args.dir}", file=sys.stderr)
        sys.exit(2)
    if not collect_runs(args.dir):
        print(f"nlpexp-report: error: no runs below {args.dir} (no .hydra/ or metrics.json found)", file=sys.stderr)
        sys.exit(2)
    metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else None
    tags = [t.strip() for t in args.tags.split(",") if t.strip()] if args.tags else None
    if metrics:  # a mistyped name would be a column of NaN
        reported = sorted({k for r in collect_runs(args.dir) for k in (r.get("metrics") or {})})
        unknown = [m for m in metrics if m not in reported]
        if unknown:
            print(f"nlpexp-report: error: --metrics {','.join(unknown)}: no run below {args.dir} reports "
                  f"{'it' if len(unknown) == 1 else 'them'} (they report: {', '.join(reported) or 'no metrics'})",
                  file=sys.stderr)
            sys.exit(2)
    if tags and not with_tags(collect_runs(args.dir), tags):
        print(f"nlpexp-report: error: no runs below {args.dir} carry the tags {', '.join(tags)}", file=sys.stderr)
        sys.exit(2)
    try:
        result = write_report(args.dir, args.out, metrics, tags)
    except UserError as err:  # a report file that cannot be written (full disk): one line, no truncated file
        print(f"nlpexp-report: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(result["markdown"].replace("![report](report.png)", ""))
    out = result["out"]
    print(f"report: {out / 'report.html'} (open it in a browser), {out / 'report.md'}, {out / 'report.csv'}"
          + (f", {out / 'report.png'}" if (out / "report.png").exists() else ""))


def comparison_table(runs: list[dict], metrics: list[str]) -> pd.DataFrame:
    """One row per model with the chosen metrics; a `difference` row (first minus second) for two models."""
    rows = []
    for run in runs:
        row = {"model": run.get("model"), "status": run.get("status")}
        row.update({m: (run.get("metrics") or {}).get(m) for m in metrics})
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
    write_atomic(folder / "comparison.csv", lambda tmp: table.to_csv(tmp, index=False))
    write_atomic(folder / "comparison.md",
                 lambda tmp: tmp.write_text(table.to_markdown(index=False, floatfmt=".4f") + "\n", encoding="utf-8"))
    print("\n" + table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"comparison: {folder / 'comparison.csv'}")
    return table


class CompareCallback(Callback):
    """Hydra callback: after an experiment's sweep, one table comparing its runs."""

    def __init__(self, metrics=("test_accuracy", "test_macro_f1")):
        self.metrics = list(metrics)

    def on_multirun_end(self, config, **kwargs) -> None:
        write_comparison(Path(config.hydra.sweep.dir), self.metrics)


def cross_eval_matrix(runs: list[dict]) -> pd.DataFrame | None:
    """The train x test accuracy matrix from the complete runs that evaluated on other datasets (eval_on=[...]);
    a training set run more than once (seeds, models) gets its mean."""
    rows = [r["cross_eval"] for r in runs if r.get("status") == "complete" and r.get("cross_eval")]
    if not rows:
        return None
    frame = pd.DataFrame([{"train": r["train"], **r["accuracy"]} for r in rows])
    return frame.groupby("train", sort=True).mean().round(4)


if __name__ == "__main__":
    main()
