"""Kill -9 mid-epoch + resume gives the uninterrupted run's result; a 2-process (gloo) run leaves one run folder."""
import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

# 2 epochs of 4 steps, a checkpoint every 2 steps (and at each epoch end)
RUN = ["+smoke=true", "model=bert", "device=cpu", "trainer.epochs=2", "trainer.max_steps=-1", "trainer.lr=1e-3",
       "trainer.save_steps=2"]

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from killer import KILL_AFTER_TRAINER_CHECKPOINT_6 as KILLER  # noqa: E402  (SIGKILL right after checkpoint-6)


def test_kill_9_mid_epoch_then_resume_equals_the_uninterrupted_run(nlpexp, tmp_path, monkeypatch):
    from transformers import Trainer

    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    proc = subprocess.run([sys.executable, str(killer), *RUN], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == -9, proc.stderr[-3000:]
    (killed,) = [p.parent for p in (tmp_path / "outputs").rglob(".hydra")]
    assert json.loads((killed / "metrics.json").read_text())["status"] == "running"  # visibly unfinished
    assert {p.name for p in (killed / "checkpoints").glob("checkpoint-*")} >= {"checkpoint-6"}

    steps = []
    step = Trainer.training_step
    monkeypatch.setattr(Trainer, "training_step", lambda self, *a, **k: steps.append(1) or step(self, *a, **k))
    res = nlpexp("resume=true")  # the newest unfinished run under outputs/
    assert len(steps) == 2  # only steps 7 and 8 ran again: it continued mid-epoch, not from the start
    monkeypatch.setattr(Trainer, "training_step", step)
    assert res.code == 0, res.err[-3000:]
    assert [p.parent for p in (tmp_path / "outputs").rglob(".hydra")] == [killed]  # continued in place
    resumed = json.loads((killed / "metrics.json").read_text())
    assert resumed["status"] == "complete" and resumed["resumed_from"].endswith("checkpoint-6")

    ref = tmp_path / "reference"
    assert nlpexp(*RUN, f"hydra.run.dir={ref}").code == 0
    reference = json.loads((ref / "metrics.json").read_text())
    assert resumed["metrics"] == reference["metrics"]
    assert pd.read_csv(killed / "predictions.csv").equals(pd.read_csv(ref / "predictions.csv"))
    resumed_weights = load_file(killed / "checkpoints" / "best" / "model.safetensors")
    reference_weights = load_file(ref / "checkpoints" / "best" / "model.safetensors")
    assert resumed_weights.keys() == reference_weights.keys()
    assert all(torch.equal(resumed_weights[k], reference_weights[k]) for k in resumed_weights)  # bit for bit

    again = nlpexp(f"resume={killed}")
    assert again.code == 2 and "already finished" in again.err


@pytest.fixture(scope="module")
def data_parallel(tmp_path_factory):
    """`nlpexp +smoke=true model=bert device=cpu trainer.nproc=2` run once, as a user runs it (its folder and its
    console are checked by the two tests below). OMP_NUM_THREADS unset, as on a user's machine (conftest.py sets it
    under xdist): torchrun's banner would say so."""
    cwd = tmp_path_factory.mktemp("data_parallel")
    env = {**{k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "nlpexp", "+smoke=true", "model=bert", "device=cpu",
                           "trainer.nproc=2"], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    return proc, cwd


def test_two_process_gloo_run_writes_one_run_folder(data_parallel):
    proc, cwd = data_parallel
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = sorted(p.parent for p in cwd.rglob(".hydra"))
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "complete" and summary["processes"] == 2
    preds = pd.read_csv(run / "predictions.csv")
    assert summary["metrics"]["test_accuracy"] == pytest.approx((preds["predicted"] == preds["gold"]).mean(), abs=1e-6)
    assert len(preds) == 32
    assert (run / "checkpoints" / "best" / "config.json").exists()
    assert list(cwd.rglob("metrics.json")) == [run / "metrics.json"]


def test_data_parallel_is_refused_for_single_process_models(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nlpexp", "model=doc2vec", "trainer.nproc=2"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and "trains in one process" in proc.stderr
    assert not (tmp_path / "outputs").exists()


def test_a_data_parallel_run_has_one_console(data_parallel):
    proc, _ = data_parallel
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert out.count("data: train 64") == 1 and out.count("train  4/4 100%") == 1  # rank 0's lines only
    assert "[rank" not in out and "Setting OMP_NUM_THREADS" not in out  # no per-rank C++ notices, no banner
