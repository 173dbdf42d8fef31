"""Runs you can trust, embedding: mode=apply refuses an embedder folder without its saved_files.json; the wing's
Doc2Vec settings, vocabulary and arrays are checked before and after gensim sees them (a vector_size wider than the
saved vectors made its compiled inference read past them)."""
import json
import re

import pytest

from nlpexp.errors import UserError
from nlpexp.runs import MANIFEST
from refusals import one_line  # tests/ is on sys.path
from saved_runs import MISSING, copy_of, train  # tests/ is on sys.path


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
