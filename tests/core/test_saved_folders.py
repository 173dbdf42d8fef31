"""Saved model folders: written whole or not at all, damaged ones refused in one line, nothing in them runs code
(no foreign sentence-transformers module, no gensim pickle), and a saved Doc2Vec run re-scored the same."""
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nlpexp.errors import UserError
from nlpexp.runs import MANIFEST, loading, write_dir
from saved_runs import in_process  # tests/ is on sys.path

BEST = Path("checkpoints") / "best"


def cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "NLPEXP_CACHE_DIR": str(cwd / "cache")}
    return subprocess.run([sys.executable, "-m", "nlpexp", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("nlpexp: error: "), proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[-1], lines[-1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Finished smoke runs, built once: finsent x minilm and doc2vec, embedding x doc2vec and a fine-tuned
    sentence-transformers encoder. Tests damage copies of them."""
    root = tmp_path_factory.mktemp("saved_runs")
    jobs = {"minilm": ["model=minilm"], "doc2vec": ["model=doc2vec"],
            "emb_doc2vec": ["task=embedding", "model=doc2vec"],
            "emb_st": ["task=embedding", "model=sentence_transformers", "task.method=finetune"]}
    for name, args in jobs.items():  # in this process (saved_runs.in_process): the checks below are the commands'
        code, said = in_process(root, "+smoke=true", *args, f"hydra.run.dir={root / name}",
                                env={"TOKENIZERS_PARALLELISM": "false", "NLPEXP_CACHE_DIR": str(root / "cache")})
        assert code == 0, said
        assert json.loads((root / name / "metrics.json").read_text())["status"] == "complete"
    return root


def copy_run(runs: Path, name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(runs / name, tmp_path / f"run_{name}"))


# -- write_dir and loading (unit) ----------------------------------------------------------------------------
def test_write_dir_leaves_no_folder_on_an_exception(tmp_path):
    target = tmp_path / "checkpoints" / "best"
    with pytest.raises(RuntimeError):
        with write_dir(target) as tmp:
            (tmp / "model.safetensors").write_bytes(b"half")
            raise RuntimeError("killed while saving")
    assert not target.exists() and list((tmp_path / "checkpoints").iterdir()) == []


def test_write_dir_replaces_a_folder_whole_and_lists_its_files(tmp_path):
    target = tmp_path / "best"
    (tmp_path / "best.tmp-1").mkdir()  # what a save killed in another process left behind
    with write_dir(target) as tmp:
        (tmp / "old.json").write_text("{}")
    with write_dir(target) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "a.json").write_text("[1]")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    assert json.loads((target / MANIFEST).read_text()) == {
        "sub/a.json": {"size": 3, "sha256": hashlib.sha256(b"[1]").hexdigest()}}
    with pytest.raises(KeyError):  # a failed re-save keeps the folder that was there
        with write_dir(target) as tmp:
            (tmp / "x").write_text("x")
            raise KeyError("x")
    assert (target / "sub" / "a.json").exists() and not (target / "x").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_loading_turns_damage_into_one_line(tmp_path):
    from safetensors.torch import load_file

    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00")
    with pytest.raises(UserError, match=r"cannot load the saved model \(SafetensorError.*incomplete or damaged"):
        with loading(tmp_path):
            load_file(str(tmp_path / "model.safetensors"))
    with write_dir(tmp_path / "best") as tmp:
        (tmp / "config.json").write_text("{}")
    (tmp_path / "best" / "config.json").unlink()
    with pytest.raises(UserError, match=r"best: cannot load the saved model \(config.json is missing\)"):
        with loading(tmp_path / "best"):
            pass


def test_export_native_writes_gensim_format_that_load_ignores(tmp_path):
    from omegaconf import OmegaConf

    from nlpexp.tasks.classify import doc2vec

    cfg = OmegaConf.create({"vector_size": 8, "window": 2, "min_count": 1, "epochs": 2, "dm": 0, "dbow_words": 0,
                            "infer_epochs": None, "lowercase": True, "C": 1.0, "class_weight": None,
                            "export_native": True})
    texts = ["profit rose sharply", "sales fell hard", "profit fell", "sales rose"] * 3
    clf = doc2vec.Doc2VecClassifier(cfg, ["up", "down"], seed=1).fit(texts, [0, 1, 1, 0] * 3)
    clf.save(tmp_path / "best")
    assert (tmp_path / "best" / "doc2vec.model").is_file()
    (tmp_path / "best" / "doc2vec.model").write_bytes(b"not a pickle")  # never opened by load
    (tmp_path / "best" / MANIFEST).unlink()
    again = doc2vec.load(tmp_path / "best", "cpu")
    assert (again.predict_proba(texts) == clf.predict_proba(texts)).all()


# -- damaged model files: mode=eval exits 2 with one line ---------------------------------------------------
@pytest.mark.slow  # the command end to end
@pytest.mark.parametrize("damage,needle", [
    ("truncate_weights", "model.safetensors has 1000 bytes"),
    ("delete_config", "config.json is missing"),
    ("delete_tokenizer", "tokenizer.json is missing"),
    ("truncate_weights_unlisted", "saved_files.json is missing"),  # a folder without its list is refused
])
def test_damaged_minilm_run_is_one_line(runs, nlpexp, tmp_path, damage, needle):
    run = copy_run(runs, "minilm", tmp_path)
    best = run / BEST
    if damage.startswith("truncate_weights"):
        os.truncate(best / "model.safetensors", 1000)
    if damage == "truncate_weights_unlisted":
        (best / MANIFEST).unlink()
    if damage == "delete_config":
        (best / "config.json").unlink()
    if damage == "delete_tokenizer":
        (best / "tokenizer.json").unlink()
    res = nlpexp("mode=eval", f"ckpt={run}", f"hydra.run.dir={tmp_path / 'eval'}")  # in this process: its imports
    assert_one_line_error(subprocess.CompletedProcess([], res.code, res.out, res.err), str(best),
                          "cannot load the saved model", needle, "incomplete or damaged")


# -- sentence-transformers modules.json: only the library's own classes ---------------------------------------
@pytest.mark.slow  # the command end to end
@pytest.mark.parametrize("module_type", ["evil_module.Evil", "os.system", "sentence_transformers.util.misc.os"])
def test_foreign_sentence_transformers_module_is_refused(runs, tmp_path, module_type):
    run = copy_run(runs, "emb_st", tmp_path)
    marker = tmp_path / "IMPORTED"
    (tmp_path / "evil_module.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Evil:\n    pass\n")
    modules_json = run / "checkpoints" / "encoder" / "modules.json"
    modules = json.loads(modules_json.read_text())
    modules[-1]["type"] = module_type
    modules_json.write_text(json.dumps(modules))
    (tmp_path / "texts.txt").write_text("Profit fell.\nSales rose.\n")
    proc = cli("task=embedding", "mode=apply", f"ckpt={run}", f"input={tmp_path / 'texts.txt'}",
               f"hydra.run.dir={tmp_path / 'apply'}", cwd=tmp_path)
    assert_one_line_error(proc, f"module type '{module_type}'", "not a sentence-transformers class")
    assert not marker.exists()


# -- gensim's pickle format is never loaded -----------------------------------------------------------------
class Payload:
    """Unpickling it creates `path`: proof that a pickle was loaded."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.mark.slow  # the command end to end
def test_a_doc2vec_model_pickle_in_a_run_is_never_loaded(runs, tmp_path):
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(Payload(probe))).close()  # the payload is live
    assert probe.exists()
    marker = tmp_path / "UNPICKLED"
    payload = pickle.dumps(Payload(marker))
    clf_run, emb_run = copy_run(runs, "doc2vec", tmp_path), copy_run(runs, "emb_doc2vec", tmp_path)
    (clf_run / BEST / "doc2vec.model").write_bytes(payload)
    (emb_run / "checkpoints" / "embedder" / "doc2vec.model").write_bytes(payload)
    (tmp_path / "texts.txt").write_text("Profit fell.\nSales rose.\n")
    for i, args in enumerate((["mode=eval", f"ckpt={clf_run}"], ["mode=predict", f"ckpt={clf_run}", "text=Profits"],
                              ["task=embedding", "mode=apply", f"ckpt={emb_run}", f"input={tmp_path / 'texts.txt'}"])):
        code, said = in_process(tmp_path, *args, f"hydra.run.dir={tmp_path / f'out{i}'}")  # a pickle loads anywhere
        assert code == 0, said
        assert not marker.exists(), f"{args}: the pickle was loaded"


# -- Doc2Vec: a saved run scores the same every time ---------------------------------------------------------
@pytest.mark.slow  # the command end to end
def test_doc2vec_eval_is_repeatable(runs, tmp_path):
    out = []
    for i in (1, 2):
        proc = cli("mode=eval", f"ckpt={runs / 'doc2vec'}", f"hydra.run.dir={tmp_path / f'eval{i}'}", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out.append(((tmp_path / f"eval{i}" / "predictions.csv").read_text(),
                    json.loads((tmp_path / f"eval{i}" / "metrics.json").read_text())["metrics"]))
    assert out[0] == out[1]
    trained = (runs / "doc2vec" / "predictions.csv").read_text()
    assert out[0][0] == trained  # and as the run scored its test split when it trained
