"""How sure a run's test metrics are, and whether two runs differ by more than their noise (plain NumPy/SciPy).

Every headline metric is a function of sums over the test items of per-item statistics (a Block): the confusion
cell of each text, its tp/fp/fn per label, its BLEU n-gram counts, its share of the distinct n-grams, its summed
loss and tokens. A bootstrap resample of the items is then one row of draw counts W (resamples x items), and the
metric of every resample comes from the matrix product W @ statistics: 1,000 resamples of 2,000 items take
milliseconds (bench/bootstrap.py). Two runs on the same items are compared on the same resamples (paired).

The blocks of a run are saved in its folder (test_items.json) with a hash of the test items (texts and gold), so
`nlpexp-report --compare A B` can pair two runs later, and refuses two runs whose items differ.
"""
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ITEMS_FILE = "test_items.json"
LEVEL = 0.95
CHUNK = 4_000_000  # draw counts held at once (resamples x items): 32 MB


@dataclass
class Block:
    """Per-item statistics of one family of metrics: `kind` says how sums of `data` become each metric.

    confusion: data {"k": K, "codes": gold * K + predicted}; statistics accuracy, macro_f1, weighted_precision,
               weighted_recall (scikit-learn's definitions over the K labels, zero_division=0).
    multilabel: data {"gold": (n, L) 0/1, "pred": (n, L) 0/1}; micro_f1, macro_f1, subset_accuracy (= accuracy),
               weighted_precision, weighted_recall.
    mean:      data {"values": (n,)}; mean (0/1 values: a proportion, McNemar's test applies).
    ratio:     data {"num": (n,), "den": (n,)}; ratio (sum num / sum den), exp_ratio (perplexity from summed
               per-item losses and token counts).
    bleu:      data {"stats": (n, 2 + 2 * 4)} sacrebleu's per-sentence [sys_len, ref_len, correct_1..4,
               total_1..4]; bleu_1, bleu_2, bleu_4 (sacrebleu's corpus BLEU of that order, on a 0-1 scale).
    `metrics` maps a metrics.json key (test_accuracy) to the statistic of the kind it is (accuracy)."""
    kind: str
    data: dict
    metrics: dict = field(default_factory=dict)

    def columns(self) -> np.ndarray:
        """(n items, d) float64: what one item adds to the sums."""
        d = self.data
        if self.kind == "confusion":
            k, codes = int(d["k"]), np.asarray(d["codes"], dtype=np.int64)
            out = np.zeros((len(codes), k * k))
            out[np.arange(len(codes)), codes] = 1.0
            return out
        if self.kind == "multilabel":
            gold, pred = np.asarray(d["gold"], dtype=bool), np.asarray(d["pred"], dtype=bool)
            exact = (gold == pred).all(axis=1, keepdims=True)
            return np.hstack([gold & pred, ~gold & pred, gold & ~pred, exact]).astype(np.float64)
        if self.kind == "mean":
            return np.asarray(d["values"], dtype=np.float64).reshape(-1, 1)
        if self.kind == "ratio":
            return np.column_stack([np.asarray(d["num"], dtype=np.float64), np.asarray(d["den"], dtype=np.float64)])
        if self.kind == "bleu":
            return np.asarray(d["stats"], dtype=np.float64).reshape(-1, 2 + 2 * 4)
        raise ValueError(f"unknown block kind {self.kind!r}")

    def n(self) -> int:
        return len(self.columns())

    def values(self, sums: np.ndarray, n: np.ndarray) -> dict[str, np.ndarray]:
        """{metrics.json key: (resamples,) values} from the summed columns (resamples, d) of resamples of n items."""
        stat = STATISTICS[self.kind]
        return {key: stat(self, sums, n, name) for key, name in self.metrics.items()}

    def correct(self) -> np.ndarray | None:
        """Per item 0/1 right or wrong where the block's accuracy is a proportion (McNemar's test), else None."""
        if self.kind == "confusion":
            codes, k = np.asarray(self.data["codes"]), int(self.data["k"])
            return (codes // k == codes % k).astype(int)
        if self.kind == "multilabel":
            return self.columns()[:, -1].astype(int)
        values = np.asarray(self.data.get("values", []))
        if self.kind == "mean" and len(values) and np.isin(values, (0, 1)).all():
            return values.astype(int)
        return None


def _safe(num, den) -> np.ndarray:
    num, den = np.broadcast_arrays(np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64))
    out = np.zeros(num.shape)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _confusion(block: Block, sums, n, name):
    k = int(block.data["k"])
    cm = sums.reshape(len(sums), k, k)  # [resample, gold, predicted]
    tp, gold, pred = np.diagonal(cm, axis1=1, axis2=2), cm.sum(axis=2), cm.sum(axis=1)
    if name == "accuracy":
        return tp.sum(axis=1) / n
    precision, recall = _safe(tp, pred), _safe(tp, gold)
    if name == "macro_f1":
        return _safe(2 * precision * recall, precision + recall).mean(axis=1)
    weights = gold / n[:, None]
    return ((precision if name == "weighted_precision" else recall) * weights).sum(axis=1)


def _multilabel(block: Block, sums, n, name):
    labels = (sums.shape[1] - 1) // 3
    tp, fp, fn = sums[:, :labels], sums[:, labels:2 * labels], sums[:, 2 * labels:3 * labels]
    if name in ("subset_accuracy", "accuracy"):
        return sums[:, -1] / n
    if name == "micro_f1":
        return _safe(2 * tp.sum(axis=1), (2 * tp + fp + fn).sum(axis=1))
    if name == "macro_f1":
        return _safe(2 * tp, 2 * tp + fp + fn).mean(axis=1)
    support = tp + fn
    score = _safe(tp, tp + fp) if name == "weighted_precision" else _safe(tp, support)
    return _safe((score * support).sum(axis=1), support.sum(axis=1))


def _bleu(block: Block, sums, n, name):
    from sacrebleu.metrics.bleu import BLEU

    order = int(name.rsplit("_", 1)[1])
    out = np.empty(len(sums))
    for i, row in enumerate(sums):
        correct, total = row[2:2 + order].astype(int).tolist(), row[6:6 + order].astype(int).tolist()
        out[i] = BLEU.compute_bleu(correct, total, int(row[0]), int(row[1]), smooth_method="exp",  # BLEU()'s, as
                                   max_ngram_order=order).score / 100                          # corpus_bleu's
    return out


STATISTICS = {
    "confusion": _confusion,
    "multilabel": _multilabel,
    "mean": lambda block, sums, n, name: sums[:, 0] / n,
    "ratio": lambda block, sums, n, name: (np.exp(np.minimum(_safe(sums[:, 0], sums[:, 1]), 700.0))
                                            if name == "exp_ratio" else _safe(sums[:, 0], sums[:, 1])),
    "bleu": _bleu,
}


def weights(n: int, resamples: int, seed: int):
    """Chunks of bootstrap draw counts: (rows, n) float64 arrays, `resamples` rows in all, each row n draws of
    the n items with replacement (seeded: the same seed gives the same resamples, so two runs are paired)."""
    rng = np.random.default_rng(seed)
    rows = max(1, CHUNK // max(n, 1))
    for start in range(0, resamples, rows):
        m = min(rows, resamples - start)
        draws = rng.integers(0, n, size=(m, n)) + np.arange(m)[:, None] * n
        yield np.bincount(draws.ravel(), minlength=m * n).reshape(m, n).astype(np.float64)


def point(blocks: list[Block]) -> dict[str, float]:
    """The metrics on all items once (what the bootstrap resamples); equals the runner's own computation."""
    out = {}
    for block in blocks:
        cols = block.columns()
        values = block.values(cols.sum(axis=0, keepdims=True), np.array([float(len(cols))]))
        out.update({k: float(v[0]) for k, v in values.items()})
    return out


def resampled(blocks: list[Block], resamples: int, seed: int) -> dict[str, np.ndarray]:
    """{metric: (resamples,) values on the bootstrap resamples}. All blocks are over the same n items."""
    n = blocks[0].n()
    cols = [b.columns() for b in blocks]
    parts: dict[str, list] = {}
    for w in weights(n, resamples, seed):
        counts = np.full(len(w), float(n))
        for block, c in zip(blocks, cols):
            for key, v in block.values(w @ c, counts).items():
                parts.setdefault(key, []).append(v)
    return {k: np.concatenate(v) for k, v in parts.items()}


def percentile(values: np.ndarray, level: float = LEVEL) -> list[float]:
    lo, hi = np.nanpercentile(values, [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]


def intervals(blocks: list[Block], resamples: int, seed: int, level: float = LEVEL) -> dict[str, list[float]]:
    """{<metric>_ci: [lo, hi]}: the percentile bootstrap interval of every metric of the blocks."""
    if not blocks or resamples <= 0:
        return {}
    return {f"{k}_ci": [round(x, 6) for x in percentile(v, level)] for k, v in resampled(blocks, resamples,
                                                                                       seed).items()}


# -- the blocks of the wings' metrics -----------------------------------------------------------------------
def confusion_block(gold, pred, k: int, prefix: str = "test") -> Block:
    codes = np.asarray(gold, dtype=np.int64) * int(k) + np.asarray(pred, dtype=np.int64)
    return Block("confusion", {"k": int(k), "codes": codes},
                 {f"{prefix}_{name}": name for name in ("accuracy", "macro_f1", "weighted_precision",
                                                        "weighted_recall")})


def multilabel_block(gold, pred, prefix: str = "test") -> Block:
    return Block("multilabel", {"gold": np.asarray(gold, dtype=int), "pred": np.asarray(pred, dtype=int)},
                 {f"{prefix}_{name}": name for name in ("micro_f1", "macro_f1", "subset_accuracy", "accuracy",
                                                        "weighted_precision", "weighted_recall")})


def mean_block(values, key: str) -> Block:
    """A metric that is the mean of one number per item (0/1 right or wrong: an accuracy)."""
    return Block("mean", {"values": np.asarray(values, dtype=np.float64)}, {key: "mean"})


def perplexity_block(nll_sums, tokens, key: str) -> Block:
    """Perplexity exp(sum of the items' token losses / their tokens), from each item's summed loss (nats)."""
    return Block("ratio", {"num": np.asarray(nll_sums, dtype=np.float64), "den": np.asarray(tokens, dtype=np.float64)},
                 {key: "exp_ratio"})


def distinct_block(seqs, n: int, key: str) -> Block:
    """distinct-n (distinct n-grams / all n-grams over the texts) as a ratio of item sums: an n-gram seen f times
    in all the texts adds 1/f per occurrence, so the sums over all texts give the distinct count, and a resample
    that draws a text twice does not make its n-grams collide with themselves."""
    grams = [[tuple(s[i:i + n]) for i in range(len(s) - n + 1)] for s in seqs]
    counts: dict = {}
    for item in grams:
        for g in item:
            counts[g] = counts.get(g, 0) + 1
    shares = [sum(1.0 / counts[g] for g in item) for item in grams]
    return Block("ratio", {"num": shares, "den": [len(item) for item in grams]}, {key: "ratio"})


def bleu_block(hypotheses: list[str], references: list[str], prefix: str, orders=(1, 2, 4)) -> tuple[Block, str]:
    """(BLEU-1/2/4 of the texts as one block of sacrebleu's per-sentence n-gram counts, sacrebleu's signature):
    corpus BLEU of each order on a 0-1 scale, exactly sacrebleu's corpus_score of BLEU(max_ngram_order=order)."""
    from sacrebleu.metrics.bleu import BLEU

    bleu = BLEU()
    # sacrebleu's per-sentence counts, as its corpus_score and its own significance tests read them: [sys_len,
    # ref_len, correct_1..4, total_1..4]; the signature names the references' count once they are read
    stats = bleu._extract_corpus_statistics(hypotheses, [references])
    signature = str(bleu.get_signature())
    return Block("bleu", {"stats": np.asarray(stats, dtype=np.int64).reshape(-1, 10)},
                 {f"{prefix}_bleu_{k}": f"bleu_{k}" for k in orders}), signature


# -- two runs on the same items -----------------------------------------------------------------------------
def mcnemar(a_correct, b_correct) -> dict:
    """McNemar's exact test of two classifiers on the same items: b = items A gets right and B wrong, c = the
    reverse; under 'no difference' b ~ Binomial(b + c, 1/2); two-sided p = min(1, 2 P(X <= min(b, c)))."""
    from scipy.stats import binom

    a, b_ = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    b, c = int((a & ~b_).sum()), int((~a & b_).sum())
    p = 1.0 if b + c == 0 else float(min(1.0, 2 * binom.cdf(min(b, c), b + c, 0.5)))
    return {"a_only": b, "b_only": c, "p_value": p}


def compare(a: list[Block], b: list[Block], resamples: int, seed: int, level: float = LEVEL) -> list[dict]:
    """Per metric both runs report: A, B, A - B with its paired-bootstrap interval and two-sided p-value (the
    share of resampled differences at least as far from the observed one as the observed one is from 0, the
    null-centred bootstrap test), and McNemar's exact p for accuracies of right/wrong items."""
    pa, pb = point(a), point(b)
    ra, rb = resampled(a, resamples, seed), resampled(b, resamples, seed)
    rows = []
    for key in [k for k in pa if k in pb]:
        diff = pa[key] - pb[key]
        spread = ra[key] - rb[key]
        p = (1 + np.sum(np.abs(spread - diff) >= abs(diff) - 1e-12)) / (len(spread) + 1)
        row = {"metric": key, "a": pa[key], "b": pb[key], "difference": diff,
               "ci": percentile(spread, level), "p_value": float(min(1.0, p))}
        if key.endswith("accuracy"):
            ca, cb = _correct(a, key), _correct(b, key)
            if ca is not None and cb is not None:
                row["mcnemar"] = mcnemar(ca, cb)
        rows.append(row)
    return rows


def _correct(blocks: list[Block], key: str):
    return next((blk.correct() for blk in blocks if key in blk.metrics), None)


def t_interval(values, level: float = LEVEL) -> list[float] | None:
    """Student's t interval of the mean of runs (seeds): mean ± t(n-1) · std / sqrt(n); None below 2 runs."""
    from scipy.stats import t

    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if len(x) < 2:
        return None
    half = t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return [float(x.mean() - half), float(x.mean() + half)]


# -- what a run saves ---------------------------------------------------------------------------------------
def items_hash(texts, gold) -> str:
    """sha256 of the test items in order: each text (a pair as its two texts) and its gold label(s)."""
    digest = hashlib.sha256()
    for text, label in zip(texts, gold):
        text = list(text) if isinstance(text, (list, tuple)) else [text]
        label = list(label) if isinstance(label, (list, tuple, np.ndarray)) else label
        digest.update(json.dumps([[str(t) for t in text], label], ensure_ascii=False, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def save(run_dir: Path, items: str, blocks: list[Block]) -> None:
    payload = {"items_sha256": items, "n": blocks[0].n() if blocks else 0,
               "blocks": [{"kind": b.kind, "metrics": b.metrics, "data": _plain(b.data)} for b in blocks]}
    tmp = Path(run_dir) / (ITEMS_FILE + ".tmp")
    tmp.write_text(json.dumps(payload), encoding="utf-8")
    tmp.replace(Path(run_dir) / ITEMS_FILE)


def _plain(data: dict) -> dict:
    return {k: (np.asarray(v).tolist() if isinstance(v, (np.ndarray, list, tuple)) else v) for k, v in data.items()}


def load(run_dir: Path) -> tuple[str, list[Block]]:
    """(items hash, blocks) of a run folder's test_items.json; ValueError (a one-line reason) when it is missing
    or not of this shape."""
    from nlpexp.runs import load_run_file

    path = Path(run_dir) / ITEMS_FILE
    if not path.is_file():
        raise ValueError(f"{run_dir} has no {ITEMS_FILE} (a run of an nlpexp before per-item statistics, or not "
                         "a finished training run)")
    found = load_run_file(path, limit=256 << 20)
    try:
        blocks = [Block(str(b["kind"]), dict(b["data"]), dict(b["metrics"])) for b in found["blocks"]]
        for block in blocks:
            if block.kind not in STATISTICS:
                raise ValueError(f"unknown kind {block.kind!r}")
            block.columns()
        return str(found["items_sha256"]), blocks
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path} is not a test_items file ({err})") from None
