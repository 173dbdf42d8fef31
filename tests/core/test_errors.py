"""Bad input: one line on stderr, exit code 2, no traceback, no run folder left looking complete."""
import subprocess
import sys

import pytest

from nlpexp.config import registry


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "nlpexp.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("nlpexp: error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[-1]


def no_complete_run(cwd):
    return not list(cwd.rglob("metrics.json")) and not list(cwd.rglob("checkpoints"))


@pytest.mark.parametrize("args,needles", [
    (["task=nosuchtask"], ["unknown task 'nosuchtask'", "finsent"]),
    (["model=nosuchmodel"], ["unknown model 'nosuchmodel'", "minilm"]),
    (["trainer.lr=-0.1"], ["trainer.lr must be a number > 0"]),
    (["trainer.epochs=0", "model=bert_fc"], ["trainer.epochs=0 (zero-shot) scores a pretrained model", "head is new"]),
    (["trainer.epochs=0", "model.pretrained=null"], ["model.pretrained=null builds an untrained model"]),
    (["trainer.epochs=0", "model=bert", "+smoke=true"], ["+smoke=true builds hub models small and untrained"]),
    (["data.path=/no/such/Sentences_50Agree.txt"], ["data file not found", "/no/such/Sentences_50Agree.txt"]),
    (["trainer.nosuchkey=1"], ["trainer.nosuchkey"]),
    (["mode=predict"], ["needs ckpt="]),
    (["+check=true"], ["check: unknown top-level key", "dry_run"]),  # a typo'd setting is not silently kept
])
def test_config_errors_exit_2_before_any_run_folder(tmp_path, args, needles):
    proc = cli(*args, cwd=tmp_path)
    assert_one_line_error(proc, *needles)
    assert not (tmp_path / "outputs").exists()


def test_cuda_refused_when_absent(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert_one_line_error(cli("device=cuda", cwd=tmp_path), "device=cuda")


def test_unsupported_pair_lists_supported_models(nlpexp, monkeypatch):
    import dataclasses

    finsent = dataclasses.replace(registry.TASKS["finsent"], models=("minilm", "bert"))
    monkeypatch.setattr(registry, "TASKS", {**registry.TASKS, "finsent": finsent})
    res = nlpexp("model=doc2vec")
    assert res.code == 2
    assert "model 'doc2vec' does not support task 'finsent'; supported models for finsent: minilm, bert" in res.err


@pytest.mark.parametrize("content,needle", [
    ("Sales rose .@positive\nthis line has no separator\n", "line 2: expected 'sentence@label'"),
    ("Sales rose .@positive\nProfits sank .@bearish\n", "line 2: unknown label 'bearish'"),
])
def test_data_errors_name_file_and_line_and_leave_no_run(nlpexp, tmp_path, content, needle):
    data = tmp_path / "fpb.txt"
    data.write_text(content)
    res = nlpexp("+smoke=true", "model=doc2vec", f"data.path={data}")
    assert res.code == 2 and needle in res.err and "fpb.txt" in res.err
    cell = tmp_path / "outputs" / "finsent" / "doc2vec"
    assert no_complete_run(tmp_path) and (not cell.exists() or not any(cell.iterdir()))


def test_empty_split_is_one_line(nlpexp, tmp_path):
    data = tmp_path / "few.csv"
    data.write_text("text,label\n" + "".join(f"sentence {i},{lab}\n" for i, lab in
                                             enumerate(["positive", "negative", "neutral"])))
    res = nlpexp("+smoke=true", "model=doc2vec", f"data.path={data}")
    assert res.code == 2 and "nlpexp: error:" in res.err and "split" in res.err
    assert no_complete_run(tmp_path)


def test_unreachable_hub_dataset_says_how_to_pass_a_file(nlpexp, tmp_path):
    res = nlpexp("+smoke=true", "model=doc2vec", "data.source=hub")
    assert res.code == 2
    assert "atrost/financial_phrasebank" in res.err and "data.path=" in res.err
    assert no_complete_run(tmp_path)


def test_unreachable_hub_model_says_how_to_build_offline(nlpexp, tmp_path):
    res = nlpexp("model=finbert", "trainer.max_steps=1", "data.max_train_samples=8")
    assert res.code == 2
    assert "ProsusAI/finbert" in res.err and "model.pretrained=null" in res.err
    assert no_complete_run(tmp_path)


def test_bad_input_never_removes_a_folder_it_did_not_make(nlpexp, tmp_path):
    mine = tmp_path / "my_results"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    data = tmp_path / "bad.txt"
    data.write_text("no separator\n")
    res = nlpexp("+smoke=true", "model=doc2vec", f"data.path={data}", f"hydra.run.dir={mine}")
    assert res.code == 2
    assert (mine / "notes.txt").read_text() == "keep me"
    assert not (mine / "metrics.json").exists()
