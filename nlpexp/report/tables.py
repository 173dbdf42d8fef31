"""Tables across runs: `nlpexp-report DIR` over a sweep (or all of outputs/), `nlpexp-report --compare A B` (two
runs on the same test items, paired), and the comparison an experiment file asks for at the end of its sweep.

A run is a folder holding Hydra's `.hydra/`. Its `metrics.json` says whether it finished
(`"status": "complete"`); a folder without one was killed or is still running ("incomplete").
Only complete runs enter means, standard deviations and the best-run table.

Runs are pooled into one mean ± std (and t-interval) over seeds only when they are comparable: the same task,
model, data (metrics.json's provenance: the sha256 of each file read, the commit of each hub dataset) and saved
config apart from the seed. A mean over runs on other data or with another learning rate is not a mean over seeds:
those runs get rows of their own, and the report says in one line which field kept them apart.

What the report shows of a run passes through nlpexp.secrets (a run written before a secret's shape was known is
redacted here too). Each report file is written to a temp name and renamed into place: a full disk leaves one line
naming the file (exit 2) and no truncated report.
"""
import argparse
import json
import math
import os
import re
import sys
from pathlib import Path

import pandas as pd
from hydra.experimental.callback import Callback

from nlpexp.errors import UserError
from nlpexp.report import stats
from nlpexp.report.html import LOWER_IS_BETTER, WriteError, with_intervals, write_atomic, write_html
from nlpexp.runs import RunFileError, load_run_file, nlpexp_run_error
from nlpexp.secrets import redact, redact_text

IGNORED_OVERRIDES = {"resume"}  # how a run was started, not what it computed
# top-level keys of the saved config (nlpexp/conf/config.yaml) that do not change what a run computes: runs that
# differ in them alone are still pooled over seeds
IGNORED_CONFIG = {"hydra", "resume", "tags", "verbose", "print_config", "dry_run", "logger"}
RESAMPLES = 1000    # paired-bootstrap resamples of --compare and of the report's paired comparisons
PAIRED_SEED = 0     # their seed: the same runs give the same intervals and p-values every time
MAX_PAIRS = 28      # the report compares at most this many pairs of configurations (8 configurations: all pairs)


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
            saved = _read_hydra(run, "config.yaml", dict)  # what the run computed with: the pooling rule reads it
        except (OSError, ValueError) as err:
            why = str(err).replace(str(run), "").lstrip("/")
            runs.append(redact({**summary, "overrides": [], "run_dir": str(run), "status": "unreadable",
                                "error": f"unreadable .hydra file: {why}"}))
            continue
        if saved is not None and "task" not in summary:
            summary.setdefault("task", (saved.get("task") or {}).get("name") if isinstance(saved.get("task"), dict)
                               else None)
            summary.setdefault("model", (saved.get("model") or {}).get("name")
                               if isinstance(saved.get("model"), dict) else None)
            tags = saved.get("tags")
            summary.setdefault("tags", [str(t) for t in tags] if isinstance(tags, list) else [])
        runs.append(redact({"overrides": overrides, **summary, "saved_config": saved,
                            "run_dir": str(run)}))  # where it is now
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
        metrics = list(dict.fromkeys(k for r in runs if r.get("status") == "complete" for k in metric_keys(r)))
    with_ci = {m for m in metrics if any(_interval(r, m) for r in runs if r.get("status") == "complete")}
    rows = []
    for run, over in zip(runs, given):
        try:
            name = str(Path(run["run_dir"]).resolve().relative_to(Path(root).resolve())) or "."
        except ValueError:
            name = run["run_dir"]
        row = {"run": name, "status": run.get("status", "incomplete")}
        row.update({k: over.get(k, "") for k in differing})
        values = (run.get("metrics") or {}) if row["status"] == "complete" else {}
        for m in metrics:
            row[m] = values.get(m, math.nan)
            if m in with_ci:  # the run's bootstrap interval (metrics.json intervals["<m>_ci"]), beside the value
                row[f"{m}_ci_lo"], row[f"{m}_ci_hi"] = (_interval(run, m) if values else None) or (math.nan,
                                                                                                   math.nan)
        row["wall_time_s"] = run.get("wall_time_s", math.nan) if row["status"] == "complete" else math.nan
        if row["status"] != "complete" and run.get("error"):
            row["error"] = str(run["error"])[:120]
        rows.append(row)
    table = pd.DataFrame(rows)
    if "error" not in table:
        table["error"] = ""
    table["error"] = table["error"].fillna("")
    return table, differing, metrics + ["wall_time_s"]


def metric_keys(run: dict) -> list[str]:
    """The metric names of a run: a `<metric>_ci` is an interval (metrics.json's `intervals`), never a metric."""
    found = run.get("metrics")
    return [k for k in found if not k.endswith("_ci")] if isinstance(found, dict) else []


def _interval(run: dict, metric: str) -> tuple[float, float] | None:
    found = run.get("intervals")
    ci = found.get(f"{metric}_ci") if isinstance(found, dict) else None
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci):
        return float(ci[0]), float(ci[1])
    return None


def _flat(tree: dict, prefix: str = "") -> dict:
    """{dotted key: value} of a nested config (trainer.lr: 2e-05)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def pool_signature(run: dict) -> dict:
    """What must agree for two runs to be pooled over seeds: task, model, data (metrics.json's
    provenance.data.sources, {file or hub id: sha256 or commit}; None for a run written before provenance) and
    the saved config (.hydra/config.yaml, flattened) without the seed and the keys of IGNORED_CONFIG (None: the
    run has no readable config)."""
    saved, config = run.get("saved_config"), None
    if isinstance(saved, dict):
        config = _flat({k: v for k, v in saved.items() if k not in IGNORED_CONFIG and k != "seed"})
        if "data.split_seed" in config and config["data.split_seed"] is None:
            config["data.split_seed"] = "${seed}"  # null splits by the run's seed: it follows the seed as ${seed} does
    provenance = run.get("provenance")
    data = provenance.get("data") if isinstance(provenance, dict) else None
    sources = data.get("sources") if isinstance(data, dict) else None
    return {"task": run.get("task"), "model": run.get("model"), "config": config,
            "sources": sources if isinstance(sources, dict) else None}


_ABSENT = object()


def _shown(value) -> str:
    """A config value or a hash as a report line shows it: hashes cut to 8 characters, long values to 60."""
    if value is _ABSENT:
        return "(absent)"
    text = f"{value:g}" if isinstance(value, float) else str(value)
    if re.fullmatch(r"[0-9a-f]{40,64}", text):
        return text[:8] + "…"
    return text if len(text) <= 60 else text[:59] + "…"


def _key_differences(a: dict, b: dict, keys) -> str:
    found = [k for k in keys if a.get(k, _ABSENT) != b.get(k, _ABSENT)]
    said = "; ".join(f"{k} {_shown(a.get(k, _ABSENT))} vs {_shown(b.get(k, _ABSENT))}" for k in found[:3])
    return said + (f" (and {len(found) - 3} more)" if len(found) > 3 else "") if found else ""


def pool_difference(a: dict, b: dict) -> str | None:
    """None when two runs' pool signatures agree; else which field differs, as the report says it
    (`data differs (provenance sha256 of data/x.csv: 3f2a1b2c… vs 9bc1d2e3…)`, `config differs: trainer.lr 0.0001
    vs 0.0003`). Data is compared by content (the hashes of what was read, whatever the path); between runs of which
    one has no provenance, by the data.* keys of the saved configs. What neither run records is not held against
    them (a folder without a config: the overrides alone decide, as before)."""
    for name in ("task", "model"):
        if a[name] != b[name]:
            return f"{name} differs: {a[name]} vs {b[name]}"
    sa, sb, ca, cb = a["sources"], b["sources"], a["config"], b["config"]
    if sa is not None and sb is not None:
        if sorted(map(str, sa.values())) != sorted(map(str, sb.values())):
            changed = [k for k in sa if k in sb and sa[k] != sb[k]]
            if changed:
                name, value = changed[0], str(sa[changed[0]])
                what = "sha256" if len(value) == 64 else "commit"
                return f"data differs (provenance {what} of {name}: {_shown(value)} vs {_shown(str(sb[name]))})"
            only_a = ", ".join(_shown(k) for k in sa if k not in sb) or "-"
            only_b = ", ".join(_shown(k) for k in sb if k not in sa) or "-"
            return f"data differs (files read: {only_a} vs {only_b})"
    elif ca is not None and cb is not None:
        said = _key_differences(ca, cb, [k for k in dict.fromkeys([*ca, *cb]) if k.startswith("data.")])
        if said:
            return f"data differs: {said}"
    if ca is not None and cb is not None:
        said = _key_differences(ca, cb, list(dict.fromkeys([*ca, *cb])))
        if said:
            return f"config differs: {said}"
    return None


def group_keys(differing: list[str]) -> list[str]:
    """The differing overrides that make a configuration: all but the seed and the keys that change nothing."""
    return [k for k in differing if k != "seed" and k.split(".")[0] not in IGNORED_CONFIG]


def _names(table: pd.DataFrame, rows: list[int], most: int = 6) -> str:
    names = [str(table.at[i, "run"]) for i in rows]
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def configurations(table: pd.DataFrame, differing: list[str], runs: list[dict]) -> tuple[list[dict], list[str]]:
    """The runs (table rows, in the order of `runs`) as configurations: the runs with the same overrides apart from
    the seed, split further where they are not comparable (pool_difference). Returns ([{"keys": {override: value},
    "rows": [table index of each complete run], "incomplete": how many runs not complete}], one line for each
    configuration split off another with the same overrides, saying which field differs)."""
    keys = group_keys(differing)
    signatures = [pool_signature(r) for r in runs]
    groups: dict[tuple, list[dict]] = {}
    done = table["status"] == "complete"
    for i in [*table.index[done], *table.index[~done]]:  # complete runs lead their configurations
        key = tuple(str(table.at[i, k]) for k in keys)
        parts = groups.setdefault(key, [])
        part = next((p for p in parts if pool_difference(signatures[p["lead"]], signatures[i]) is None), None)
        if part is None and (done[i] or not parts):
            part = {"keys": dict(zip(keys, key)), "lead": i, "rows": [], "incomplete": 0}
            parts.append(part)
        part = part or parts[0]  # a run that never finished counts against the first configuration of its overrides
        if done[i]:
            part["rows"].append(i)
        else:
            part["incomplete"] += 1
    notes = []
    for parts in groups.values():
        found = [p for p in parts if p["rows"]]
        for part in parts:
            part["label"] = " ".join(f"{k}={v}" for k, v in part["keys"].items() if str(v) != "") or "all runs"
        for part in found[1:]:
            why = pool_difference(signatures[found[0]["lead"]], signatures[part["lead"]])
            notes.append(f"{part['label']}: not pooled: {why}: runs {_names(table, found[0]['rows'])} vs "
                         f"{_names(table, part['rows'])}")
        if len(found) > 1:  # the same overrides: their runs tell the configurations apart
            for part in found:
                part["label"] += f" (runs {_names(table, part['rows'], 3)})"
    return [p for parts in groups.values() for p in parts], notes


def seed_summary(table: pd.DataFrame, differing: list[str], metrics: list[str],
                 configs: list[dict] | None = None) -> pd.DataFrame | None:
    """Mean ± std (sample std, ddof=1) and the t-interval of the mean over the seeds of each configuration
    (configurations(): comparable runs only; None: runs that differ only by seed, as their overrides say);
    complete runs only."""
    if "seed" not in differing:
        return None
    if configs is None:
        configs, _ = configurations(table, differing, [{} for _ in range(len(table))])
    rows = []
    for config in configs:
        if not config["rows"]:
            continue
        part = table.loc[config["rows"]]
        row = dict(config["keys"])
        row["n_seeds"] = len(part)
        row["seeds"] = ",".join(str(s) for s in part["seed"])
        row["runs"] = ",".join(str(r) for r in part["run"])
        row["not_complete"] = config["incomplete"]
        for m in metrics:
            values = pd.to_numeric(part[m], errors="coerce").dropna()
            row[f"{m}_mean"] = values.mean() if len(values) else math.nan
            row[f"{m}_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
            row[f"{m}_t_lo"], row[f"{m}_t_hi"] = stats.t_interval(values.tolist()) or (math.nan, math.nan)
        rows.append(row)
    return pd.DataFrame(rows) if rows else None


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


def _mean_std_text(summary: pd.DataFrame, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    """`0.6000 ± 0.1000 [0.352, 0.848]`: mean ± sample std [95 % t-interval of the mean] per metric."""
    shown = summary[keys + ["n_seeds", "seeds", "runs", "not_complete"]].copy()
    for m in metrics:
        cells = []
        for mean, std, lo, hi in zip(summary[f"{m}_mean"], summary[f"{m}_std"], summary[f"{m}_t_lo"],
                                     summary[f"{m}_t_hi"]):
            text = "" if math.isnan(mean) else f"{mean:.4f}" + ("" if math.isnan(std) else f" ± {std:.4f}")
            cells.append(text + ("" if math.isnan(lo) or not text else f" [{lo:.3f}, {hi:.3f}]"))
        shown[m] = cells
    return shown


def compare_table(rows: list[dict]) -> pd.DataFrame:
    """The paired comparison of two runs (stats.compare's rows) as shown by `--compare`, report.md and report.html:
    per metric A, B, A − B, its paired-bootstrap interval and p-value, and for an accuracy of right/wrong items
    McNemar's exact p with b (items only A gets right) and c (items only B gets right)."""
    def p(value: float) -> str:
        return f"{value:.3g}"

    level = f"{stats.LEVEL:.0%} interval"
    shown = []
    for row in rows:
        test = row.get("mcnemar")
        shown.append({"metric": row["metric"], "A": f"{row['a']:.4f}", "B": f"{row['b']:.4f}",
                      "A − B": f"{row['difference']:+.4f}", level: f"[{row['ci'][0]:+.4f}, {row['ci'][1]:+.4f}]",
                      "p (bootstrap)": p(row["p_value"]),
                      "McNemar p (b/c)": f"{p(test['p_value'])} (b={test['a_only']}, c={test['b_only']})"
                      if test else ""})
    return pd.DataFrame(shown, columns=["metric", "A", "B", "A − B", level, "p (bootstrap)", "McNemar p (b/c)"])


COMPARE_NOTE = ("paired bootstrap over the same test items ({resamples} resamples, seed {seed}): A − B on each "
                "resample, the percentile interval and the two-sided p-value of 'no difference'; McNemar's exact "
                "test on accuracies: b items only A gets right, c only B.")


def _load_items(run: Path, name: str) -> tuple[str, list]:
    """(items hash, blocks) of a run folder, or UserError saying in one line why it cannot be compared."""
    if not run.is_dir():
        raise UserError(f"--compare: {name} {run} is not a folder")
    why = nlpexp_run_error(run)
    if why:
        raise UserError(f"--compare: {name} {run} is not an nlpexp run ({why})")
    try:
        found = stats.load(run)
    except (OSError, ValueError) as err:
        raise UserError(f"--compare: {name}: {err}") from None
    if not found[1]:
        raise UserError(f"--compare: {name} {run}: its {stats.ITEMS_FILE} holds no per-item statistics")
    return found


def compare_runs(a: Path, b: Path, resamples: int = RESAMPLES, out: Path | None = None) -> dict:
    """`nlpexp-report --compare A B`: A against B on the same test items, per metric both report (compare_table);
    written to out/compare.md and out/compare.json when `out` is given. UserError (one line) when a folder is not a
    run, has no test_items.json, or the two runs were tested on different items (by the hash of their texts and
    gold labels, not by file name)."""
    a, b = Path(a), Path(b)
    (hash_a, blocks_a), (hash_b, blocks_b) = _load_items(a, "A"), _load_items(b, "B")
    n_a, n_b = blocks_a[0].n(), blocks_b[0].n()
    if hash_a != hash_b:
        raise UserError(f"the test items differ: A's {n_a} items (sha256 {hash_a[:8]}…) vs B's {n_b} "
                        f"({hash_b[:8]}…): a paired comparison needs the same test items")
    rows = stats.compare(blocks_a, blocks_b, resamples, PAIRED_SEED)
    if not rows:
        raise UserError(f"--compare: A and B report no metric in common (A: {', '.join(blocks_a[0].metrics)}; "
                        f"B: {', '.join(blocks_b[0].metrics)})")
    table = compare_table(rows)
    text = "\n".join([f"# {a.name} vs {b.name}", "", f"A: {a}", f"B: {b}",
                      f"{n_a} test items (sha256 {hash_a[:8]}…)", "", _fmt(table, numbers=False), "",
                      COMPARE_NOTE.format(resamples=resamples, seed=PAIRED_SEED)]) + "\n"
    if out is not None:
        out = Path(out)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise WriteError(out, err) from None
        payload = {"a": str(a), "b": str(b), "items_sha256": hash_a, "n": n_a, "resamples": resamples,
                   "seed": PAIRED_SEED, "level": stats.LEVEL, "rows": rows}
        write_atomic(out / "compare.json", lambda tmp: tmp.write_text(json.dumps(redact(payload), indent=2) + "\n",
                                                                      encoding="utf-8"))
        write_atomic(out / "compare.md", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return {"rows": rows, "table": table, "markdown": text}


def paired_comparisons(configs: list[dict], table: pd.DataFrame, runs: list[dict],
                       resamples: int = RESAMPLES) -> tuple[list[tuple[str, pd.DataFrame]], list[str]]:
    """For each pair of configurations with runs on the same test items (the same test_items_sha256 in
    metrics.json): compare_table of one run of each, the first run of the first configuration that has a partner
    (of the same seed where there is one). Returns ([(title naming the configurations and the runs, table)], lines
    about pairs left out). At most MAX_PAIRS pairs."""
    def tested(config: dict) -> list[tuple[int, str]]:
        return [(i, runs[i]["test_items_sha256"]) for i in config["rows"]
                if isinstance(runs[i].get("test_items_sha256"), str)
                and (Path(runs[i]["run_dir"]) / stats.ITEMS_FILE).is_file()]

    def partner(a: list, b: list) -> tuple[int, int] | None:
        for i, items in a:
            same = [j for j, other in b if other == items]
            if same:
                return i, next((j for j in same if runs[j].get("seed") == runs[i].get("seed")), same[0])
        return None

    found = [(c, tested(c)) for c in configs]
    found = [(c, t) for c, t in found if t]
    pairs = [(ca, cb, match) for x, (ca, ta) in enumerate(found) for cb, tb in found[x + 1:]
             if (match := partner(ta, tb))]
    notes = [f"{len(pairs) - MAX_PAIRS} more pairs of configurations share test items and are not compared here "
             "(nlpexp-report --compare RUN_A RUN_B compares any two)"] if len(pairs) > MAX_PAIRS else []
    loaded: dict[int, tuple] = {}
    sections = []
    for ca, cb, (i, j) in pairs[:MAX_PAIRS]:
        try:
            for k in (i, j):
                loaded[k] = loaded.get(k) or stats.load(Path(runs[k]["run_dir"]))
        except (OSError, ValueError) as err:
            notes.append(f"{ca['label']} vs {cb['label']}: not compared: {err}")
            continue
        (hash_a, blocks_a), (hash_b, blocks_b) = loaded[i], loaded[j]
        rows = stats.compare(blocks_a, blocks_b, resamples, PAIRED_SEED) if hash_a == hash_b and blocks_a \
            and blocks_b else []
        if not rows:
            notes.append(f"{ca['label']} vs {cb['label']}: not compared: runs {table.at[i, 'run']} and "
                         f"{table.at[j, 'run']} hold other test items or no metric in common in {stats.ITEMS_FILE}")
            continue
        sections.append((f"{ca['label']} vs {cb['label']}: run {table.at[i, 'run']} vs run {table.at[j, 'run']} "
                         f"({blocks_a[0].n()} test items, sha256 {hash_a[:8]}…)", compare_table(rows)))
    return sections, notes


def baseline_lines(runs: list[dict], table: pd.DataFrame) -> list[str]:
    """`<run>: <line>` for each published baseline a complete run's data matches (metrics.json baselines[*].line)."""
    lines = []
    for i, run in enumerate(runs):
        found = run.get("baselines") if run.get("status") == "complete" else None
        for baseline in found if isinstance(found, list) else []:
            if isinstance(baseline, dict) and baseline.get("line"):
                lines.append(f"{table.at[i, 'run']}: {baseline['line']}")
    return lines


def plot_report(table: pd.DataFrame, summary: pd.DataFrame | None, differing: list[str], metrics: list[str],
                path: Path) -> bool:
    """Bars of the headline metrics per configuration (mean with std error bars over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if summary is not None:
        keys = group_keys(differing)
        labels = [" ".join(f"{k}={row[k]}" for k in keys) or "all" for _, row in summary.iterrows()]
        if len(set(labels)) < len(labels):  # a configuration split by data or config: its runs tell them apart
            labels = [f"{label} ({row['runs']})" for label, (_, row) in zip(labels, summary.iterrows())]
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


def _fmt(table: pd.DataFrame, numbers: bool = True) -> str:
    """A markdown table; numbers=False: cells already formatted (`+0.0500`, `0.000999`) are shown as they are."""
    return table.to_markdown(index=False, floatfmt=".4f") if numbers else table.to_markdown(index=False,
                                                                                            disable_numparse=True)


def with_tags(runs: list[dict], tags: list[str] | None) -> list[dict]:
    """The runs that carry every one of `tags` (all runs when none are asked for)."""
    return [r for r in runs if set(tags or ()) <= set(r.get("tags") or ())]


def write_report(root: Path, out: Path | None = None, metrics: list[str] | None = None,
                 tags: list[str] | None = None, resamples: int = RESAMPLES) -> dict:
    """Collect the runs below root (those with every tag of `tags`); write report.csv / report.md / report.png /
    report.html (and report_seeds.csv). `resamples`: of the paired comparisons between configurations (0: none)."""
    root = Path(root)
    out = Path(out) if out else root
    runs = with_tags(collect_runs(root), tags)
    table, differing, columns = runs_table(runs, root, metrics)
    metric_cols = [c for c in columns if c != "wall_time_s"]
    configs, not_pooled = configurations(table, differing, runs)
    summary = seed_summary(table, differing, columns, configs)
    summary_text = _mean_std_text(summary, group_keys(differing), columns) if summary is not None else None
    not_pooled = not_pooled if summary is not None else []  # without seeds nothing was to be pooled
    paired, paired_notes = paired_comparisons(configs, table, runs, resamples) if resamples > 0 else ([], [])
    baselines = baseline_lines(runs, table)
    best = best_runs(table, differing, metric_cols)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WriteError(out, err) from None
    write_atomic(out / "report.csv", lambda tmp: table.to_csv(tmp, index=False))
    parts = [f"# Runs below {root}", "",
             f"{len(table)} runs: " + ", ".join(f"{n} {s}" for s, n in table["status"].value_counts().items()),
             "", _fmt(with_intervals(table).drop(columns=["error"]))]
    if any(c.endswith("_ci_lo") for c in table.columns):
        parts += ["", "Beside a value: its 95 % bootstrap interval over the test items (metrics.json intervals)."]
    if summary is not None:
        write_atomic(out / "report_seeds.csv", lambda tmp: summary.to_csv(tmp, index=False))
        parts += ["", "## Mean ± std over seeds (complete runs only, sample std) [95 % t-interval of the mean]", "",
                  _fmt(summary_text)]
        if not_pooled:
            parts += ["", "Runs with the same overrides kept apart (pooled only when task, model, data and config "
                      "apart from the seed agree):", "", *[f"- {line}" for line in not_pooled]]
    if paired or paired_notes:
        parts += ["", "## Paired comparisons (configurations on the same test items)", "",
                  COMPARE_NOTE.format(resamples=resamples, seed=PAIRED_SEED)]
        for title, frame in paired:
            parts += ["", f"### {title}", "", _fmt(frame, numbers=False)]
        parts += ["", *[f"- {line}" for line in paired_notes]] if paired_notes else []
    if baselines:
        parts += ["", "## Published baselines", "", *[f"- {line}" for line in baselines]]
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
    write_html(out, root, runs, table, differing, summary_text, best, metric_cols, cross, not_pooled=not_pooled,
               paired=paired, paired_notes=paired_notes, baselines=baselines,
               paired_note=COMPARE_NOTE.format(resamples=resamples, seed=PAIRED_SEED))
    return {"table": table, "summary": summary, "best": best, "markdown": text, "out": out,
            "not_pooled": not_pooled, "paired": paired}


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


def _refuse(message: str) -> None:
    print(f"nlpexp-report: error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="nlpexp-report", description=(
        "One table over every run below DIR (a sweep folder, or all of outputs/): the overrides that differ, "
        "final metrics with their bootstrap intervals, wall time, mean ± std and t-interval over the seeds of "
        "comparable runs, paired comparisons, the best run per metric, and a plot. --compare RUN_A RUN_B: two runs "
        "on the same test items, paired."))
    parser.add_argument("dir", type=Path, nargs="?")
    parser.add_argument("--metrics", help="comma-separated metric keys (default: every metric the runs report)")
    parser.add_argument("--out", type=Path, help="where to write report.* (default: DIR) or compare.md/.json")
    parser.add_argument("--tags", help="comma-separated tags: only the runs started with all of them (tags=[...])")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("RUN_A", "RUN_B"),
                        help="two run folders tested on the same items: A − B per metric, its paired-bootstrap "
                             "interval and p-value, McNemar's exact test for accuracies")
    parser.add_argument("--resamples", default=str(RESAMPLES),
                        help=f"paired-bootstrap resamples (default {RESAMPLES}; the report: 0 skips its paired "
                             "comparisons)")
    args = parser.parse_args(argv)
    try:
        resamples = int(args.resamples)
    except ValueError:
        resamples = -1
    if not 0 <= resamples <= 100_000 or (args.compare and resamples == 0):
        _refuse(f"--resamples {args.resamples}: a whole number from {1 if args.compare else 0} to 100000")
    if args.compare:
        if args.dir is not None:
            _refuse(f"give a folder of runs or --compare RUN_A RUN_B, not both ({args.dir})")
        try:
            result = compare_runs(*args.compare, resamples=resamples, out=args.out)
        except UserError as err:
            _refuse(str(err))
        print(result["markdown"])
        if args.out:
            print(f"comparison: {args.out / 'compare.md'}, {args.out / 'compare.json'}")
        return
    if args.dir is None:
        _refuse("give a folder of runs (nlpexp-report DIR) or two runs to compare (--compare RUN_A RUN_B)")
    if not args.dir.is_dir():
        _refuse(f"not a folder: {args.dir}")
    if not collect_runs(args.dir):
        _refuse(f"no runs below {args.dir} (no .hydra/ or metrics.json found)")
    metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else None
    tags = [t.strip() for t in args.tags.split(",") if t.strip()] if args.tags else None
    if metrics:  # a mistyped name would be a column of NaN
        reported = sorted({k for r in collect_runs(args.dir) for k in metric_keys(r)})
        unknown = [m for m in metrics if m not in reported]
        if unknown:
            _refuse(f"--metrics {','.join(unknown)}: no run below {args.dir} reports "
                    f"{'it' if len(unknown) == 1 else 'them'} (they report: {', '.join(reported) or 'no metrics'})")
    if tags and not with_tags(collect_runs(args.dir), tags):
        _refuse(f"no runs below {args.dir} carry the tags {', '.join(tags)}")
    try:
        result = write_report(args.dir, args.out, metrics, tags, resamples)
    except UserError as err:  # a report file that cannot be written (full disk): one line, no truncated file
        _refuse(str(err))
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
