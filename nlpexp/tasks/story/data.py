"""ROCStories-format stories (storyid, storytitle, sentence1 .. sentence5) as (prompt, reference) pairs.

prompt = sentence1, reference = sentence2 .. sentence5 joined by spaces. The split is by position in the file:
the last `test_size` stories are the test split, the `val_size` before them validation, the rest training.
"""
from pathlib import Path

from nlpexp.readers import read_frame, resource_path
from nlpexp.errors import UserError

SENTENCES = [f"sentence{i}" for i in range(1, 6)]


def _count(size, n: int) -> int:
    """An int >= 1 is a count of stories; a float in (0, 1) a fraction of them."""
    size = float(size or 0)
    return int(size) if size >= 1 else int(round(size * n))


def read_stories(data) -> tuple:
    """(DataFrame with prompt, reference; where it came from)."""
    if data.get("path"):
        path, origin = Path(str(data.path)).expanduser(), str(data.path)
    elif data.source == "hub":
        from nlpexp.hub import hub_dataset

        ds = hub_dataset(str(data.hub_id), data.get("hub_config"), data.get("revision"),
                         "data.path=<a ROCStories csv>")
        if str(data.hub_split) not in ds:
            raise UserError(f"{data.hub_id} has no split '{data.hub_split}' (its splits: {', '.join(ds)}): set "
                            "data.hub_split")
        return _pairs(ds[str(data.hub_split)].to_pandas(), data.hub_id), f"hub:{data.hub_id}"
    else:
        path, origin = resource_path(str(data.embedded)), f"embedded:{data.embedded}"
    return _pairs(read_frame(path, "csv")[0], path), origin


def split_sentences(text: str) -> list[str]:
    """A story's sentences: cut after sentence-final punctuation (. ! ? and closing quotes after it) + space."""
    import re

    parts = re.split(r'(?:(?<=[.!?])|(?<=[.!?]["\u201d\u2019\']))\s+', str(text).strip())
    return [part.strip() for part in parts if part.strip()]


def _from_text(frame, where):
    """One `text` column, one story per row (hub ROCStories copies): five sentences each; other stories are
    counted and left out."""
    import pandas as pd

    stories = [split_sentences(text) for text in frame["text"].astype(str)]
    five = [s for s in stories if len(s) == 5]
    if len(five) < len(stories):
        print(f"{where}: left out {len(stories) - len(five)} of {len(stories)} stories that do not split into five "
              "sentences")
    return pd.DataFrame(five, columns=SENTENCES)


def _pairs(frame, where):
    import pandas as pd

    if "text" in frame.columns and not any(c in frame.columns for c in SENTENCES):
        frame = _from_text(frame, where)
    missing = [c for c in SENTENCES if c not in frame.columns]
    if missing:
        raise UserError(f"{where}: not ROCStories format, missing columns {', '.join(missing)} "
                        f"(columns: {', '.join(map(str, frame.columns))}; or one `text` column, a story per row)")
    sents = frame[SENTENCES].astype(str).apply(lambda col: col.str.strip())
    keep = (sents != "").all(axis=1)
    if not keep.any():
        raise UserError(f"{where}: no complete five-sentence stories (ROCStories format: columns sentence1 .. "
                        "sentence5, or one `text` column holding a five-sentence story per row)")
    sents = sents[keep]
    return pd.DataFrame({"prompt": sents["sentence1"].tolist(),
                         "reference": sents[SENTENCES[1:]].agg(" ".join, axis=1).tolist()})


def load_stories(data) -> dict:
    """{'train', 'validation', 'test': DataFrames of prompt, reference; 'origin': str}."""
    frame, origin = read_stories(data)
    if data.get("max_stories"):
        frame = frame.iloc[: int(data.max_stories)]
    n = len(frame)
    n_test, n_val = _count(data.test_size, n), _count(data.get("val_size"), n)
    if n_test < 1 or n - n_test - n_val < 1:
        raise UserError(f"{origin}: {n} stories cannot give {n_test} test and {n_val} validation stories "
                        "and still leave some to train on (data.test_size, data.val_size)")
    n_train = n - n_test - n_val
    parts = {"train": frame.iloc[:n_train], "validation": frame.iloc[n_train:n_train + n_val],
             "test": frame.iloc[n_train + n_val:]}
    for name, cap in (("train", data.get("max_train_samples")), ("validation", data.get("max_eval_samples")),
                      ("test", data.get("max_eval_samples"))):
        if cap:
            parts[name] = parts[name].iloc[: int(cap)]
    return {**{k: v.reset_index(drop=True) for k, v in parts.items()}, "origin": origin}
