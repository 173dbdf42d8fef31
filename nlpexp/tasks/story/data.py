"""Five-sentence stories as (prompt, reference) pairs: prompt = sentence1, reference = sentence2 .. sentence5
joined by spaces.

Files (`data.path`, one or a list; `data.test_path`): a ROCStories CSV (storyid, storytitle, sentence1 ..
sentence5, or one `text` column), or plain stories, one per line: `.txt`, or `.json`/`.jsonl` with a JSON string
or an array of strings per line (roc_valid.json). Whole stories are split into sentences at sentence-final
punctuation; stories that do not give five are counted and left out.

The split is by position: the main file (the first of data.path) ends with the test stories (the last
`test_size`; none when data.test_path holds the test set) and the `val_size` before them are validation; the
rest of it and every other file are training. A story in two parts (same text) is kept in the later one only:
test over validation over training, counted.
"""
import json
from pathlib import Path

from nlpexp import provenance
from nlpexp.errors import UserError
from nlpexp.inputs.known import of_data, of_file
from nlpexp.inputs.readers import read_frame, read_text, resource_path

SENTENCES = [f"sentence{i}" for i in range(1, 6)]
DEFAULT_TEST_SIZE = 0.3  # data.test_size=null without data.test_path


def _count(size, n: int) -> int:
    """An int >= 1 is a count of stories; a float in (0, 1) a fraction of them."""
    size = float(size or 0)
    return int(size) if size >= 1 else int(round(size * n))


def _paths(value) -> list[Path]:
    if not value:
        return []
    return [Path(str(p)).expanduser() for p in ([value] if isinstance(value, (str, Path)) else list(value))]


def split_sentences(text: str) -> list[str]:
    """A story's sentences: cut after sentence-final punctuation (. ! ? and closing quotes after it) + space."""
    import re

    parts = re.split(r'(?:(?<=[.!?])|(?<=[.!?]["\u201d\u2019\']))\s+', str(text).strip())
    return [part.strip() for part in parts if part.strip()]


def plain_stories(path: Path) -> list[str]:
    """Whole stories, one per line: text (.txt), or JSON per line (.json/.jsonl): a string, or an array of strings
    joined by spaces (a file holding one JSON array of strings also works)."""
    text = read_text(path)
    if path.suffix.lower() not in (".json", ".jsonl"):
        return [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in text.splitlines() if line.strip()]
    try:
        values = [json.loads(line) for line in lines]
    except json.JSONDecodeError:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: not JSON (a string or an array of strings per line): {err}") from None
        values = values if isinstance(values, list) else [values]
    stories = []
    for i, value in enumerate(values, 1):
        parts = value if isinstance(value, list) else [value]
        if not all(isinstance(p, str) for p in parts):
            raise UserError(f"{path}: story {i} is not a string or an array of strings")
        stories.append(" ".join(p.strip() for p in parts if p.strip()))
    return [s for s in stories if s]


def _from_text(texts, where) -> tuple:
    """(five-sentence stories as a DataFrame of sentence columns, count of stories left out)."""
    import pandas as pd

    stories = [split_sentences(text) for text in texts]
    five = [s for s in stories if len(s) == 5]
    dropped = len(stories) - len(five)
    if dropped:
        print(f"{where}: left out {dropped} of {len(stories)} stories that do not split into five sentences")
    return pd.DataFrame(five, columns=SENTENCES), dropped


def _pairs(frame, where) -> tuple:
    """(DataFrame of prompt, reference; count of stories left out) of a ROCStories-format or `text` frame."""
    import pandas as pd

    dropped = 0
    if "text" in frame.columns and not any(c in frame.columns for c in SENTENCES):
        frame, dropped = _from_text(frame["text"].astype(str), where)
    missing = [c for c in SENTENCES if c not in frame.columns]
    if missing:
        raise UserError(f"{where}: not ROCStories format, missing columns {', '.join(missing)} "
                        f"(columns: {', '.join(map(str, frame.columns))}; or one `text` column, a story per row; "
                        "or a .txt/.json file with a story per line)")
    sents = frame[SENTENCES].astype(str).apply(lambda col: col.str.strip())
    keep = (sents != "").all(axis=1)
    if not keep.any():
        raise UserError(f"{where}: no complete five-sentence stories (ROCStories format: columns sentence1 .. "
                        "sentence5, or one `text` column holding a five-sentence story per row)")
    sents = sents[keep]
    pairs = pd.DataFrame({"prompt": sents["sentence1"].tolist(),
                          "reference": sents[SENTENCES[1:]].agg(" ".join, axis=1).tolist()})
    return pairs, dropped + int((~keep).sum())


def read_file(path: Path) -> tuple:
    """(pairs, stories left out) of one story file: CSV/TSV by its columns, else plain stories."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return _pairs(read_frame(path, suffix[1:])[0], path)
    import pandas as pd

    if suffix not in (".txt", ".json", ".jsonl"):
        raise UserError(f"{path}: story files are .csv/.tsv (ROCStories columns) or .txt/.json/.jsonl (a story "
                        "per line)")
    return _pairs(pd.DataFrame({"text": plain_stories(path)}), path)


def read_stories(data) -> tuple:
    """(pairs of the main story source, where it came from, stories left out)."""
    if data.get("path"):
        path = _paths(data.path)[0]
        return _with_origin(read_file(path), str(path))
    if data.source == "hub":
        from nlpexp.inputs.hub import hub_dataset

        ds = hub_dataset(str(data.hub_id), data.get("hub_config"), data.get("revision"),
                         "data.path=<a ROCStories csv or a story-per-line file>")
        if str(data.hub_split) not in ds:
            raise UserError(f"{data.hub_id} has no split '{data.hub_split}' (its splits: {', '.join(ds)}): set "
                            "data.hub_split")
        return _with_origin(_pairs(ds[str(data.hub_split)].to_pandas(), data.hub_id), f"hub:{data.hub_id}")
    path = resource_path(str(data.embedded))
    return _with_origin(read_file(path), f"embedded:{data.embedded}")


def _with_origin(read: tuple, origin: str) -> tuple:
    frame, dropped = read
    return frame, origin, dropped


def story_key(frame) -> list[str]:
    """The text a story is compared by: its five sentences, case and spacing folded."""
    return [" ".join(f"{p} {r}".lower().split()) for p, r in zip(frame["prompt"], frame["reference"])]


def load_stories(data) -> dict:
    """{'train', 'validation', 'test': DataFrames of prompt, reference; 'origin': str; 'counts': what was left
    out (stories not of five sentences; stories also in a later part); 'dataset': the public dataset of the test
    stories, when known (nlpexp/inputs/known.py)}."""
    import pandas as pd

    frame, origin, dropped = read_stories(data)
    if data.get("max_stories"):
        frame = frame.iloc[: int(data.max_stories)]
    test_files, extra = _paths(data.get("test_path")), _paths(data.get("path"))[1:]
    n = len(frame)
    size = data.get("test_size")
    n_test = 0 if test_files else _count(DEFAULT_TEST_SIZE if size is None else size, n)
    n_val = _count(data.get("val_size"), n)
    if (n_test < 1 and not test_files) or n - n_test - n_val < 1 and not extra:
        raise UserError(f"{origin}: {n} stories cannot give {n_test} test and {n_val} validation stories "
                        "and still leave some to train on (data.test_size, data.val_size)")
    n_train = n - n_test - n_val
    parts = {"train": [frame.iloc[:n_train]], "validation": [frame.iloc[n_train:n_train + n_val]],
             "test": [frame.iloc[n_train + n_val:]] if n_test else []}
    for path in extra:
        pairs, left_out = read_file(path)
        parts["train"].append(pairs)
        dropped += left_out
    for path in test_files:
        pairs, left_out = read_file(path)
        parts["test"].append(pairs)
        dropped += left_out
    parts = {k: pd.concat(v, ignore_index=True) for k, v in parts.items()}
    for name, cap in (("train", data.get("max_train_samples")), ("validation", data.get("max_eval_samples")),
                      ("test", data.get("max_eval_samples"))):
        if cap:
            parts[name] = parts[name].iloc[: int(cap)]
    parts, overlap = drop_overlap(parts)
    if overlap:
        print(f"{origin}: left out {sum(overlap.values())} stories also in a later part ("
              + ", ".join(f"{k} {v}" for k, v in overlap.items()) + ")")
    if not len(parts["train"]):
        raise UserError(f"{origin}: no training stories left (every one is also a validation or test story)")
    counts = {"not_five_sentences": dropped, "in_later_part": overlap}
    # an item: its text (an empty part may have lost its columns)
    provenance.record_splits({name: story_key(frame) if len(frame) else [] for name, frame in parts.items()})
    # the public dataset the test stories come from (known.py: ROCStories files and hub copies), else none
    dataset = of_file(test_files[0]) if len(test_files) == 1 else None if test_files else of_data(data)
    return {**{k: v.reset_index(drop=True) for k, v in parts.items()}, "origin": origin, "counts": counts,
            **({"dataset": dataset} if dataset else {})}


def drop_overlap(parts: dict) -> tuple:
    """Stories whose text is also in a later part (validation, test) leave the earlier one; ({part: frame},
    {part: stories left out})."""
    test = set(story_key(parts["test"]))
    val_keys = story_key(parts["validation"])
    keep_val = [k not in test for k in val_keys]
    later = test | {k for k, keep in zip(val_keys, keep_val) if keep}
    keep_train = [k not in later for k in story_key(parts["train"])]
    out = {"train": parts["train"][keep_train], "validation": parts["validation"][keep_val], "test": parts["test"]}
    counts = {"train": keep_train.count(False), "validation": keep_val.count(False)}
    return out, {k: v for k, v in counts.items() if v}
