"""nlpexp.training.loop, the one hand-written loop: accumulation, precision, deadline, checkpoints, and kill -9 +
resume on the paths that train in it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nlpexp import provenance
from nlpexp.training import loop

sys.path.insert(0, str(Path(__file__).parents[1]))
from killer import KILL_AFTER_CHECKPOINT_6 as KILLER  # noqa: E402


class Regression:
    """y = x w on fixed data: a job whose gradient we can reason about."""

    unit = "rows"

    def __init__(self, batch_size: int, n: int = 16, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.x, self.y = torch.randn(n, 3, generator=gen), torch.randn(n, generator=gen)
        self.model = torch.nn.Linear(3, 1)
        torch.nn.init.zeros_(self.model.weight)
        torch.nn.init.zeros_(self.model.bias)
        self.batch_size = batch_size

    def batches(self, epoch: int):
        order = loop.seeded_order(len(self.y), 1, epoch)
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def units(self, batch) -> int:
        return len(batch)

    def loss_sum(self, batch):
        pred = self.model(self.x[batch]).squeeze(-1)
        return ((pred - self.y[batch]) ** 2).sum()


def settings(**kw):
    return loop.Settings(**{"epochs": 2, "batch_size": 8, "lr": 0.1, **kw})


def test_two_accumulated_micro_batches_give_the_large_batch_step():
    big, small = Regression(batch_size=8), Regression(batch_size=4)
    hist_big, info_big = loop.fit(big, settings(), "cpu")
    hist_small, info_small = loop.fit(small, settings(grad_accum=2), "cpu")
    assert info_big["train_steps"] == info_small["train_steps"] == 4
    assert info_small["grad_accum"] == 2
    assert torch.allclose(big.model.weight, small.model.weight, atol=1e-6)
    assert [r["train_loss"] for r in hist_big] == pytest.approx([r["train_loss"] for r in hist_small], abs=1e-5)
    unaccumulated = Regression(batch_size=4)
    loop.fit(unaccumulated, settings(), "cpu")  # 8 steps of 4 rows: another trajectory
    assert not torch.allclose(unaccumulated.model.weight, big.model.weight, atol=1e-3)


def test_max_steps_deadline_and_bf16_are_what_ran():
    job = Regression(batch_size=2)
    _, info = loop.fit(job, settings(max_steps=3, precision="bf16"), "cpu")
    assert info["train_steps"] == 3 and info["precision"] == "bf16"
    _, info = loop.fit(Regression(batch_size=1), settings(epochs=1000, max_minutes=0.001), "cpu")
    assert 0 < info["train_steps"] < 16000  # the deadline (60 ms) ended it long before 16,000 steps


def test_scaled_adamw_trains_the_named_weights_at_their_multiple_of_the_learning_rate():
    moved = {}
    for scales in ({}, {"bias": 10.0}):
        job = Regression(batch_size=16)
        loop.fit(job, settings(max_steps=1, clip=0.0), "cpu", optimizer=loop.scaled_adamw(job.model, scales))
        moved[len(scales)] = job.model.bias.abs().item(), job.model.weight.abs().max().item()
    # Adam's first step moves every weight by lr (0.1), the scaled bias by 10 lr
    assert moved[0] == pytest.approx((0.1, 0.1), rel=1e-3)
    assert moved[1] == pytest.approx((1.0, 0.1), rel=1e-3)


def test_settings_refuse_fp16_on_cpu():
    from nlpexp.errors import UserError

    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        loop.Settings.of({"epochs": 1, "batch_size": 2, "lr": 1e-3, "precision": "fp16"}, "cpu")


def test_a_step_checkpoint_resumes_to_the_same_weights(tmp_path):
    class Stop(Exception):
        pass

    def die_after_5(step, scalars):
        if step == 5:
            raise Stop

    reference = Regression(batch_size=2)
    loop.fit(reference, settings(save_steps=2), "cpu")
    killed = Regression(batch_size=2)
    with pytest.raises(Stop):
        loop.fit(killed, settings(save_steps=2), "cpu", run_dir=tmp_path, on_log=die_after_5)
    (ckpt,) = [p for p in (tmp_path / "checkpoints").glob("checkpoint-*") if p.name == "checkpoint-4"]
    assert sorted(p.name for p in ckpt.iterdir()) == ["loop_state.json", "model.safetensors",
                                                      "optimizer.safetensors", "saved_files.json"]  # nothing pickled
    state = json.loads((ckpt / "loop_state.json").read_text())
    assert 0 < state["cpu"] < 60
    (ckpt / "loop_state.json").write_text(json.dumps({**state, "cpu": 600.0}))  # as if 10 CPU minutes had run
    resumed = Regression(batch_size=2)
    history, info = loop.fit(resumed, settings(save_steps=2), "cpu", run_dir=tmp_path, resume_from=ckpt)
    assert info["train_steps"] == 16
    assert 10 <= info["train_cpu_minutes"] < 11  # the CPU budget counts both processes' training
    assert torch.equal(resumed.model.weight, reference.model.weight)
    assert len(history) == 2 and not list((tmp_path / "checkpoints").glob("checkpoint-*"))  # cleaned at the end


# 2 epochs of 4 steps (64 examples, batches of 16), a checkpoint every 2 steps
CELLS = {"story_gpt2": (["task=story", "model=gpt2", "data.max_train_samples=64"], "final"),
         "novel_bert_lstm": (["task=novel", "model=bert_lstm"], "best")}


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_kill_9_mid_epoch_then_resume_equals_the_uninterrupted_run(cell, nlpexp, tmp_path, monkeypatch):
    args, folder = CELLS[cell]
    run = ["+smoke=true", *args, "device=cpu", "trainer.epochs=2", "trainer.max_steps=-1", "trainer.save_steps=2"]
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    proc = subprocess.run([sys.executable, str(killer), *run], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == -9, proc.stderr[-3000:]
    (killed,) = [p.parent for p in (tmp_path / "outputs").rglob(".hydra")]
    status = json.loads((killed / "metrics.json").read_text())
    assert status["status"] == "running"  # visibly unfinished
    assert status["git_commit"] == provenance.commit_label(provenance.code_state())  # the code, read at the start
    assert (killed / "checkpoints" / "checkpoint-6" / "loop_state.json").exists()

    steps = []
    step = loop._step
    monkeypatch.setattr(loop, "_step", lambda *a, **k: steps.append(1) or step(*a, **k))
    res = nlpexp("resume=true", "trainer.save_steps=2")  # a setting repeated as it was saved changes nothing
    monkeypatch.setattr(loop, "_step", step)
    assert res.code == 0, res.err[-3000:]
    assert "changed settings" not in res.err and "nlpexp: resuming" in res.err
    assert len(steps) == 2  # steps 7 and 8: it went on mid-epoch
    resumed = json.loads((killed / "metrics.json").read_text())
    assert resumed["resumed_from"].endswith("checkpoint-6") and resumed["train_steps"] == 8

    ref = tmp_path / "reference"
    assert nlpexp(*run, f"hydra.run.dir={ref}").code == 0
    reference = json.loads((ref / "metrics.json").read_text())

    def measured(summary):  # timings differ between any two runs
        return {k: v for k, v in summary["metrics"].items() if not k.endswith("_s")}

    assert measured(resumed) == measured(reference)
    assert Path(killed / "samples.jsonl").read_text() == Path(ref / "samples.jsonl").read_text()
    weights = sorted((killed / "checkpoints" / folder).glob("*.safetensors"))
    assert weights
    for path in weights:
        mine, theirs = load_file(path), load_file(ref / "checkpoints" / folder / path.name)
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)  # bit for bit


def test_the_trainer_path_reads_max_minutes_and_precision_with_the_same_meaning(nlpexp, tmp_path):
    res = nlpexp("+smoke=true", "model=bert", "trainer.max_steps=-1", "trainer.epochs=200", "trainer.max_minutes=0.01",
                 "trainer.precision=bf16", f"hydra.run.dir={tmp_path}/run")
    assert res.code == 0, res.err[-3000:]
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["status"] == "complete" and summary["precision"] == "bf16"
    import pandas as pd

    assert len(pd.read_csv(tmp_path / "run" / "history.csv")) < 20  # 200 epochs asked, the deadline ended it
    assert "trainer.max_minutes=0.01 reached" in res.out
    scoring = json.loads((tmp_path / "run" / "checkpoints" / "best" / "scoring.json").read_text())
    assert scoring["precision"] == "bf16"  # mode=eval/predict score it as it was trained


class Scripted:
    """An evaluator whose verdicts are given: "best" on the epochs listed, a worse score on the others."""

    def __init__(self, best_at):
        self.best_at, self.calls = set(best_at), 0

    def __call__(self, epoch: float, step: int) -> dict:
        self.calls += 1
        return {"val_score": float(self.calls), "best": self.calls in self.best_at}

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass


def test_patience_stops_after_that_many_evaluations_without_a_new_best():
    evaluator = Scripted(best_at={1, 2})
    history, info = loop.fit(Regression(batch_size=8), settings(epochs=10, patience=3), "cpu", evaluate=evaluator)
    assert evaluator.calls == 5 and len(history) == 5  # best at 1 and 2, then 3 evaluations without a gain
    assert info["early_stop"] == {"epoch": 5, "step": 10, "evaluations_without_gain": 3}
    assert history[-1]["early_stop"] is True and "early_stop" not in history[-2]
    assert all("best" not in row for row in history)
    _, info = loop.fit(Regression(batch_size=8), settings(epochs=10), "cpu", evaluate=Scripted(best_at={1}))
    assert "early_stop" not in info and info["train_steps"] == 20  # patience 0: every epoch


def test_patience_counts_across_a_resume(tmp_path):
    class Stop(Exception):
        pass

    def die_at_5(step, scalars):
        if step == 5:
            raise Stop

    # 2 steps an epoch; evaluation 1 is the best, evaluation 2 (step 4) is not: checkpoint-4 holds one stale
    with pytest.raises(Stop):
        loop.fit(Regression(batch_size=8), settings(epochs=10, patience=2, save_steps=2), "cpu", run_dir=tmp_path,
                 evaluate=Scripted(best_at={1}), on_log=die_at_5)
    ckpt = tmp_path / "checkpoints" / "checkpoint-4"
    assert json.loads((ckpt / "loop_state.json").read_text())["stale"] == 1
    _, info = loop.fit(Regression(batch_size=8), settings(epochs=10, patience=2, save_steps=2), "cpu",
                       run_dir=tmp_path, evaluate=Scripted(best_at=set()), resume_from=ckpt)
    assert info["early_stop"] == {"epoch": 3, "step": 6, "evaluations_without_gain": 2}  # not 4 / 8: it counted on


def test_the_trainer_path_stops_early_with_the_same_patience(nlpexp, tmp_path):
    # a learning rate too small to move any prediction: validation accuracy never beats epoch 1
    res = nlpexp("+smoke=true", "model=bert", "trainer.max_steps=-1", "trainer.epochs=20", "trainer.lr=1e-12",
                 "trainer.patience=2", f"hydra.run.dir={tmp_path}/run")
    assert res.code == 0, res.err[-3000:]
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    import pandas as pd

    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert summary["early_stop"]["epoch"] == 3 and summary["early_stop"]["evaluations_without_gain"] == 2
    assert len(history) == 3 and "early stop at epoch 3" in res.out
    assert history["early_stop"].iloc[-1] == True and history["early_stop"].iloc[:-1].isna().all()  # noqa: E712
    assert summary["best_step"] * 3 == summary["early_stop"]["step"]  # epoch 1's weights are the ones tested
