"""Bad data is refused in one line, before training where it can be; valid data reads as it always did.

Integer labels, non-UTF-8 files, label_map in mode=eval, duplicate texts, single-label, binary, empty and folder
inputs. Through the real readers and recipes; the CLI cases through the in-process `nlpexp` fixture.
"""
import json

import pytest
from omegaconf import OmegaConf

from nlpexp.errors import UserError
from nlpexp.readers import read_labelled_file, read_text, resource_path
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
    with pytest.raises(UserError, match="label ids 2 have no name in data.label_names"):
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


# -- (b) non-UTF-8 files --------------------------------------------------------------------------------------
def test_latin1_csv_is_read_as_latin1_with_a_note_never_replacement_characters(tmp_path, capsys):
    rows = finsent_rows()
    rows[0] = ("Café Nordbrew sales rose", "positive")
    path = tmp_path / "latin.csv"
    path.write_bytes(("text,label\n" + "".join(f"{t},{label}\n" for t, label in rows)).encode("latin-1"))
    frame = read_labelled_file(path)
    assert frame["text"][0] == "Café Nordbrew sales rose" and not frame["text"].str.contains("\ufffd").any()
    assert f"nlpexp: note: {path} is not UTF-8; read as latin-1" in capsys.readouterr().err


def test_utf8_bom_csv_finds_its_text_column(tmp_path, capsys):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "text,label\nGewinn in Malmö stieg,positive\n".encode("utf-8"))
    assert read_labelled_file(path)["text"].tolist() == ["Gewinn in Malmö stieg"]
    assert "note" not in capsys.readouterr().err


def latin1(path, text):
    path.write_bytes(text.encode("latin-1"))
    return path


def test_every_wing_reads_latin1_through_the_one_helper(tmp_path, capsys):
    from nlpexp.tasks.embedding.data import read_pairs
    from nlpexp.tasks.novel.data import read_sources
    from nlpexp.tasks.story.data import read_stories

    novel = latin1(tmp_path / "novel.txt", "Il était une fois à Genève.\n")
    assert read_sources(OmegaConf.create({"path": str(novel)}))[0].strip() == "Il était une fois à Genève."
    head = "storyid,storytitle,sentence1,sentence2,sentence3,sentence4,sentence5\n"
    story = latin1(tmp_path / "stories.csv", head + "s1,Café,Zoë went out.,b,c,d,e\n")
    frame, _, _ = read_stories(OmegaConf.create({"path": str(story)}))
    assert frame["prompt"].tolist() == ["Zoë went out."]
    pairs = latin1(tmp_path / "pairs.csv", "text_1,text_2,label\nA café.,Ein Café.,1\nNo.,Sí.,-1\n")
    read = read_pairs(OmegaConf.create({"path": str(pairs), "format": "auto"}), seed=0)
    assert read["text_2"].tolist() == ["Ein Café.", "Sí."]
    err = capsys.readouterr().err
    assert all(f"{p} is not UTF-8; read as latin-1" in err for p in (novel, story, pairs))


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


@pytest.mark.parametrize("content", [b"PK\x03\x04\x14\x00\x00\x00\x08\x00" * 50,
                                     bytes(range(1, 256)) * 40])  # NUL bytes; or mostly control characters
def test_binary_files_are_refused_by_every_reader(tmp_path, content):
    from nlpexp.tasks.novel.data import read_sources

    for name in ("data.csv", "data.txt", "data.jsonl"):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UserError, match=f"{name} looks binary, not text"):
            read_labelled_file(tmp_path / name)
    with pytest.raises(UserError, match="data.txt looks binary, not text"):
        read_sources(OmegaConf.create({"path": str(tmp_path / "data.txt")}))


def test_text_with_a_few_control_characters_is_still_text(tmp_path):
    (tmp_path / "t.txt").write_bytes("Umsatz \x1b[1mstieg\x1b[0m in Zürich.\n".encode("utf-8") * 200)
    assert "Zürich" in read_text(tmp_path / "t.txt")


def test_empty_files_and_missing_text_columns_name_the_columns_found(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(UserError, match="empty.csv is empty"):
        read_labelled_file(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("headline,tone\n")
    with pytest.raises(UserError, match=r"header.csv: no data rows \(columns: headline, tone\)"):
        read_labelled_file(tmp_path / "header.csv")
    (tmp_path / "cols.csv").write_text("headline,tone\nSales rose,positive\n")
    with pytest.raises(UserError, match=r"no text column found \(columns: headline, tone\)"):
        read_labelled_file(tmp_path / "cols.csv")


def test_a_folder_for_a_file_is_refused_before_the_run(nlpexp, tmp_path):
    (tmp_path / "news").mkdir()
    res = nlpexp(f"data.path={tmp_path / 'news'}", "dry_run=true")
    assert res.code == 2 and "news is a folder, not a file" in res.err and not res.run_dirs()
    with pytest.raises(UserError, match="news is a folder, not a file"):
        read_labelled_file(tmp_path / "news")


def test_binary_data_and_input_are_refused_before_the_run(nlpexp, tmp_path):
    blob = tmp_path / "blob.txt"
    blob.write_bytes(b"\x00\x01\x02" * 100)
    res = nlpexp("task=novel", "model=transformer", f"data.path={blob}", "dry_run=true")
    assert res.code == 2 and "blob.txt looks binary, not text" in res.err and not res.run_dirs()
    res = nlpexp("mode=predict", f"ckpt={tmp_path / 'run'}", f"input={blob}")
    assert res.code == 2 and "blob.txt looks binary, not text" in res.err
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "ch1.txt").write_text("第一回 风起。天下大势，分久必合。\n" * 50, encoding="utf-8")
    book = nlpexp("task=novel", "model=transformer", f"data.path={tmp_path / 'book'}", "dry_run=true")
    assert book.code == 0, book.err  # task=novel reads folders
