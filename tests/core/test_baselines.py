"""Published baselines as data: which public dataset a run read (nlpexp/inputs/known.py), the baselines.yaml of
every wing, and a run's gap to them (nlpexp/report/baselines.py). Unit tests: files written here, no run."""
import contextlib
import io

import pytest
from omegaconf import OmegaConf

from nlpexp.inputs import known
from nlpexp.report import baselines
from nlpexp.tasks.classify.data import labelled_splits

LEVELS = {"50": 4846, "66": 4217, "75": 3453, "All": 2264}


def phrasebank(path, lines: int):
    """A PhraseBank-format file of `lines` distinct sentences, the three labels in turn."""
    labels = ("negative", "neutral", "positive")
    path.write_text("".join(f"Company {i} reported item {i} .@{labels[i % 3]}\n" for i in range(lines)))
    return path


def data_config(path):
    return OmegaConf.create({"source": "file", "path": str(path), "format": "auto", "split": [0.64, 0.16, 0.2]})


@pytest.mark.parametrize("level", LEVELS)
def test_each_agreement_level_is_told_by_the_file_name(tmp_path, level):
    found = known.of_file(phrasebank(tmp_path / f"Sentences_{level}Agree.txt", 6))
    assert (found["name"], found["subset"]) == ("financial_phrasebank", f"sentences_{level.lower()}agree")
    # a few lines are not the public file: said, and no published number is for it
    assert found["confirmed_by"] is None and f"the public file has {LEVELS[level]:,}" in found["differs"]
    assert baselines.matching(found) == []


def test_the_public_line_count_confirms_the_file_and_the_reader_records_it(tmp_path):
    path = phrasebank(tmp_path / "Sentences_AllAgree.txt", LEVELS["All"])
    frames, info, _ = labelled_splits(data_config(path), ["negative", "neutral", "positive"], seed=1)
    assert info["dataset"] == {"name": "financial_phrasebank", "subset": "sentences_allagree",
                               "confirmed_by": "line count"}
    assert [e["name"] for e in baselines.matching(info["dataset"])] == ["FinBERT (Araci 2019)"]
    # another level's name on the same lines: named as that level, but its content differs
    other = path.rename(tmp_path / "Sentences_75Agree.txt")
    assert known.of_file(other)["confirmed_by"] is None


def test_a_file_of_ones_own_has_no_dataset(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("text,label\n" + "".join(f"review {i},{'good' if i % 2 else 'bad'}\n" for i in range(40)))
    assert known.of_file(path) is None
    _, info, _ = labelled_splits(data_config(path), None, seed=1)
    assert "dataset" not in info
    assert known.of_data(OmegaConf.create({"source": "embedded", "path": None, "embedded": "finsent.csv"})) is None


def test_the_story_wing_records_the_file_its_test_stories_come_from(tmp_path):
    from nlpexp.tasks.story.data import load_stories

    story = "Tom was hungry on day {}. He went home. He cooked rice. He ate it all. He slept well."
    (tmp_path / "roc_valid.json").write_text("".join(f'["{story.format(i)}"]\n' for i in range(8)))
    (tmp_path / "mine.txt").write_text("".join(story.format(i + 10) + "\n" for i in range(4)))
    data = OmegaConf.create({"source": "file", "path": str(tmp_path / "roc_valid.json"), "test_path": None,
                             "test_size": 2, "val_size": 0})
    found = load_stories(data)["dataset"]
    assert (found["name"], found["subset"], found["confirmed_by"]) == ("rocstories", "diffusion_lm_valid", None)
    data.test_path, data.test_size = str(tmp_path / "mine.txt"), None  # the test stories are one's own
    assert "dataset" not in load_stories(data)


def test_hub_ids_and_configurations():
    assert known.of_hub("takala/financial_phrasebank", "sentences_allagree")["subset"] == "sentences_allagree"
    assert known.of_hub("atrost/financial_phrasebank")["subset"] == "sentences_50agree"
    assert known.of_hub("dair-ai/emotion")["subset"] == "split"  # its default configuration
    assert known.of_hub("clue", "iflytek") == {"name": "clue", "subset": "iflytek", "confirmed_by": "hub id"}
    assert known.of_hub("clue", "afqmc") is None and known.of_hub("someone/reviews") is None
    ernie = {"train": 9600, "validation": 1200, "test": 1200}
    assert known.of_hub("seamew/ChnSentiCorp", None, ernie)["subset"] == "ernie"
    assert known.of_hub("seamew/ChnSentiCorp", None, {**ernie, "test": 900}) is None
    hub = OmegaConf.create({"source": "hub", "path": None, "hub_id": "clue", "hub_config": "tnews"})
    assert known.of_data(hub)["subset"] == "tnews"


ENTRY = {"name": "FinBERT (Araci 2019)", "citation": "Araci 2019", "source": "https://arxiv.org/abs/1908.10063",
         "dataset": {"name": "financial_phrasebank", "subset": "sentences_50agree",
                     "title": "PhraseBank 50% agreement"},
         "metrics": {"test_accuracy": 0.86, "test_macro_f1": 0.84}}


def test_gap_and_its_interval_from_the_run_bootstrap():
    summary = {"metrics": {"test_accuracy": 0.7107, "test_macro_f1": 0.65, "val_accuracy": 0.7},
               "intervals": {"test_accuracy_ci": [0.683, 0.738], "resamples": 1000, "level": 0.95},
               "dataset": {"name": "financial_phrasebank", "subset": "sentences_50agree"}}
    accuracy, f1 = baselines.gaps(summary, [ENTRY])
    assert accuracy["metric"] == "test_accuracy" and accuracy["published"] == 0.86 and accuracy["run"] == 0.7107
    assert accuracy["gap"] == pytest.approx(-0.1493) and accuracy["gap_ci"] == pytest.approx([-0.177, -0.122])
    assert accuracy["line"] == ("FinBERT (Araci 2019), PhraseBank 50% agreement: accuracy 0.86; this run 0.7107 "
                                "[0.683, 0.738], gap -0.149 [-0.177, -0.122]")
    # no interval for macro F1 in this run: the gap alone
    assert f1["gap_ci"] is None and f1["line"].endswith("macro f1 0.84; this run 0.6500, gap -0.190")
    # the same run before intervals existed, the dataset under provenance: found there
    moved = {"metrics": summary["metrics"], "provenance": {"data": {"dataset": summary["dataset"]}}}
    assert [row["gap_ci"] for row in baselines.gaps(moved, [ENTRY])] == [None, None]
    # another subset, one's own data, a metric the run lacks: no row
    assert baselines.gaps({**summary, "dataset": {"name": "financial_phrasebank", "subset": "sentences_66agree"}},
                          [ENTRY]) == []
    assert baselines.gaps({**summary, "dataset": {"name": "own"}}, [ENTRY]) == []
    only = baselines.gaps({"metrics": {"test_accuracy": 0.8}, "dataset": summary["dataset"]}, [ENTRY])
    assert [row["metric"] for row in only] == ["test_accuracy"]


def test_the_end_table_prints_the_gaps():
    from nlpexp.run import print_summary

    row = baselines.gaps({"metrics": {"test_accuracy": 0.9}, "dataset": ENTRY["dataset"]}, [ENTRY])[0]
    summary = {"metrics": {"test_accuracy": 0.9}, "task": "finsent", "model": "bert", "mode": "train",
               "device": "cpu", "wall_time_s": 1.0, "run_dir": "outputs/x", "baselines": [row]}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print_summary(summary)
    assert f"published: {row['line']}" in out.getvalue() and "gap +0.040" in out.getvalue()


def reported_keys(wing: str) -> set[str]:
    """The metrics.json keys a wing's test scores are reported under."""
    if wing == "classify":
        from nlpexp.report.metrics import classification_metrics

        headline, _ = classification_metrics([0, 1], [[0.9, 0.1], [0.2, 0.8]], ["a", "b"])
        return {f"test_{key}" for key in headline}
    from nlpexp.tasks.story.recipe import story_metrics

    return {key for prefix in ("t0.1", "t1.0", "chosen")
            for key in story_metrics(["Tom went home ."], ["Tom went home ."], prefix)}


def test_every_published_entry_is_well_formed():
    entries = baselines.load()
    assert {e["wing"] for e in entries} == {"classify"}  # story: none verified yet (story/baselines.yaml says why)
    for entry in entries:
        where = f"{entry['wing']}/baselines.yaml: {entry.get('name')}"
        assert {"name", "model", "citation", "source", "dataset", "split", "metrics", "note"} <= set(entry), where
        assert entry["source"].startswith("https://"), where
        assert (entry["dataset"]["name"], entry["dataset"]["subset"]) in known.DATASETS, where
        assert entry["metrics"] and set(entry["metrics"]) <= reported_keys(entry["wing"]), where
        assert all(isinstance(v, float) and 0 <= v <= 1 for v in entry["metrics"].values()), where
