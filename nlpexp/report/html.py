"""report.html: the report of `nlpexp-report DIR` as one self-contained page (styles, a sorter and every image
inline: it can be mailed or attached as it is). The comparison table sorts by any column (click its header) and
shows each metric with its bootstrap interval; mean ± std and t-interval over seeds (comparable runs only, with a
line for the runs kept apart), paired comparisons of configurations on the same test items, published baselines,
the best run per metric, the sweep's plots and each run's own plots (history, confusion matrices, similarity
histograms ...), and a link to each run folder.

Every value read from the runs (folder and file names, statuses, tags, overrides, metric names) is escaped for
where it lands: text and attributes with html.escape, links built as relative URLs (each path segment
percent-quoted, a leading `./`) so that no folder name, `javascript:alert(1)` included, becomes a scheme."""
import base64
import html
import math
import os
import re
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from nlpexp.errors import UserError

LOWER_IS_BETTER = ("loss", "perplexity", "wall_time")  # metrics whose best run is the lowest

MAX_IMAGE = 2_000_000  # bytes: a larger image is linked, not embedded

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1280px;
color:#1d2430;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #e3e7ee;
padding-bottom:4px}h3{font-size:14px;margin:16px 0 4px}.muted{color:#6b7686}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;margin:6px 0;font-size:13px}
th,td{padding:4px 10px;border-bottom:1px solid #edf0f4;text-align:right;white-space:nowrap}
th{background:#f5f7fa;position:sticky;top:0}th.sort{cursor:pointer;user-select:none}
th.sort:after{content:" \\2195";color:#a0a9b6}th.asc:after{content:" \\2191";color:#1d2430}
th.desc:after{content:" \\2193";color:#1d2430}td.text,th.text{text-align:left}
tr:hover td{background:#f9fbfd}.scroll{overflow-x:auto;max-width:100%}
.complete{color:#17803d}.failed,.refused{color:#b42318}.incomplete{color:#b54708}
.best{font-weight:600;background:#eefbf3}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plots figure{margin:0;border:1px solid #e3e7ee;border-radius:6px;
padding:6px;background:#fff}.plots img{max-width:340px;display:block}
figcaption{font-size:12px;color:#6b7686;margin-top:4px}details{margin:6px 0}summary{cursor:pointer}
"""

# click a header: sort by that column (numbers as numbers, empty cells last), click again: the other way
SORTER = """
document.querySelectorAll('table.sortable').forEach(function(table){
  table.querySelectorAll('th').forEach(function(th, col){
    th.classList.add('sort');
    th.addEventListener('click', function(){
      var asc = !th.classList.contains('asc');
      table.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc');});
      th.classList.add(asc ? 'asc' : 'desc');
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      function key(row){var t = row.cells[col].getAttribute('data-v'); if (t === null) t = row.cells[col].textContent;
        var n = parseFloat(t); return t === '' ? null : (isNaN(n) ? t.toLowerCase() : n);}
      rows.sort(function(a, b){var x = key(a), y = key(b);
        if (x === null) return 1; if (y === null) return -1;
        if (typeof x !== typeof y) {x = String(x); y = String(y);}
        return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
// report.html#sort=test_accuracy (or #sort=-test_accuracy: descending) opens with the runs table sorted
var wanted = /sort=(-?)([^&]+)/.exec(location.hash);
if (wanted) document.querySelectorAll('table.sortable')[0].querySelectorAll('th').forEach(function(th){
  if (th.textContent === decodeURIComponent(wanted[2])) {th.click(); if (wanted[1]) th.click();}
});
"""


def href(relative: str, folder: bool = False) -> str:
    """A relative path as the value of an href attribute: percent-quoted segments (`:`, `%`, `#`, `?` included),
    `./` first (never a scheme, never protocol-relative), escaped for the attribute."""
    url = quote(Path(relative).as_posix(), safe="/")
    url = "./" if url == "." else url
    if not url.startswith(("./", "../")):
        url = "./" + url.lstrip("/")
    if folder and not url.endswith("/"):
        url += "/"
    return html.escape(url, quote=True)


class WriteError(UserError):
    """A report file that could not be written (a full disk, no permission): one line naming it."""

    def __init__(self, path: Path, err: OSError):
        super().__init__(f"cannot write {path}: {err.strerror or err}")


def write_atomic(path: Path, write) -> Path | None:
    """write(tmp) fills a temp file beside `path` (same suffix), renamed into place: a full disk leaves the earlier
    file, or none, never a truncated one (WriteError names `path`). write returning False: nothing to write."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        if write(tmp) is False:
            return None
        os.replace(tmp, path)
    except OSError as err:
        raise WriteError(path, err) from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    return path


def _image(path: Path, caption: str, link: str | None = None) -> str:
    data = path.read_bytes()
    if len(data) > MAX_IMAGE:
        return f'<figure><a href="{href(link or path.name)}">{html.escape(path.name)}</a> ' \
               f'<figcaption>{html.escape(caption)} (too large to embed)</figcaption></figure>'
    src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return f'<figure><img src="{src}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}' \
           '</figcaption></figure>'


def _cell(value, fmt: str = "{:.4f}") -> tuple[str, str]:
    """(shown text, sort value) of a table cell."""
    if value is None or isinstance(value, float) and math.isnan(value):
        return "", ""
    if isinstance(value, float):
        return fmt.format(value), repr(value)
    return str(value), str(value)


def _number(value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def interval_text(value, lo=math.nan, hi=math.nan) -> str:
    """`0.8278 [0.804, 0.851]`: a run's metric with its bootstrap interval ("" for no value)."""
    value, lo, hi = _number(value), _number(lo), _number(hi)
    if math.isnan(value):
        return ""
    return f"{value:.4f}" + ("" if math.isnan(lo) or math.isnan(hi) else f" [{lo:.3f}, {hi:.3f}]")


def with_intervals(table: pd.DataFrame) -> pd.DataFrame:
    """The runs table as report.md and report.html show it: a metric that has `<metric>_ci_lo/_hi` columns (as
    report.csv keeps them) becomes one cell `0.8278 [0.804, 0.851]`."""
    shown = table.copy()
    for low in [c for c in table.columns if str(c).endswith("_ci_lo")]:
        metric, high = low[:-len("_ci_lo")], low[:-len("_lo")] + "_hi"
        if metric in table.columns and high in table.columns:
            shown[metric] = [interval_text(v, lo, hi) for v, lo, hi in zip(table[metric], table[low], table[high])]
            shown = shown.drop(columns=[low, high])
    return shown


# a cell such as `0.8278 [0.804, 0.851]` or `0.6000 ± 0.1000 [0.352, 0.848]`: aligned as a number
WITH_INTERVAL = re.compile(r"[-+]?\d[\d.e+-]*( ± [\d.e+-]+)?( \[[^\]]*\])?")


def _numbers_with_intervals(column: pd.Series) -> bool:
    cells = [v for v in column if isinstance(v, str) and v]
    return bool(cells) and all(WITH_INTERVAL.fullmatch(v) for v in cells) and any(" [" in v or " ± " in v
                                                                                  for v in cells)


def table_html(frame: pd.DataFrame, *, links: dict | None = None, best: dict | None = None,
               sortable: bool = True) -> str:
    """A table; `links`: {row index: relative path of a folder} for the run column, `best`: {column: row index}
    highlighted."""
    links, best = links or {}, best or {}
    numeric = {c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c]) or _numbers_with_intervals(frame[c])}
    head = "".join(f'<th class="{"" if c in numeric else "text"}">{html.escape(str(c))}</th>' for c in frame.columns)
    rows = []
    for idx, row in frame.iterrows():
        cells = []
        for c in frame.columns:
            shown, key = _cell(row[c])
            classes = [] if c in numeric else ["text"]
            if c == "status" and re.fullmatch(r"[a-z_]+", shown):  # a status of ours, styled
                classes.append(shown)
            if best.get(c) == idx:
                classes.append("best")
            text = html.escape(shown)
            if c == "run" and idx in links:
                text = f'<a href="{href(links[idx], folder=True)}">{text}</a>'
            cells.append(f'<td class="{" ".join(classes)}" data-v="{html.escape(key)}">{text}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table class="{"sortable" if sortable else ""}"><thead><tr>{head}</tr></thead>' \
           f'<tbody>{"".join(rows)}</tbody></table></div>'


def _best_cells(table: pd.DataFrame, metrics: list[str]) -> dict:

    done = table[table["status"] == "complete"]
    out = {}
    for m in metrics:
        values = pd.to_numeric(done.get(m), errors="coerce") if m in done else None
        if values is not None and values.notna().any():
            out[m] = values.idxmin() if any(w in m for w in LOWER_IS_BETTER) else values.idxmax()
    return out


def run_plots(run_dir: Path, out: Path) -> list[str]:
    """The figures of each image the run wrote (its folder and one level below, e.g. eval/)."""
    images = sorted(Path(run_dir).glob("*.png")) + sorted(Path(run_dir).glob("*/*.png"))
    return [_image(p, str(p.relative_to(run_dir)), os.path.relpath(p, out)) for p in images
            if ".hydra" not in p.parts and "wandb" not in p.parts]


def _lines(lines) -> str:
    return "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>"


def write_html(out: Path, root: Path, runs: list[dict], table: pd.DataFrame, differing: list[str],
               summary_text: pd.DataFrame | None, best: pd.DataFrame, metric_cols: list[str],
               cross: pd.DataFrame | None, *, not_pooled=(), paired=(), paired_notes=(), paired_note: str = "",
               baselines=()) -> Path:
    """report.html in `out` (next to report.md, whose report.png and cross_eval_matrix.png it embeds).
    not_pooled: a line per configuration kept apart from others with its overrides; paired: [(title,
    tables.compare_table)] of configurations on the same test items (paired_notes: pairs left out); baselines:
    a line per published baseline a run matches."""
    out, root = Path(out), Path(root)
    by_name = {}
    for run in runs:
        try:
            by_name[str(Path(run["run_dir"]).resolve().relative_to(root.resolve())) or "."] = Path(run["run_dir"])
        except ValueError:
            by_name[run["run_dir"]] = Path(run["run_dir"])
    links = {idx: os.path.relpath(by_name.get(name, Path(name)), out) for idx, name in table["run"].items()}
    counts = ", ".join(f"{n} {s}" for s, n in table["status"].value_counts().items())
    shown = with_intervals(table)
    shown = shown.drop(columns=["error"]) if not table["error"].astype(bool).any() else shown
    parts = [f"<h1>Runs below {html.escape(str(root))}</h1>",
             f'<p class="muted">{len(table)} runs: {html.escape(counts)}. Click a column header to sort (or open '
             "the page as report.html#sort=&lt;column&gt;, #sort=-&lt;column&gt; for descending); the best complete "
             "run of each metric is highlighted; each run name opens its folder.</p>",
             "<h2>Runs</h2>", table_html(shown, links=links, best=_best_cells(table, metric_cols))]
    if any(str(c).endswith("_ci_lo") for c in table.columns):
        parts.insert(3, '<p class="muted">Beside a value: its 95 % bootstrap interval over the test items.</p>')
    if summary_text is not None:
        parts += ["<h2>Mean ± std over seeds</h2>",
                  '<p class="muted">complete runs only, sample standard deviation, [95 % t-interval of the mean]; '
                  "runs are pooled only when task, model, data and config apart from the seed agree</p>",
                  table_html(summary_text)]
        if not_pooled:
            parts += ['<p class="muted">Runs with the same overrides kept apart:</p>', _lines(not_pooled)]
    if paired or paired_notes:
        parts += ["<h2>Paired comparisons</h2>", f'<p class="muted">{html.escape(paired_note)}</p>']
        for title, frame in paired:
            parts += [f"<h3>{html.escape(title)}</h3>", table_html(frame, sortable=False)]
        if paired_notes:
            parts.append(_lines(paired_notes))
    if baselines:
        parts += ["<h2>Published baselines</h2>", _lines(baselines)]
    if not best.empty:
        parts += ["<h2>Best run per metric</h2>", table_html(best, sortable=False)]
    figures = [_image(out / name, caption) for name, caption in
               (("report.png", "headline metrics"), ("cross_eval_matrix.png", "cross-dataset accuracy"))
               if (out / name).exists()]
    if cross is not None:
        parts += ["<h2>Cross-dataset accuracy</h2>", '<p class="muted">rows: train set, columns: test set</p>',
                  table_html(cross.reset_index(), sortable=False)]
    if figures:
        parts += ["<h2>Plots</h2>", f'<div class="plots">{"".join(figures)}</div>']
    per_run = []
    for idx, name in table["run"].items():
        plots = run_plots(by_name.get(name, Path(name)), out)
        if plots:
            what = " ".join(f"{k}={table.at[idx, k]}" for k in differing)
            per_run.append(f'<details open><summary><a href="{href(links[idx], folder=True)}">{html.escape(name)}</a> '
                           f'{html.escape(what)} <span class="muted">({html.escape(str(table.at[idx, "status"]))})'
                           '</span></summary>'
                           f'<div class="plots">{"".join(plots)}</div></details>')
    if per_run:
        parts += ["<h2>Each run's plots</h2>", *per_run]
    page = ('<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            'content="width=device-width, initial-scale=1"><title>nlpexp report: ' + html.escape(root.name) +
            f"</title><style>{STYLE}</style></head><body>" + "\n".join(parts) +
            f"<script>{SORTER}</script></body></html>\n")
    return write_atomic(out / "report.html", lambda tmp: tmp.write_text(page, encoding="utf-8"))
