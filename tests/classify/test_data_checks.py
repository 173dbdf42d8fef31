"""Bad data is refused in one line, before training where it can be; valid data reads as it always did.

Integer labels, label_map in mode=eval, duplicate texts, single-label: the classify wing's data. Through the real
readers and recipes; the CLI cases through the in-process `nlpexp` fixture. What every wing's readers refuse
(non-UTF-8, binary, empty and folder inputs) is in tests/core/test_readers.py.
"""
import json

import pytest
from omegaconf import OmegaConf

from nlpexp.errors import UserError
from nlpexp.inputs.readers import read_labelled_file, resource_path
from nlpexp.tasks.classify.data import load_eval_set, read_splits

FINSENT = ["negative", "neutral", "positive"]
WORDS = {"negative": "fell", "neutral": "was reported", "positive": "rose"}


def data_cfg(path, **keys):
    base = {"source": "file", "path": str(path), "format": "auto", "text_column": None, "label_column": None,
            "split": [0.6, 0.2, 0.2]}
    return OmegaConf.create({**base, **keys})


def write_csv(path, rows, header="text,label"):
    path.write_text(header + "\n" + "".join(f"{text},{label}\n" for text, label in rows), encoding="utf-8")
    return path


def finsent_rows(per_label=10, label_of=lambda name: name):
    return [(f"Item {i} of {name} sales {WORDS[name]}", label_of(name)) for name in FINSENT for i in range(per_label)]


# -- (a) integer labels ---------------------------------------------------------------------------------------
def test_integer_labels_are_refused_with_the_file_the_values_and_the_fix(tmp_path):
    path = write_csv(tmp_path / "ids.csv", finsent_rows(label_of=FINSENT.index))
    with pytest.raises(UserError) as err:
        read_splits(data_cfg(path), FINSENT, seed=0)
    message = str(err.value)
    assert "ids.csv" in message and "(0, 1, 2)" in message and "data.label_names=[" in message
    assert "\n" not in message


def test_label_names_name_the_ids_then_label_map_applies(tmp_path):
    # ids in the file's own order: 0 = bullish, 1 = bearish, 2 = flat -- not the task's label order
    order = ["positive", "negative", "neutral"]
    path = write_csv(tmp_path / "ids.csv", finsent_rows(label_of=order.index))
    data = data_cfg(path, label_names=["bullish", "bearish", "flat"],
                    label_map={"bullish": "positive", "bearish": "negative", "flat": "neutral"})
    splits, _ = read_splits(data, FINSENT, seed=0)
    for frame in splits.values():
        for text, label in zip(frame["text"], frame["label"]):
            assert WORDS[FINSENT[label]] in text
    with pytest.raises(UserError, match="label id 2 has no name in data.label_names"):
        read_splits(data_cfg(path, label_names=["positive", "negative"]), FINSENT, seed=0)


def test_integer_labels_that_are_the_task_labels_stay_names(tmp_path):
    """CLUE's ids (task.labels taken from the data) are label names, not positions."""
    rows = [(f"text {label} {i}", label) for label in ("100", "102") for i in range(10)]
    splits, _ = read_splits(data_cfg(write_csv(tmp_path / "clue.csv", rows)), ["100", "102"], seed=0)
    assert sorted(splits["train"]["label"].unique()) == [0, 1]


def hub_dataset(monkeypatch, names=None, splits=None):
    """datasets.load_dataset answering with an in-memory DatasetDict: label a ClassLabel (names) or plain ints."""
    import datasets

    features = datasets.Features({"sentence": datasets.Value("string"), "label":
                                  datasets.ClassLabel(names=names) if names else datasets.Value("int64")})
    order = names or ["positive", "negative", "neutral"]
    splits = splits or {split: [(f"{split} {i} sales {WORDS[name]}", order.index(name))
                                for name in FINSENT for i in range(4)]
                        for split in ("train", "validation", "test")}
    built = datasets.DatasetDict({split: datasets.Dataset.from_dict(
        {"sentence": [t for t, _ in rows], "label": [label for _, label in rows]}, features=features)
        for split, rows in splits.items()})
    monkeypatch.setattr(datasets, "load_dataset", lambda hub_id, *a, **k: built)


def hub_cfg(**keys):
    return OmegaConf.create({"source": "hub", "hub_id": "someone/finnews", "text_column": None,
                             "label_column": None, **keys})


def test_hub_classlabel_names_are_used_and_plain_int_labels_refused(monkeypatch):
    hub_dataset(monkeypatch, names=["positive", "negative", "neutral"])
    splits, _ = read_splits(hub_cfg(), FINSENT, seed=0)
    assert all(WORDS[FINSENT[label]] in text for text, label in zip(splits["test"]["text"], splits["test"]["label"]))

    hub_dataset(monkeypatch)  # the same ids, no ClassLabel: nothing says what they mean
    with pytest.raises(UserError, match=r"someone/finnews: the labels are integers \(0, 1, 2\)"):
        read_splits(hub_cfg(), FINSENT, seed=0)
    splits, _ = read_splits(hub_cfg(label_names=["positive", "negative", "neutral"]), FINSENT, seed=0)
    assert all(WORDS[FINSENT[label]] in text for text, label in zip(splits["train"]["text"], splits["train"]["label"]))


# -- (c) data.label_map in mode=eval, (d) counted in metrics.json ----------------------------------------------
EMOTIONS = ["anger", "fear", "joy", "love", "sadness", "surprise"]


def test_mode_eval_reads_labels_as_training_did_and_metrics_count_removed_duplicates(nlpexp, tmp_path):
    rows = [(f"Day {i} brought {name}", name) for name in EMOTIONS for i in range(14)]
    rows += rows[:2] + [("What a day", "joy"), ("What a day", "fear")]
    train = write_csv(tmp_path / "train.csv", rows)
    res = nlpexp("task=emotion", "model=doc2vec", "+smoke=true", f"data.path={train}", f"hydra.run.dir={tmp_path}/run")
    assert res.code == 0, res.err[-2000:]
    run = tmp_path / "run"
    trained = json.loads((run / "metrics.json").read_text())
    assert (trained["duplicates_removed"], trained["conflicting_removed"]) == (2, 2)

    # the saved run's data.label_map (happy -> joy, worry -> fear, ...) applies to a file scored in mode=eval
    words = {"anger": "hate", "fear": "worry", "joy": "happy", "love": "love", "sadness": "sad",
             "surprise": "surprised"}
    scored = write_csv(tmp_path / "words.csv", [(f"Evening {i} felt {name}", words[name])
                                                for name in EMOTIONS for i in range(2)])
    res = nlpexp("task=emotion", "mode=eval", f"ckpt={run}", f"data.path={scored}")
    assert res.code == 0, res.err[-2000:]
    report = json.loads(sorted((run / "eval").glob("*/metrics.json"))[-1].read_text())
    assert report["evaluated"]["split"] == "file" and set(report["per_class"]) >= set(EMOTIONS)

    ids = write_csv(tmp_path / "ids.csv", [(f"Night {i} felt {k}", k) for k in range(6) for i in range(2)])
    res = nlpexp("task=emotion", "mode=eval", f"ckpt={run}", f"data.path={ids}")
    assert res.code == 2 and "ids.csv: the labels are integers (0, 1, 2, 3, 4, 5)" in res.err
    res = nlpexp("task=emotion", "mode=eval", f"ckpt={run}", f"data.path={ids}",
                 f"data.label_names=[{','.join(EMOTIONS)}]")
    assert res.code == 0, res.err[-2000:]


def test_label_map_applies_to_eval_on_sets(tmp_path):
    path = write_csv(tmp_path / "alt.csv", [("a", "Bullish"), ("b", "bearish")])
    frame = load_eval_set(str(path), OmegaConf.create({"label_map": {"bullish": "positive", "bearish": "negative"}}),
                          FINSENT)
    assert frame["label"].tolist() == [2, 0]


# -- (d) duplicate texts --------------------------------------------------------------------------------------
def test_duplicates_and_conflicting_texts_are_removed_before_the_split(tmp_path, capsys):
    rows = finsent_rows()
    rows += [(rows[0][0], rows[0][1]), ("  " + rows[1][0] + " ", rows[1][1])]  # two repeats, one with spaces
    rows += [("Sales were flat or up", "neutral"), ("Sales were flat or up", "positive"),
             ("Sales were flat or up", "positive")]  # one text, two labels: all three copies go
    splits, removed = read_splits(data_cfg(write_csv(tmp_path / "dups.csv", rows)), FINSENT, seed=0)
    assert removed == {"duplicates_removed": 2, "conflicting_removed": 3, "test_overlap_removed": 0}
    texts = [t.strip() for frame in splits.values() for t in frame["text"]]
    assert len(texts) == len(set(texts)) == 30 and "Sales were flat or up" not in texts
    assert "left out 2 repeated texts, 3 rows of texts with two labels" in capsys.readouterr().out


def test_own_test_split_texts_are_taken_out_of_train_and_validation(monkeypatch):
    rows = {split: [(f"{split} {i} sales {WORDS[name]}", FINSENT.index(name)) for name in FINSENT for i in range(4)]
            for split in ("train", "validation", "test")}
    rows["train"] += rows["test"][:2]
    rows["validation"] += rows["test"][2:3]
    hub_dataset(monkeypatch, names=FINSENT, splits=rows)
    splits, removed = read_splits(hub_cfg(), FINSENT, seed=0)
    assert removed["test_overlap_removed"] == 3
    assert not set(splits["test"]["text"]) & (set(splits["train"]["text"]) | set(splits["validation"]["text"]))
    assert len(splits["test"]) == 12


def test_the_embedded_defaults_have_nothing_to_remove():
    for embedded, labels in (("finsent.csv", FINSENT), ("emotion.csv", None)):
        data = OmegaConf.create({"source": "embedded", "embedded": embedded, "format": "auto", "text_column": None,
                                 "label_column": None, "split": [0.64, 0.16, 0.2], "other_labels": "drop"})
        labels = labels or sorted(set(read_labelled_file(resource_path(embedded))["label"]))
        assert set(read_splits(data, labels, seed=1)[1].values()) == {0}


# -- (e) nonsense refused -------------------------------------------------------------------------------------
def test_a_single_label_training_split_is_refused(tmp_path):
    path = write_csv(tmp_path / "one.csv", [(f"Sales {i} rose", "positive") for i in range(20)])
    with pytest.raises(UserError, match=r"one.csv: the train split has a single label, 'positive' \(12 rows\)"):
        read_splits(data_cfg(path), FINSENT, seed=0)


