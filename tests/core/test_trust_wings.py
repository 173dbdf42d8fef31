"""Runs you can trust, round 2 for the other wings (story, novel, embedding): a saved run's model folder without its
saved_files.json is refused (deleting the list must not skip the sha256 check); the embedding wing's Doc2Vec
settings, vocabulary and arrays are checked before and after gensim sees them (a vector_size wider than the saved
vectors made its compiled inference read past them); story's mode=eval tests a saved run on its own test stories,
never on stories it trained on."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nlpexp.errors import UserError
from nlpexp.runs import MANIFEST, check_files, loading, write_dir
from refusals import one_line  # tests/ is on sys.path

MISSING = "cannot load the saved model (saved_files.json is missing"


def train(root: Path, name: str, *args) -> Path:
    run = root / name
    proc = subprocess.run([sys.executable, "-m", "nlpexp", "+smoke=true", *args, f"hydra.run.dir={run}"], cwd=root,
                          text=True, capture_output=True, timeout=300, env={**__import__("os").environ,
                                                                            "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def copy_of(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / run.name, ignore=shutil.ignore_patterns(".lock")))


# -- runs.py (manifest): one switch for a saved run's folder ----------------------------------------------------
def test_require_refuses_a_folder_without_its_list_and_only_then(tmp_path):
    with write_dir(tmp_path / "best") as tmp:
        (tmp / "model.bin").write_bytes(b"weights")
    best = tmp_path / "best"
    check_files(best, require=True)  # a whole saved folder passes
    (best / MANIFEST).unlink()
    check_files(best)  # a folder from elsewhere (model.pretrained=<folder>) has no list: not checked
    with loading(best):
        pass
    for call in (lambda: check_files(best, require=True), lambda: loading(best, require=True).__enter__()):
        with pytest.raises(UserError, match=re.escape(f"{best}: {MISSING}")):
            call()
    (best / MANIFEST).symlink_to(tmp_path / "elsewhere.json")  # a link is damage, named as such
    with pytest.raises(UserError, match="saved_files.json is a link"):
        check_files(best, require=True)


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


# -- novel --------------------------------------------------------------------------------------------------
def test_novel_run_without_its_file_list_is_refused(nlpexp, tmp_path_factory, tmp_path):
    run = copy_of(train(tmp_path_factory.mktemp("novel"), "run", "task=novel", "model=transformer"), tmp_path)
    args = ("task=novel", "model=transformer", "mode=generate", f"ckpt={run}", "prompt=小川背着竹篓", "length=5")
    assert nlpexp(*args, f"hydra.run.dir={tmp_path / 'ok'}").code == 0  # as saved: loads
    (run / "checkpoints" / "best" / MANIFEST).unlink()
    assert f"checkpoints/best: {MISSING}" in one_line(nlpexp(*args, f"hydra.run.dir={tmp_path / 'g'}"))


# -- embedding ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def emb_run(tmp_path_factory):
    return train(tmp_path_factory.mktemp("emb"), "run", "task=embedding", "model=doc2vec")


def test_embedding_apply_without_the_embedders_file_list_is_refused(nlpexp, emb_run, tmp_path):
    run = copy_of(emb_run, tmp_path)
    (tmp_path / "texts.txt").write_text("Profit fell.\nSales rose.\n")
    args = ("task=embedding", "mode=apply", f"ckpt={run}", f"input={tmp_path / 'texts.txt'}")
    assert nlpexp(*args, f"hydra.run.dir={tmp_path / 'ok'}").code == 0
    (run / "checkpoints" / "embedder" / MANIFEST).unlink()
    assert f"checkpoints/embedder: {MISSING}" in one_line(nlpexp(*args, f"hydra.run.dir={tmp_path / 'a'}"))


@pytest.mark.parametrize("edit,needle", [
    ({"model": {"vector_size": 900}}, "doc2vec_word_vectors.npy has shape ("),  # gensim read past the arrays
    ({"model": {"vector_size": 4}}, "doc2vec_word_vectors.npy has shape ("),
    ({"model": {"dm": 7}}, "settings.json's dm is 7"),
    ({"model": {"window": 0}}, "settings.json's window is 0"),
    ({"model": {"lowercase": "yes"}}, "settings.json's lowercase is 'yes'"),
    ({"seed": -1}, "settings.json's seed -1"),
    ({"vocab": "dup"}, "doc2vec_vocab.json's words are not distinct strings"),
    ({"vocab": "short"}, "doc2vec_vocab.json's words, counts and sample_int are not lists of one length"),
])
def test_an_edited_doc2vec_embedder_is_one_line_never_a_crash(emb_run, tmp_path, edit, needle):
    from nlpexp.tasks.embedding import doc2vec

    folder = copy_of(emb_run, tmp_path) / "checkpoints" / "embedder"
    (folder / MANIFEST).unlink()  # what the list would catch: the loader itself must hold
    settings = json.loads((folder / "settings.json").read_text())
    settings = {**settings, **{k: v for k, v in edit.items() if k != "vocab"},
                "model": {**settings["model"], **edit.get("model", {})}}
    (folder / "settings.json").write_text(json.dumps(settings))
    if "vocab" in edit:
        vocab = json.loads((folder / "doc2vec_vocab.json").read_text())
        if edit["vocab"] == "dup":
            vocab["words"][1] = vocab["words"][0]
        else:
            vocab["counts"] = vocab["counts"][:-1]
        (folder / "doc2vec_vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(UserError, match=re.escape(needle)):
        doc2vec.load(folder, "cpu").encode(["profit rose"])


def test_the_doc2vec_checks_are_one_set_for_both_wings(emb_run):
    """models/doc2vec.py holds the checks; the saved arrays come back C-ordered float32 for gensim."""
    import numpy as np

    from nlpexp.models import doc2vec as shared
    from nlpexp.tasks.embedding import doc2vec

    emb = doc2vec.load(emb_run / "checkpoints" / "embedder", "cpu")
    for array in (emb.d2v.wv.vectors, emb.d2v.syn1neg):
        assert array.dtype == np.float32 and array.flags.c_contiguous
    assert shared.settings_problem({**dict(emb.cfg), "vector_size": True}, "x.json") == \
        "x.json's vector_size is True, not an integer >= 1"
    assert shared.arrays_problem({"a.npy": np.full((2, 3), np.nan, dtype=np.float32)}, 2, 3) == \
        "a.npy holds NaN or infinite values"
