"""Runs you can trust, classify: mode=eval scores a saved run on its own test split (never on rows it trained on); a
saved model folder without its saved_files.json is refused, a doc2vec classifier.json that does not fit its arrays
is one line, not a segfault, and a config.json of another architecture does not load."""
import json
import re
import shutil

import pytest

from nlpexp.errors import UserError
from refusals import one_line  # tests/ is on sys.path


# -- mode=eval of a saved run: its own test split, never rows it trained on -----------------------------------------
WORDS = {"positive": "profit rose gained strong record beat", "negative": "loss fell dropped weak cut missed",
         "neutral": "meeting held annual report office located"}


def rows(n: int, start: int = 0) -> str:
    return "".join(f"{w} {w.split()[i % 6]} item{i} {label}{i},{label}\n"
                   for i in range(start, start + n) for label, w in WORDS.items())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A doc2vec run (+smoke: 64 training rows) on a 240-row CSV."""
    from saved_runs import train  # tests/ is on sys.path

    root = tmp_path_factory.mktemp("trained")
    (root / "train.csv").write_text("text,label\n" + rows(80))
    return train(root, "run", "model=doc2vec", "seed=3", f"data.path={root / 'train.csv'}")


def copy_of(run, tmp_path):
    shutil.copytree(run, tmp_path / "run", ignore=shutil.ignore_patterns(".lock"))
    return tmp_path / "run"


@pytest.mark.parametrize("args,needle", [
    (["seed=7"], "was trained with seed=3: its test split is made with that seed"),
    (["data.split=[0.1,0.1,0.8]"], "was trained with data.split=[0.64,0.16,0.2]"),
    (["data.split_seed=5"], "was trained with seed=3: its test split is made with that seed"),
])
def test_eval_refuses_another_split_of_the_runs_data(nlpexp, trained, tmp_path, args, needle):
    res = nlpexp("model=doc2vec", "mode=eval", f"ckpt={trained}", *args, f"hydra.run.dir={tmp_path / 'eval'}")
    assert needle in one_line(res)
    assert not (tmp_path / "eval").exists()


def test_eval_on_the_training_file_scores_its_test_split(nlpexp, trained, tmp_path):
    done = json.loads((trained / "metrics.json").read_text())
    plain = nlpexp("model=doc2vec", "mode=eval", f"ckpt={trained}", "seed=3", f"hydra.run.dir={tmp_path / 'a'}")
    assert plain.code == 0, plain.err[-2000:]
    # the training file named again (another spelling of its path): still its test split, not the whole file
    same = nlpexp("model=doc2vec", "mode=eval", f"ckpt={trained}", f"data.path={trained}/../train.csv",
                  f"hydra.run.dir={tmp_path / 'b'}")
    assert same.code == 0, same.err[-2000:]
    for folder in ("a", "b"):
        got = json.loads((tmp_path / folder / "metrics.json").read_text())
        assert got["evaluated"]["split"] == "test" and got["samples"] == {"test": done["samples"]["test"]}
        assert got["metrics"]["test_accuracy"] == done["metrics"]["test_accuracy"]


def test_eval_on_another_file_leaves_out_the_texts_the_run_trained_on(nlpexp, trained, tmp_path):
    other = tmp_path / "other.csv"
    other.write_text((trained.parent / "train.csv").read_text() + rows(10, start=500))
    res = nlpexp("model=doc2vec", "mode=eval", f"ckpt={trained}", f"data.path={other}",
                 f"hydra.run.dir={tmp_path / 'eval'}")
    assert res.code == 0, res.err[-2000:]
    got = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    trained_rows = json.loads((trained / "metrics.json").read_text())["samples"]["train"]
    assert got["evaluated"]["split"] == "file" and got["train_overlap_removed"] == trained_rows
    assert got["samples"] == {"file": 270 - trained_rows}
    assert f"left out {trained_rows} of 270 rows whose text the run trained on" in res.out


def test_a_saved_model_without_its_file_list_is_refused(nlpexp, trained, tmp_path):
    run = copy_of(trained, tmp_path)
    (run / "checkpoints" / "best" / "saved_files.json").unlink()
    res = nlpexp("model=doc2vec", "mode=eval", f"ckpt={run}", f"hydra.run.dir={tmp_path / 'eval'}")
    line = one_line(res)
    assert "checkpoints/best: cannot load the saved model (saved_files.json is missing" in line
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("edit,needle", [
    ({"model": {"vector_size": 900}}, "doc2vec_word_vectors.npy has shape (" ),  # was SIGSEGV in gensim's inference
    ({"model": {"vector_size": 4}}, "doc2vec_word_vectors.npy has shape ("),
    ({"model": {"dm": 7}}, "classifier.json's dm is 7"),
    ({"model": {"epochs": 0}}, "classifier.json's epochs is 0"),
    ({"model": {"lowercase": "yes"}}, "classifier.json's lowercase is 'yes'"),
    ({"seed": -1}, "classifier.json's seed -1"),
    ({"labels": ["a", "b"]}, "logreg_coef.npy has shape (3, "),
])
def test_an_edited_doc2vec_classifier_json_is_one_line_never_a_crash(trained, tmp_path, edit, needle):
    from nlpexp.tasks.classify import doc2vec

    best = copy_of(trained, tmp_path) / "checkpoints" / "best"
    (best / "saved_files.json").unlink()  # what the list would catch: the loader itself must hold
    meta = json.loads((best / "classifier.json").read_text())
    meta = {**meta, **edit, "model": {**meta["model"], **edit.get("model", {})}}
    (best / "classifier.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match=re.escape(needle)):
        doc2vec.load(best, "cpu").predict_proba(["profit rose"])


def test_a_config_json_of_another_architecture_listed_as_saved_is_refused(tmp_path):
    """Even with saved_files.json made to match it: the weights it names are not in model.safetensors."""
    import hashlib

    from transformers import BertConfig, BertForSequenceClassification

    from nlpexp.errors import UserError
    from nlpexp.runs import write_dir
    from nlpexp.tasks.classify import hf

    with write_dir(tmp_path / "best") as tmp:
        BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1,
                                                 num_attention_heads=2, intermediate_size=8)).save_pretrained(tmp)
    best = tmp_path / "best"
    config = json.loads((best / "config.json").read_text())
    (best / "config.json").write_text(json.dumps({**config, "model_type": "gpt2", "n_embd": 8, "n_layer": 1,
                                                  "n_head": 2, "architectures": ["GPT2ForSequenceClassification"]}))
    listed = json.loads((best / "saved_files.json").read_text())
    data = (best / "config.json").read_bytes()
    listed["config.json"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (best / "saved_files.json").write_text(json.dumps(listed))
    with pytest.raises(UserError, match=r"weights of its config.json's gpt2 are not in model.safetensors"):
        hf.load(best, "cpu")
