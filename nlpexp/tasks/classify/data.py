"""Labelled texts for classification tasks: embedded sample, local file or hub dataset -> train/validation/test."""
from pathlib import Path

import pandas as pd

from nlpexp.inputs.readers import LABEL_COLUMNS, TEXT_COLUMNS, pick_column, read_labelled_file, resource_path
from nlpexp.errors import UserError

SPLITS = ("train", "validation", "test")


def encode_labels(frame: pd.DataFrame, labels: list[str], origin: str) -> pd.DataFrame:
    """Map label names to ids; an unknown label names its file line."""
    index = {name: i for i, name in enumerate(labels)}
    ids = []
    for value, line in zip(frame["label"], frame["line"]):
        key = str(value).strip()
        if key in index:
            ids.append(index[key])
        elif key.lower() in index:
            ids.append(index[key.lower()])
        else:
            raise UserError(f"{origin} line {line}: unknown label {key!r} (expected one of {', '.join(labels)})")
    return frame.assign(label=ids)


def name_label_ids(frame: pd.DataFrame, data, labels: list[str], origin: str) -> pd.DataFrame:
    """Integer labels -> names: id i is data.label_names[i]. Without data.label_names, integers that are neither
    a label of the task nor a data.label_map key are refused: read as positions in the task's label list, a file
    whose ids mean something else (0 = positive) would train and score on wrong labels without a word."""
    values = frame["label"].astype(str).str.strip()
    integer = values.str.fullmatch(r"-?\d+")
    names = data.get("label_names")
    if names:
        names = [str(n) for n in names]
        unnamed = sorted({int(v) for v in values[integer] if not 0 <= int(v) < len(names)})
        if unnamed:
            raise UserError(f"{origin}: label ids {', '.join(map(str, unnamed))} have no name in data.label_names "
                            f"({len(names)} names, for ids 0 to {len(names) - 1})")
        return frame.assign(label=[names[int(v)] if i else v for v, i in zip(values, integer)])
    known = set(labels) | {str(k).lower() for k in (data.get("label_map") or {})}
    found = sorted({int(v) for v in values[integer] if v not in known})
    if found:
        shown = ", ".join(map(str, found[:10])) + (", ..." if len(found) > 10 else "")
        raise UserError(f"{origin}: the labels are integers ({shown}), not label names; say which label each id is, "
                        f"in id order: data.label_names=[<label of {found[0]}>,<label of {found[0] + 1}>,...] "
                        f"(the task's labels: {', '.join(labels)})")
    return frame


def prepare_labels(frame: pd.DataFrame, data, labels: list[str], origin: str) -> pd.DataFrame:
    """Label values as they are in the data -> label ids of the task, the same way for training, mode=eval and
    eval_on: integer ids named (data.label_names), then unified (data.label_map, data.other_labels), then
    encoded."""
    frame = unify_labels(name_label_ids(frame, data, labels, origin), data, labels, origin)
    return encode_labels(frame, labels, origin)


def stratified_split(frame: pd.DataFrame, fractions, seed: int) -> dict[str, pd.DataFrame]:
    from sklearn.model_selection import train_test_split

    train_f, val_f, test_f = fractions
    try:
        rest, test = train_test_split(frame, test_size=test_f, stratify=frame["label"], random_state=seed)
        train, val = train_test_split(rest, test_size=val_f / (train_f + val_f), stratify=rest["label"],
                                      random_state=seed)
    except ValueError as err:
        if len(frame) == 0:
            raise UserError("no rows with a text and a label are left to split: check the file's text and label "
                            "columns") from None
        raise UserError(f"cannot split {len(frame)} rows {train_f}/{val_f}/{test_f} stratified: {err}") from None
    return {"train": train, "validation": val, "test": test}


def carve(frame: pd.DataFrame, fraction: float, seed: int, origin: str):
    """(the rest, a seeded stratified `fraction` of `frame`)."""
    from sklearn.model_selection import train_test_split

    try:
        return tuple(train_test_split(frame, test_size=fraction, stratify=frame["label"], random_state=seed))
    except ValueError as err:
        raise UserError(f"{origin}: cannot hold out {fraction:.0%} of {len(frame)} train rows stratified: "
                        f"{err}") from None


def load_hub(hub_id: str, data) -> dict[str, pd.DataFrame]:
    """The dataset's own splits. A ClassLabel label column gives its ids' names (unless data.label_names does);
    plain integer labels are named in load_splits like a file's."""
    from nlpexp.inputs.hub import hub_dataset

    ds = hub_dataset(hub_id, data.get("hub_config"), data.get("revision"),
                     "data.path=<file> (Sentences_50Agree.txt, or a csv/tsv/jsonl with a text and a label column)")
    out = {}
    for split in SPLITS:
        if split not in ds:
            continue
        part = ds[split]
        text_col = pick_column(part.column_names, data.get("text_column"), TEXT_COLUMNS, "text", hub_id)
        label_col = pick_column(part.column_names, data.get("label_column"), LABEL_COLUMNS, "label", hub_id)
        # the ids' names: the dataset's ClassLabel, else what the task config knows of this dataset
        names = getattr(part.features[label_col], "names", None) or (data.get("hub_label_names") or {}).get(hub_id)
        gold = part[label_col]
        if names and not data.get("label_names"):  # -1 (no label) has no name: left for the unknown-label error
            gold = [names[i] if isinstance(i, int) and 0 <= i < len(names) else i for i in gold]
        out[split] = pd.DataFrame({"text": part[text_col], "label": gold, "line": range(1, len(part) + 1)})
    return out


def labels_from_data(data) -> list[str]:
    """The label set of a task with task.labels=null (CLUE): every label in the file, ordered by label id
    (numerically when the ids are numbers), so sparse ids (100, 102, ... 116) map to 0..n-1 in id order.
    With data.label_names, those names in id order."""
    if data.get("label_names"):
        return list(dict.fromkeys(str(name) for name in data.label_names))
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
    return read_splits(data, labels, seed)[0]


def read_splits(data, labels: list[str], seed: int) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """load_splits, and how many rows remove_duplicates left out (the training run records them in metrics.json)."""
    if data.get("path"):
        origin = str(Path(str(data.path)).expanduser())
        frames = {"all": read_labelled_file(data.path, data.format, data.text_column, data.label_column)}
    elif data.source == "hub":
        origin = data.hub_id
        frames = load_hub(data.hub_id, data)
    else:
        origin = f"embedded sample {data.embedded}"
        frames = {"all": read_labelled_file(resource_path(data.embedded), data.get("embedded_format", "auto"),
                                            data.text_column, data.label_column)}
    frames = {name: prepare_labels(frame, data, labels, origin) for name, frame in frames.items()}
    if set(frames) == {"train"}:  # a hub dataset with one split: split seeded and stratified, as a file is
        frames = {"all": frames["train"]}
        print(f"{origin}: one split (train): split {'/'.join(f'{f:g}' for f in data.split)} seeded and stratified")
    if "all" not in frames and ("train" not in frames or len(frames) < 2):
        raise UserError(f"{origin}: needs a train split, and validation or test (has {', '.join(frames)})")
    frames, removed = remove_duplicates(frames, origin)
    # data.split_seed null: the run's seed; fixed: runs with other seeds see the same sample, split and caps
    seed = seed if data.get("split_seed") is None else int(data.split_seed)
    if data.get("per_label"):
        frames = {name: per_label_sample(frame, int(data.per_label), seed) for name, frame in frames.items()}
    if "all" in frames:
        frames = stratified_split(frames["all"], list(data.split), seed)
    for missing in [split for split in SPLITS if split not in frames]:  # carved from train by data.split's shares
        train_f, share = data.split[0], data.split[SPLITS.index(missing)]
        frames["train"], frames[missing] = carve(frames["train"], share / (train_f + share), seed, origin)
        print(f"{origin}: no {missing} split; {share / (train_f + share):.0%} of train held out as {missing} "
              "(seeded, stratified)")
    caps = {"train": data.get("max_train_samples"), "validation": data.get("max_eval_samples"),
            "test": data.get("max_eval_samples")}
    for split in SPLITS:
        frame = frames[split].sample(frac=1.0, random_state=seed) if caps[split] else frames[split]
        frames[split] = frame.head(caps[split]).reset_index(drop=True) if caps[split] else frame.reset_index(drop=True)
        if frames[split].empty:
            raise UserError(f"{origin}: the {split} split is empty")
    train = frames["train"]["label"]
    if train.nunique() < 2:  # a one-label classifier learns nothing: the run would only report a constant
        raise UserError(f"{origin}: the train split has a single label, {labels[train.iloc[0]]!r} ({len(train)} "
                        "rows); a classifier needs texts of two or more labels")
    return frames, removed


def remove_duplicates(frames: dict[str, pd.DataFrame], origin: str) -> tuple[dict[str, pd.DataFrame], dict]:
    """Each text once, before any split (a copy on each side of a split would test on training text); a text given
    two labels is dropped with all its copies (which label is right cannot be told). With the data's own splits,
    test texts are also taken out of train and validation. Texts match exactly after stripping whitespace."""
    removed = {"duplicates_removed": 0, "conflicting_removed": 0, "test_overlap_removed": 0}
    frames = dict(frames)
    for name, frame in frames.items():
        frame = frame[frame["text"].astype(str).str.strip() != ""]  # an empty text is no text (not a duplicate)
        key = frame["text"].astype(str).str.strip()
        conflicting = key.map(frame.groupby(key)["label"].nunique()) > 1
        repeated = key.duplicated() & ~conflicting
        frames[name] = frame[~conflicting & ~repeated]
        removed["duplicates_removed"] += int(repeated.sum())
        removed["conflicting_removed"] += int(conflicting.sum())
    if "test" in frames:
        in_test = set(frames["test"]["text"].astype(str).str.strip())
        for name in [split for split in ("train", "validation") if split in frames]:
            seen = frames[name]["text"].astype(str).str.strip().isin(in_test)
            frames[name] = frames[name][~seen]
            removed["test_overlap_removed"] += int(seen.sum())
    if any(removed.values()):
        print(f"{origin}: left out {removed['duplicates_removed']} repeated texts, {removed['conflicting_removed']} "
              f"rows of texts with two labels, {removed['test_overlap_removed']} train/validation rows whose text "
              "is in the test split")
    return frames, removed


def label_names(task) -> list[str]:
    """The task's label vocabulary: task.labels, or task.label_sets[task.label_set] (emotion: 6 or 13 labels)."""
    if task.get("labels"):
        return [str(x) for x in task.labels]
    return [str(x) for x in task.label_sets[str(task.label_set)]]


def unify_labels(frame: pd.DataFrame, data, labels: list[str], origin: str) -> pd.DataFrame:
    """data.label_map (lowercased label -> label in the set, e.g. happy -> joy); then, with
    data.other_labels=drop, rows whose label is outside the label set are left out (counted on stdout)."""
    if not data.get("label_map") and data.get("other_labels") is None:
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
    """A dataset for cross-dataset evaluation: an embedded sample name or a file path, labels as in training."""
    path = resource_path(spec) if resource_path(spec).is_file() else Path(spec).expanduser()
    frame = read_labelled_file(path, "auto")
    return prepare_labels(frame, data, labels, spec).reset_index(drop=True)


def load_file(data, labels: list[str]) -> pd.DataFrame:
    """The whole of data.path, scored as one set (mode=eval data.path=...): its labels read exactly as in
    training (data.label_names, data.label_map, data.other_labels), nothing split off or left out."""
    frame = read_labelled_file(data.path, data.format, data.text_column, data.label_column)
    return prepare_labels(frame, data, labels, str(data.path)).reset_index(drop=True)


def dataset_name(data) -> str:
    """How a training set is named in the cross-dataset matrix."""
    if data.get("path"):
        return Path(str(data.path)).name
    return data.hub_id if data.source == "hub" else str(data.embedded)
