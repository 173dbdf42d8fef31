"""Labelled texts for classification tasks: embedded sample, local file or hub dataset -> train/validation/test."""
from pathlib import Path

import pandas as pd

from nlpexp.readers import read_labelled_file, resource_path
from nlpexp.errors import UserError

SPLITS = ("train", "validation", "test")


def encode_labels(frame: pd.DataFrame, labels: list[str], origin: str) -> pd.DataFrame:
    """Map label names (or integer ids) to ids; an unknown label names its file line."""
    index = {name: i for i, name in enumerate(labels)}
    ids = []
    for value, line in zip(frame["label"], frame["line"]):
        key = str(value).strip()
        if key in index:
            ids.append(index[key])
        elif key.lower() in index:
            ids.append(index[key.lower()])
        elif key.isdigit() and int(key) < len(labels):
            ids.append(int(key))
        else:
            raise UserError(f"{origin} line {line}: unknown label {key!r} (expected one of {', '.join(labels)})")
    return frame.assign(label=ids)


def stratified_split(frame: pd.DataFrame, fractions, seed: int) -> dict[str, pd.DataFrame]:
    from sklearn.model_selection import train_test_split

    train_f, val_f, test_f = fractions
    try:
        rest, test = train_test_split(frame, test_size=test_f, stratify=frame["label"], random_state=seed)
        train, val = train_test_split(rest, test_size=val_f / (train_f + val_f), stratify=rest["label"],
                                      random_state=seed)
    except ValueError as err:
        raise UserError(f"cannot split {len(frame)} rows {train_f}/{val_f}/{test_f} stratified: {err}") from None
    return {"train": train, "validation": val, "test": test}


def load_hub(hub_id: str, labels: list[str]) -> dict[str, pd.DataFrame]:
    from datasets import load_dataset

    try:
        ds = load_dataset(hub_id)
    except Exception as err:  # network errors come through httpx / OSError / ConnectionError
        raise UserError(
            f"cannot load dataset '{hub_id}' from the Hugging Face hub ({type(err).__name__}); "
            "pass a local file instead: data.path=/path/to/Sentences_50Agree.txt (or .csv/.tsv/.jsonl), "
            "or use the embedded sample: data.source=embedded") from None
    out = {}
    for split in SPLITS:
        if split not in ds:
            continue
        part = ds[split]
        text_col = next(c for c in part.column_names if c in ("sentence", "text"))
        names = getattr(part.features["label"], "names", None)
        gold = [names[i] if names else i for i in part["label"]]
        out[split] = pd.DataFrame({"text": part[text_col], "label": gold, "line": range(1, len(part) + 1)})
    return out


def labels_from_data(data) -> list[str]:
    """The label set of a task with task.labels=null (CLUE): every label in the file, ordered by label id
    (numerically when the ids are numbers), so sparse ids (100, 102, ... 116) map to 0..n-1 in id order."""
    if data.get("path"):
        frame = read_labelled_file(data.path, data.format, data.text_column, data.label_column)
    elif data.source == "embedded":
        frame = read_labelled_file(resource_path(data.embedded), data.get("embedded_format", "auto"),
                                   data.text_column, data.label_column)
    else:
        raise UserError("task.labels=null takes the labels from a file; set task.labels=[...] for hub data")
    ids = frame["label_id"] if "label_id" in frame else frame["label"]
    first: dict[str, str] = {}  # label name -> its id
    for name, label_id in zip(frame["label"], ids):
        if first.setdefault(name, label_id) != label_id:
            raise UserError(f"label {name!r} has two ids ({first[name]}, {label_id})")
    numeric = all(str(i).lstrip("-").isdigit() for i in first.values())
    return sorted(first, key=lambda name: (int(first[name]) if numeric else 0, str(first[name])))


def load_splits(data, labels: list[str], seed: int) -> dict[str, pd.DataFrame]:
    """Returns train/validation/test DataFrames with columns text, label (id), line."""
    if data.get("path"):
        origin = str(Path(str(data.path)).expanduser())
        frames = {"all": read_labelled_file(data.path, data.format, data.text_column, data.label_column)}
    elif data.source == "hub":
        origin = data.hub_id
        frames = load_hub(data.hub_id, labels)
    else:
        origin = f"embedded sample {data.embedded}"
        frames = {"all": read_labelled_file(resource_path(data.embedded), data.get("embedded_format", "auto"),
                                            data.text_column, data.label_column)}
    frames = {name: encode_labels(unify_labels(frame, data, labels, origin), labels, origin)
              for name, frame in frames.items()}
    # data.split_seed null: the run's seed; fixed: runs with other seeds see the same sample, split and caps
    seed = seed if data.get("split_seed") is None else int(data.split_seed)
    if data.get("per_label"):
        frames = {name: per_label_sample(frame, int(data.per_label), seed) for name, frame in frames.items()}
    if "all" in frames:
        frames = stratified_split(frames["all"], list(data.split), seed)
    elif "test" not in frames or "validation" not in frames:
        raise UserError(f"{origin}: needs train, validation and test splits (has {', '.join(frames)})")
    caps = {"train": data.get("max_train_samples"), "validation": data.get("max_eval_samples"),
            "test": data.get("max_eval_samples")}
    for split in SPLITS:
        frame = frames[split].sample(frac=1.0, random_state=seed) if caps[split] else frames[split]
        frames[split] = frame.head(caps[split]).reset_index(drop=True) if caps[split] else frame.reset_index(drop=True)
        if frames[split].empty:
            raise UserError(f"{origin}: the {split} split is empty")
    return frames


def label_names(task) -> list[str]:
    """The task's label vocabulary: task.labels, or task.label_sets[task.label_set] (emotion: 6 or 13 labels)."""
    if task.get("labels"):
        return [str(x) for x in task.labels]
    return [str(x) for x in task.label_sets[str(task.label_set)]]


def unify_labels(frame: pd.DataFrame, data, labels: list[str], origin: str) -> pd.DataFrame:
    """data.label_map (lowercased label -> label in the set, e.g. happy -> joy); then, with
    data.other_labels=drop, rows whose label is outside the label set are left out (counted on stdout)."""
    if data.get("label_map") is None and data.get("other_labels") is None:
        return frame
    mapping = {str(k).lower(): str(v) for k, v in (data.get("label_map") or {}).items()}
    unified = frame["label"].astype(str).str.strip().map(lambda v: mapping.get(v.lower(), v.lower()))
    frame = frame.assign(label=unified)
    if data.get("other_labels", "error") == "drop":
        keep = frame["label"].isin(labels)
        if not keep.all():
            dropped = frame.loc[~keep, "label"].value_counts()
            print(f"{origin}: left out {int((~keep).sum())} rows with labels outside the label set "
                  f"({', '.join(f'{k} {v}' for k, v in dropped.items())})")
        frame = frame[keep]
        if frame.empty:
            raise UserError(f"{origin}: no rows with a label in the label set ({', '.join(labels)})")
    return frame


def per_label_sample(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """A balanced seeded sample: up to n rows per label (all of a smaller label)."""
    return frame.sample(frac=1.0, random_state=seed).groupby("label", sort=False).head(n).sort_index()


def load_eval_set(spec: str, data, labels: list[str]) -> pd.DataFrame:
    """A dataset for cross-dataset evaluation: an embedded sample name or a file path, labels unified."""
    path = resource_path(spec) if resource_path(spec).is_file() else Path(spec).expanduser()
    frame = read_labelled_file(path, "auto")
    return encode_labels(unify_labels(frame, data, labels, spec), labels, spec).reset_index(drop=True)


def dataset_name(data) -> str:
    """How a training set is named in the cross-dataset matrix."""
    if data.get("path"):
        return Path(str(data.path)).name
    return data.hub_id if data.source == "hub" else str(data.embedded)
