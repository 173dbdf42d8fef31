"""Labelled texts for classification tasks: embedded sample, local file or hub dataset -> train/validation/test."""
from pathlib import Path

import pandas as pd

from nlpexp import provenance
from nlpexp.inputs.known import of_data
from nlpexp.inputs.readers import labelled_frame, pick_columns, read_labelled_file, resource_path
from nlpexp.errors import UserError

SPLITS = ("train", "validation", "test")


def encode_labels(frame: pd.DataFrame, labels: list[str], origin: str) -> pd.DataFrame:
    """Map label names to ids (a multi-label row's list of names to a sorted tuple of ids); an unknown label names
    its file line."""
    index = {name: i for i, name in enumerate(labels)}

    def one(value, line):
        key = str(value).strip()
        if key in index:
            return index[key]
        if key.lower() in index:
            return index[key.lower()]
        raise UserError(f"{origin} line {line}: unknown label {key!r} (expected one of {', '.join(labels)})")

    ids = [tuple(sorted({one(v, line) for v in value})) if isinstance(value, list) else one(value, line)
           for value, line in zip(frame["label"], frame["line"])]
    return frame.assign(label=ids)


def split_label_sets(frame: pd.DataFrame, data, origin: str) -> pd.DataFrame:
    """task.multi_label: each row's labels as a list of names: a list stays (JSONL, Parquet, hub), a string is cut
    at data.label_separator ("joy,love"; "" is no label)."""
    sep = str(data.get("label_separator") or ",")

    def names(value):
        items = value if isinstance(value, list) else str(value).split(sep)
        return [str(v).strip() for v in items if str(v).strip()]

    return frame.assign(label=[names(v) for v in frame["label"]])


def single_labels(frame: pd.DataFrame, origin: str) -> pd.DataFrame:
    """A list in the label column of a single-label task is refused, naming its line (it is multi-label data), and so
    is a row without a label (an empty cell, a JSON null)."""
    lists = frame["label"].map(lambda v: isinstance(v, list))
    empty = frame["label"].map(lambda v: not isinstance(v, list) and not str(v).strip())
    if empty.any():
        lines = frame.loc[empty, "line"]
        raise UserError(f"{origin} line {lines.iloc[0]}: no label ({int(empty.sum())} rows have none): give every "
                        "row a label, or leave those rows out")
    if lists.any():
        line = frame.loc[lists, "line"].iloc[0]
        raise UserError(f"{origin} line {line}: the label is a list ({frame.loc[lists, 'label'].iloc[0]}): several "
                        "labels per text need task.multi_label=true")
    return frame


def name_label_ids(frame: pd.DataFrame, data, labels: list[str] | None, origin: str) -> pd.DataFrame:
    """Integer labels -> names: id i is data.label_names[i]. Without data.label_names, integers that are neither
    a label of the task nor a data.label_map key are refused: read as positions in the task's label list, a file
    whose ids mean something else (0 = positive) would train and score on wrong labels without a word. A task
    whose labels come from the data (labels None) keeps integers as they are: they are its labels' names."""
    names = data.get("label_names")
    if names:
        names = [str(n) for n in names]

        def name(v):
            v = str(v).strip()
            if not (v.lstrip("-").isdigit() and v != "-"):
                return v
            if not 0 <= int(v) < len(names):
                raise UserError(f"{origin}: label id {v} has no name in data.label_names ({len(names)} names, for "
                                f"ids 0 to {len(names) - 1})")
            return names[int(v)]

        return frame.assign(label=[[name(x) for x in v] if isinstance(v, list) else name(v) for v in frame["label"]])
    if labels is None:
        return frame
    values = pd.Series([x for v in frame["label"] for x in (v if isinstance(v, list) else [v])], dtype=object)
    values = values.astype(str).str.strip()
    integer = values.str.fullmatch(r"-?\d+")
    known = set(labels) | {str(k).lower() for k in (data.get("label_map") or {})}
    found = sorted({int(v) for v in values[integer] if v not in known})
    if found:
        shown = ", ".join(map(str, found[:10])) + (", ..." if len(found) > 10 else "")
        raise UserError(f"{origin}: the labels are integers ({shown}), not label names; say which label each id is, "
                        f"in id order: data.label_names=[<label of {found[0]}>,<label of {found[0] + 1}>,...] "
                        f"(the task's labels: {', '.join(labels)})")
    return frame


def prepare_labels(frame: pd.DataFrame, data, labels: list[str], origin: str, multi_label: bool = False
                   ) -> pd.DataFrame:
    """Label values as they are in the data -> label ids of the task, the same way for training, mode=eval and
    eval_on: integer ids named (data.label_names), then unified (data.label_map, data.other_labels), then
    encoded (multi-label: a sorted tuple of ids per row)."""
    return encode_labels(name_labels(frame, data, labels, origin, multi_label), labels, origin)


def name_labels(frame: pd.DataFrame, data, labels: list[str] | None, origin: str, multi_label: bool = False
                ) -> pd.DataFrame:
    """prepare_labels up to the label names: lists split (multi-label), ids named, data.label_map applied."""
    frame = split_label_sets(frame, data, origin) if multi_label else single_labels(frame, origin)
    return unify_labels(name_label_ids(frame, data, labels, origin), data, labels, origin)


def discover_labels(frames: dict[str, pd.DataFrame], data) -> list[str]:
    """The label set of a task whose labels come from the data (task.labels=null): data.label_names when given
    (their order), else every label of the training data (the whole file when it has no splits), sorted:
    numerically when every label is an integer, else by name; CLUE's files order their names by label id."""
    if data.get("label_names"):
        return list(dict.fromkeys(str(name) for name in data.label_names))
    frame = frames.get("train", frames.get("all"))
    if "label_id" in frame:  # CLUE: label_des names, ordered by their ids
        first: dict[str, str] = {}
        for name, label_id in zip(frame["label"], frame["label_id"]):
            if first.setdefault(name, label_id) != label_id:
                raise UserError(f"label {name!r} has two ids ({first[name]}, {label_id})")
        numeric = all(str(i).lstrip("-").isdigit() for i in first.values())
        return sorted(first, key=lambda name: (int(first[name]) if numeric else 0, str(first[name])))
    found = {str(x) for v in frame["label"] for x in (v if isinstance(v, list) else [v])}
    if all(x.lstrip("-").isdigit() for x in found):
        return sorted(found, key=int)
    return sorted(found)


def strata(frame: pd.DataFrame):
    """What a split is stratified by: the label (None for multi-label rows: their label sets are too many to)."""
    return None if len(frame) and isinstance(frame["label"].iloc[0], tuple) else frame["label"]


def stratified_split(frame: pd.DataFrame, fractions, seed: int) -> dict[str, pd.DataFrame]:
    from sklearn.model_selection import train_test_split

    train_f, val_f, test_f = fractions
    try:
        rest, test = train_test_split(frame, test_size=test_f, stratify=strata(frame), random_state=seed)
        train, val = train_test_split(rest, test_size=val_f / (train_f + val_f), stratify=strata(rest),
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
        return tuple(train_test_split(frame, test_size=fraction, stratify=strata(frame), random_state=seed))
    except ValueError as err:
        raise UserError(f"{origin}: cannot hold out {fraction:.0%} of {len(frame)} train rows stratified: "
                        f"{err}") from None


def load_hub(hub_id: str, data) -> dict[str, pd.DataFrame]:
    """The dataset's own splits (data.hub_splits renames them: {validation: dev}). A ClassLabel label column (or a
    list of ClassLabels: multi-label) gives its ids' names (unless data.label_names does); plain integer labels
    are named in load_splits like a file's."""
    from nlpexp.inputs.hub import hub_dataset

    ds = hub_dataset(hub_id, data.get("hub_config"), data.get("revision"),
                     "data.path=<file> (Sentences_50Agree.txt, or a csv/tsv/jsonl with a text and a label column)")
    given = {str(k): str(v) for k, v in (data.get("hub_splits") or {}).items()}
    # a split of theirs named for one of ours is not also read under its own name (test: validation)
    wanted = {split: given.get(split, split) for split in SPLITS
              if split in given or split not in given.values()}
    unknown = [f"{ours}={theirs}" for ours, theirs in (data.get("hub_splits") or {}).items()
               if ours not in SPLITS or str(theirs) not in ds]
    if unknown:
        raise UserError(f"{hub_id}: data.hub_splits names {', '.join(unknown)}, but its splits are "
                        f"{', '.join(ds)} (ours: {', '.join(SPLITS)})")
    out = {}
    for split, theirs in wanted.items():
        if theirs not in ds:
            continue
        part, origin = ds[theirs], f"{hub_id} {theirs}"
        table = part.to_pandas()
        text, pair, label = pick_columns(table, data.get("text_column"), data.get("label_column"),
                                         data.get("text_pair_column"), origin)
        frame = labelled_frame(table, 1, text, label, pair, origin)
        feature = part.features[label]
        # the ids' names: the dataset's ClassLabel, else what the task config knows of this dataset
        names = getattr(feature, "names", None) or getattr(getattr(feature, "feature", None), "names", None) \
            or (data.get("hub_label_names") or {}).get(hub_id)
        if names and not data.get("label_names"):  # -1 (no label) has no name: left for the unknown-label error

            def name(i):
                return names[int(i)] if str(i).isdigit() and int(i) < len(names) else i

            frame["label"] = [[name(i) for i in v] if isinstance(v, list) else name(v) for v in frame["label"]]
        out[split] = frame
    return out


def load_splits(data, labels: list[str] | None, seed: int, multi_label: bool = False) -> dict[str, pd.DataFrame]:
    """Returns train/validation/test DataFrames with columns text, [text_pair], label (id), line."""
    return labelled_splits(data, labels, seed, multi_label)[0]


def read_splits(data, labels: list[str] | None, seed: int, multi_label: bool = False
                ) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """load_splits, and how many rows remove_duplicates left out (the training run records them in metrics.json)."""
    frames, info, _ = labelled_splits(data, labels, seed, multi_label)
    return frames, {k: v for k, v in info.items() if k != "columns"}


def read_data(data) -> tuple[dict[str, pd.DataFrame], str]:
    """The data as it is: {"all": frame} for a file or an embedded sample, the dataset's own splits for a hub id;
    and how messages name it."""
    columns = (data.get("text_column"), data.get("label_column"), data.get("text_pair_column"))
    if data.get("path"):
        return {"all": read_labelled_file(data.path, data.format, *columns)}, str(Path(str(data.path)).expanduser())
    if data.source == "hub":
        return load_hub(data.hub_id, data), data.hub_id
    return ({"all": read_labelled_file(resource_path(data.embedded), data.get("embedded_format", "auto"), *columns)},
            f"embedded sample {data.embedded}")


def labelled_splits(data, labels: list[str] | None, seed: int, multi_label: bool = False) -> tuple:
    """(train/validation/test frames, {rows remove_duplicates left out, the columns read, the public dataset read
    (known.py; absent for one's own data)} for metrics.json, the label set). `labels` None: the label set comes
    from the data (discover_labels)."""
    frames, origin = read_data(data)
    columns = next(iter(frames.values())).attrs.get("columns")  # which of the data's columns were read
    # which public dataset and subset this is (a PhraseBank agreement level, ...): the run's scores meet the
    # published ones for it (report/baselines.py)
    dataset = of_data(data, {name: len(frame) for name, frame in frames.items()})
    frames = {name: name_labels(frame, data, labels, origin, multi_label) for name, frame in frames.items()}
    if labels is None:
        labels = discover_labels(frames, data)
        if len(labels) < 2:  # before any split: splitting it would fail with sklearn's words instead
            raise UserError(f"{origin}: the data has {f'a single label, {labels[0]!r}' if labels else 'no labels'}; "
                            "a classifier needs texts of two or more labels")
    frames = {name: encode_labels(frame, labels, origin) for name, frame in frames.items()}
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
    seen = {i for v in train for i in (v if isinstance(v, tuple) else [v])}
    if len(seen) < 2:  # a one-label classifier learns nothing: the run would only report a constant
        only = f"a single label, {labels[min(seen)]!r}" if seen else "no labels"
        raise UserError(f"{origin}: the train split has {only} ({len(train)} rows); a classifier needs texts of two "
                        "or more labels")
    provenance.record_splits({name: frame["line"] for name, frame in frames.items()})  # an item: its file line
    return frames, {**removed, **({"columns": columns} if columns else {}),
                    **({"dataset": dataset} if dataset else {})}, labels


def inputs(frame: pd.DataFrame) -> list:
    """What predict_proba takes for a split: its texts, or (text, text_pair) tuples for sentence pairs."""
    if "text_pair" in frame:
        return list(zip(frame["text"].astype(str), frame["text_pair"].astype(str)))
    return list(frame["text"])


def vocabulary_texts(frame: pd.DataFrame) -> list:
    """The texts a vocabulary trained on the data learns from: both texts of a sentence pair."""
    return list(frame["text"]) + (list(frame["text_pair"]) if "text_pair" in frame else [])


def item_keys(frame: pd.DataFrame) -> pd.Series:
    """What makes two rows the same item: the text stripped of surrounding whitespace (and the second text of a
    sentence pair)."""
    key = frame["text"].astype(str).str.strip()
    return key + "\t" + frame["text_pair"].astype(str).str.strip() if "text_pair" in frame else key


def remove_duplicates(frames: dict[str, pd.DataFrame], origin: str) -> tuple[dict[str, pd.DataFrame], dict]:
    """Each text once, before any split (a copy on each side of a split would test on training text); a text given
    two labels is dropped with all its copies (which label is right cannot be told). With the data's own splits,
    test texts are also taken out of train and validation. Texts match exactly after stripping whitespace."""
    removed = {"duplicates_removed": 0, "conflicting_removed": 0, "test_overlap_removed": 0}
    frames = dict(frames)
    for name, frame in frames.items():
        frame = frame[frame["text"].astype(str).str.strip() != ""]  # an empty text is no text (not a duplicate)
        key = item_keys(frame)
        conflicting = key.map(frame.groupby(key)["label"].nunique()) > 1
        repeated = key.duplicated() & ~conflicting
        frames[name] = frame[~conflicting & ~repeated]
        removed["duplicates_removed"] += int(repeated.sum())
        removed["conflicting_removed"] += int(conflicting.sum())
    if "test" in frames:
        in_test = set(item_keys(frames["test"]))
        for name in [split for split in ("train", "validation") if split in frames]:
            seen = item_keys(frames[name]).isin(in_test)
            frames[name] = frames[name][~seen]
            removed["test_overlap_removed"] += int(seen.sum())
    if any(removed.values()):
        print(f"{origin}: left out {removed['duplicates_removed']} repeated texts, {removed['conflicting_removed']} "
              f"rows of texts with two labels, {removed['test_overlap_removed']} train/validation rows whose text "
              "is in the test split")
    return frames, removed


def label_names(task) -> list[str] | None:
    """The task's label vocabulary: task.labels, or task.label_sets[task.label_set] (emotion: 6 or 13 labels);
    None: it comes from the data (discover_labels)."""
    if not task.get("labels") and not task.get("label_sets"):
        return None
    if task.get("labels"):
        return [str(x) for x in task.labels]
    return [str(x) for x in task.label_sets[str(task.label_set)]]


def unify_labels(frame: pd.DataFrame, data, labels: list[str] | None, origin: str) -> pd.DataFrame:
    """data.label_map (lowercased label -> label in the set, e.g. happy -> joy); then, with
    data.other_labels=drop, rows whose label is outside the label set are left out (counted on stdout; a
    multi-label row loses those labels). Labels taken from the data (labels None) keep their case."""
    mapping = {str(k).lower(): str(v) for k, v in (data.get("label_map") or {}).items()}
    if labels is None and not mapping:
        return frame

    def one(value):
        value = str(value).strip()
        return mapping.get(value.lower(), value if labels is None else value.lower())

    frame = frame.assign(label=[[one(x) for x in v] if isinstance(v, list) else one(v) for v in frame["label"]])
    if labels is None or data.get("other_labels", "error") != "drop":
        return frame
    if len(frame) and isinstance(frame["label"].iloc[0], list):
        outside = pd.Series([x for v in frame["label"] for x in v if x not in labels], dtype=object)
        frame = frame.assign(label=[[x for x in v if x in labels] for v in frame["label"]])
        if len(outside):
            print(f"{origin}: left out {len(outside)} labels outside the label set "
                  f"({', '.join(f'{k} {v}' for k, v in outside.value_counts().items())})")
        return frame
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


def load_eval_set(spec: str, data, labels: list[str], multi_label: bool = False) -> pd.DataFrame:
    """A dataset for cross-dataset evaluation: an embedded sample name or a file path, labels as in training."""
    path = resource_path(spec) if resource_path(spec).is_file() else Path(spec).expanduser()
    frame = read_labelled_file(path, "auto")
    return prepare_labels(frame, data, labels, spec, multi_label).reset_index(drop=True)


def load_file(data, labels: list[str], multi_label: bool = False) -> pd.DataFrame:
    """The whole of data.path, scored as one set (mode=eval data.path=...): its labels read exactly as in
    training (data.label_names, data.label_map, data.other_labels), nothing split off or left out."""
    frame = read_labelled_file(data.path, data.format, data.get("text_column"), data.get("label_column"),
                               data.get("text_pair_column"))
    return prepare_labels(frame, data, labels, str(data.path), multi_label).reset_index(drop=True)


def dataset_name(data) -> str:
    """How a training set is named in the cross-dataset matrix."""
    if data.get("path"):
        return Path(str(data.path)).name
    return data.hub_id if data.source == "hub" else str(data.embedded)
