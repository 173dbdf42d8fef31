"""Sentence pairs for embedding customization: read, cap, split (grouped by text), then synthetic negatives.

Every frame here has columns text_1, text_2, label (+1 similar, -1 dissimilar) and line (file line or row).
The split comes first and keeps every text on one side: pairs that share a text (SNLI reuses each premise for
several hypotheses) go to the same split, so no test text is ever seen in training.
"""
from pathlib import Path

import numpy as np
import pandas as pd

from nlpexp import provenance
from nlpexp.inputs.readers import detect_format, read_frame, resource_path
from nlpexp.errors import UserError

SNLI_LABELS = {"entailment": 1, "contradiction": -1, "0": 1, "2": -1}  # hub ids: 0 entail, 1 neutral, 2 contra
POSITIVE = {"1", "+1", "1.0", "+1.0", "true", "similar", "positive", "entailment"}
NEGATIVE = {"-1", "0", "-1.0", "0.0", "false", "dissimilar", "negative", "contradiction"}


def _read_frame(path: Path, fmt: str) -> tuple[pd.DataFrame, int]:
    fmt = detect_format(path) if fmt in (None, "auto") else fmt
    if fmt == "phrasebank":
        raise UserError(f"{path}: embedding pairs need a csv/tsv/jsonl file (text_1,text_2,label; "
                        "gold_label,sentence1,sentence2; or text,label)")
    frame, first = read_frame(path, fmt)
    return frame.astype(str), first


def pairs_from_labelled(texts, labels, seed: int) -> pd.DataFrame:
    """Multi-class labelled texts -> positive pairs of two texts with the same label (each text used once)."""
    rng = np.random.default_rng(seed)
    rows = []
    frame = pd.DataFrame({"text": list(texts), "group": [str(x) for x in labels]})
    for group, part in frame.groupby("group", sort=True):
        order = rng.permutation(len(part))
        items = part["text"].to_numpy()[order]
        rows += [(items[i], items[i + 1], 1, group) for i in range(0, len(items) - 1, 2)]
    return pd.DataFrame(rows, columns=["text_1", "text_2", "label", "group"])


def frame_to_pairs(frame: pd.DataFrame, origin: str, first_line: int, seed: int, text_column=None,
                   label_column=None) -> pd.DataFrame:
    """Any of the three schemas -> text_1, text_2, label (+1/-1), line [, group for labelled texts]."""
    cols = set(frame.columns)
    lines = np.arange(first_line, first_line + len(frame))
    if {"text_1", "text_2"} <= cols:
        raw = frame["label"].astype(str).str.strip().str.lower() if "label" in cols else pd.Series(["1"] * len(frame))
        label = np.zeros(len(frame), dtype=int)
        for i, value in enumerate(raw):
            if value in POSITIVE:
                label[i] = 1
            elif value in NEGATIVE:
                label[i] = -1
            else:
                raise UserError(f"{origin} line {lines[i]}: unknown label {value!r} (expected 1 or -1)")
        return pd.DataFrame({"text_1": frame["text_1"].astype(str), "text_2": frame["text_2"].astype(str),
                             "label": label, "line": lines})
    snli = ("gold_label", "sentence1", "sentence2") if {"gold_label", "sentence1", "sentence2"} <= cols else \
        ("label", "premise", "hypothesis") if {"label", "premise", "hypothesis"} <= cols else None
    if snli:
        gold = frame[snli[0]].astype(str).str.strip().str.lower()
        keep = gold.isin(SNLI_LABELS).to_numpy()  # neutral and unlabelled pairs are neither
        return pd.DataFrame({"text_1": frame[snli[1]].astype(str).to_numpy()[keep],
                             "text_2": frame[snli[2]].astype(str).to_numpy()[keep],
                             "label": gold[keep].map(SNLI_LABELS).to_numpy(), "line": lines[keep]})
    text_col = text_column or next((c for c in ("text", "sentence", "review", "content", "Text") if c in cols), None)
    label_col = label_column or next((c for c in ("label", "emotion", "Emotion", "sentiment") if c in cols), None)
    if text_col in cols and label_col in cols:
        pairs = pairs_from_labelled(frame[text_col].astype(str), frame[label_col], seed)
        return pairs.assign(line=np.arange(len(pairs)))
    raise UserError(f"{origin}: expected columns text_1,text_2,label or gold_label,sentence1,sentence2 or "
                    f"text,label (got {', '.join(map(str, frame.columns))})")


def load_hub_pairs(data) -> pd.DataFrame:
    from nlpexp.inputs.hub import hub_dataset

    ds = hub_dataset(data.hub_id, data.get("hub_config"), data.get("revision"),
                     "data.path=snli_1.0_dev_pairs.csv (or a text_1,text_2,label csv/jsonl)")
    split = "validation" if "validation" in ds else next(iter(ds))
    return ds[split].to_pandas().astype(str)


def read_pairs(data, seed: int) -> pd.DataFrame:
    if data.get("path"):
        path = Path(str(data.path)).expanduser()
        frame, first = _read_frame(path, data.format)
        origin = str(path)
    elif data.source == "hub":
        frame, first, origin = load_hub_pairs(data), 0, data.hub_id
    else:
        path = resource_path(data.embedded)
        frame, first = _read_frame(path, "auto")
        origin = f"embedded sample {data.embedded}"
    pairs = frame_to_pairs(frame, origin, first, seed, data.get("text_column"), data.get("label_column"))
    pairs = pairs[(pairs["text_1"].str.strip() != "") & (pairs["text_2"].str.strip() != "")]
    if not (pairs["label"] == 1).any():
        raise UserError(f"{origin}: no positive pairs")
    return pairs.reset_index(drop=True)


def cap_pairs(pairs: pd.DataFrame, max_pairs, seed: int) -> pd.DataFrame:
    """At most max_pairs positives and max_pairs negatives, drawn at random (seeded)."""
    if not max_pairs:
        return pairs
    parts = [part.sample(n=min(len(part), int(max_pairs)), random_state=seed) for _, part in pairs.groupby("label")]
    return pd.concat(parts).sort_index().reset_index(drop=True)


def text_groups(pairs: pd.DataFrame) -> np.ndarray:
    """Connected components of the 'shares a text' graph: one id per pair (union-find)."""
    index = {t: i for i, t in enumerate(pd.unique(pd.concat([pairs["text_1"], pairs["text_2"]])))}
    parent = list(range(len(index)))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(pairs["text_1"], pairs["text_2"]):
        ra, rb = find(index[a]), find(index[b])
        if ra != rb:
            parent[ra] = rb
    return np.array([find(index[a]) for a in pairs["text_1"]])


def grouped_split(pairs: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rest, part): part holds ~fraction of the pairs of each label; no text is on both sides."""
    rng = np.random.default_rng(seed)
    ids, inverse = np.unique(text_groups(pairs), return_inverse=True)
    labels, label_idx = np.unique(pairs["label"].to_numpy(), return_inverse=True)
    counts = np.zeros((len(ids), len(labels)))
    np.add.at(counts, (inverse, label_idx), 1)
    target = fraction * counts.sum(axis=0)
    taken = np.zeros(len(labels))
    chosen = np.zeros(len(ids), dtype=bool)
    for gid in rng.permutation(len(ids)):
        # a group joins the part while it brings the part closer to its per-label targets
        if np.abs(taken + counts[gid] - target).sum() < np.abs(taken - target).sum():
            chosen[gid] = True
            taken += counts[gid]
    mask = chosen[inverse]
    return pairs[~mask].reset_index(drop=True), pairs[mask].reset_index(drop=True)


def split_pairs(pairs: pd.DataFrame, fractions, seed: int) -> dict[str, pd.DataFrame]:
    """train / validation / test, stratified by label and grouped by text, before any negative is made."""
    train_f, val_f, test_f = fractions
    rest, test = grouped_split(pairs, test_f, seed)
    train, val = grouped_split(rest, val_f / (train_f + val_f), seed + 1)
    splits = {"train": train, "validation": val, "test": test}
    for name, frame in splits.items():
        if not (frame["label"] == 1).any():
            raise UserError(f"the {name} split has no positive pairs ({len(pairs)} pairs split "
                            f"{train_f}/{val_f}/{test_f}); use more data or change data.split")
    return splits


def sample_negatives(text_1, text_2, n: int, seed: int, groups: dict | None = None) -> pd.DataFrame:
    """n pairs of two different texts of this split that are not a known positive, drawn directly.

    Never builds the n_texts^2 candidate list: draws index pairs in vectorised batches and rejects
    self-pairs, known positives (either order), duplicates and (with `groups`) pairs from the same group.
    Falls back to enumeration only when more than half of all possible pairs are asked for (a small split).
    """
    text_1, text_2 = list(text_1), list(text_2)
    texts = pd.unique(pd.Series(text_1 + text_2)).tolist()
    index = {t: i for i, t in enumerate(texts)}
    size = len(texts)
    a = np.array([index[t] for t in text_1], dtype=np.int64)
    b = np.array([index[t] for t in text_2], dtype=np.int64)
    known = np.unique(np.minimum(a, b) * size + np.maximum(a, b))
    group_of = np.array([groups[t] for t in texts]) if groups else None
    rng = np.random.default_rng(seed)

    def valid(lo, hi):
        keys = lo * size + hi
        ok = (lo != hi) & ~np.isin(keys, known)
        if group_of is not None:
            ok &= group_of[lo] != group_of[hi]
        return ok

    possible = size * (size - 1) // 2 - len(known)
    if 2 * n >= possible:  # tiny split: enumerate, then shuffle
        lo, hi = np.triu_indices(size, k=1)
        ok = valid(lo, hi)
        lo, hi = lo[ok], hi[ok]
        pick = rng.permutation(len(lo))[:n]
        lo, hi = lo[pick], hi[pick]
    else:
        keys = np.empty(0, dtype=np.int64)
        while len(keys) < n:
            draw = 2 * (n - len(keys)) + 16
            i, j = rng.integers(0, size, draw), rng.integers(0, size, draw)
            lo, hi = np.minimum(i, j), np.maximum(i, j)
            new = (lo * size + hi)[valid(lo, hi)]
            keys = np.concatenate([keys, new])
            _, first = np.unique(keys, return_index=True)
            keys = keys[np.sort(first)]  # dedupe, keep draw order
        keys = keys[:n]
        lo, hi = keys // size, keys % size
    return pd.DataFrame({"text_1": [texts[i] for i in lo], "text_2": [texts[j] for j in hi],
                         "label": -1, "line": -1})


def load_pairs(data, task, seed: int) -> dict[str, pd.DataFrame]:
    """Read, cap, split, then add negatives per split (synthetic ones by recombination within the split)."""
    pairs = read_pairs(data, seed)
    if task.negatives == "random":
        pairs = pairs[pairs["label"] == 1]
    elif not (pairs["label"] == -1).any():
        raise UserError("task.negatives=contradiction needs negative pairs in the data (label -1, or SNLI "
                        "contradiction); use task.negatives=random to recombine texts instead")
    pairs = cap_pairs(pairs, data.get("max_pairs"), seed)
    groups = None
    if "group" in pairs.columns:
        groups = dict(zip(pairs["text_1"], pairs["group"])) | dict(zip(pairs["text_2"], pairs["group"]))
    splits = split_pairs(pairs, list(data.split), seed)
    for k, (name, frame) in enumerate(splits.items()):
        if task.negatives == "random":
            pos = frame[frame["label"] == 1]
            negs = sample_negatives(pos["text_1"], pos["text_2"], int(task.negatives_per_positive) * len(pos),
                                    seed + 100 + k, groups)
            frame = pd.concat([frame, negs], ignore_index=True)
        splits[name] = frame[["text_1", "text_2", "label", "line"]].reset_index(drop=True)
    # an item: its two texts (a synthetic negative has no file line)
    provenance.record_splits({name: list(zip(frame["text_1"], frame["text_2"])) for name, frame in splits.items()})
    return splits
