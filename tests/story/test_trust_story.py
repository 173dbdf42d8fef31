"""Runs you can trust, story: mode=eval tests a saved run on its own test stories, never on stories it trained on;
a saved run's model folder without its saved_files.json is refused."""
import json

import pytest

from nlpexp.runs import MANIFEST
from refusals import one_line  # tests/ is on sys.path
from saved_runs import MISSING, copy_of, train  # tests/ is on sys.path


# -- story --------------------------------------------------------------------------------------------------
def story(i: int) -> str:
    names = ["Ana", "Bo", "Cy", "Di", "Ed", "Flo", "Gus", "Hal"]
    who = f"{names[i % 8]}{i}"
    return (f"{who} woke up early. {who} made some tea. The cat sat near {who}. It began to rain outside. "
            f"{who} read a book until noon.")


@pytest.fixture(scope="module")
def story_run(tmp_path_factory):
    """A smoke story run on a 40-story file, its last 8 the test stories."""
    root = tmp_path_factory.mktemp("story")
    (root / "stories.txt").write_text("\n".join(story(i) for i in range(40)) + "\n")
    return train(root, "run", "task=story", f"data.path={root / 'stories.txt'}", "data.test_size=8")


def story_eval(nlpexp, run, tmp_path, *args, name="eval"):
    return nlpexp("task=story", "mode=eval", f"ckpt={run}", "+smoke=true", "generate.eval_temperatures=[1.0]",
                  *args, f"hydra.run.dir={tmp_path / name}")


def test_story_eval_uses_the_runs_own_data_and_split(nlpexp, story_run, tmp_path):
    res = story_eval(nlpexp, story_run, tmp_path)  # no data.*: the run's data.path and test_size, not the defaults
    assert res.code == 0, res.err[-2000:]
    got = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    trained = json.loads((story_run / "metrics.json").read_text())
    assert got["stories"]["test"] == trained["stories"]["test"] == 8
    assert got["metrics"]["test_loss"] == pytest.approx(trained["metrics"]["test_loss"], rel=1e-4)
    assert "train_overlap_removed" not in got


@pytest.mark.parametrize("args,needle", [
    (["data.test_size=20"], "was trained with data.test_size=8: its test stories are the last ones"),
    (["data.test_size=null"], "was trained with data.test_size=8"),
    (["data.max_stories=30"], "was trained with data.max_stories=null"),
])
def test_story_eval_refuses_another_cut_of_the_runs_stories(nlpexp, story_run, tmp_path, args, needle):
    line = one_line(story_eval(nlpexp, story_run, tmp_path, *args))
    assert needle in line and "drop data." in line
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_story_eval_on_another_file_leaves_out_the_stories_the_run_trained_on(nlpexp, story_run, tmp_path):
    other = tmp_path / "other.txt"  # its last 8 (the test stories): 3 new ones, then 5 the run trained on
    other.write_text("\n".join([story(i) for i in range(100, 110)] + [story(i) for i in range(5)]) + "\n")
    res = story_eval(nlpexp, story_run, tmp_path, f"data.path={other}")
    assert res.code == 0, res.err[-2000:]
    got = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert got["train_overlap_removed"] == {"test": 5} and got["stories"]["test"] == 3
    assert "left out stories the run trained on (test 5)" in res.out
    only_trained = tmp_path / "trained.txt"
    only_trained.write_text("\n".join(story(i) for i in range(10)) + "\n")
    line = one_line(story_eval(nlpexp, story_run, tmp_path, f"data.path={only_trained}", name="eval2"))
    assert "every test story is one the run trained on" in line


def test_story_run_without_its_file_list_is_refused(nlpexp, story_run, tmp_path):
    run = copy_of(story_run, tmp_path)
    (run / "checkpoints" / "final" / MANIFEST).unlink()
    line = one_line(story_eval(nlpexp, run, tmp_path))
    assert f"checkpoints/final: {MISSING}" in line
    res = nlpexp("task=story", "mode=generate", f"ckpt={run}", "prompt=Ana woke up.", f"hydra.run.dir={tmp_path / 'g'}")
    assert f"checkpoints/final: {MISSING}" in one_line(res)
