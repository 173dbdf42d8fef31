"""Checkpoints you can trust: a step checkpoint (the Trainer's or our loop's) is under its final name only when
whole, resume skips one that is not and says so, and a saved folder's files are checked by sha256."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from nlpexp import runs
from nlpexp.training import loop
from nlpexp.errors import UserError
from nlpexp.runs import MANIFEST, check_files, loading, write_dir

sys.path.insert(0, str(Path(__file__).parents[1]))
from killer import KILL_INSIDE_SAVE, KILL_TRAINER_INSIDE_CHECKPOINT_6  # noqa: E402

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
# the HF Trainer path: 2 epochs of 4 steps, a checkpoint every 2 steps (and at each epoch end)
RUN = ["+smoke=true", "model=bert", "device=cpu", "trainer.epochs=2", "trainer.max_steps=-1", "trainer.lr=1e-3",
       "trainer.save_steps=2"]


def one_line(res, *needles) -> str:
    lines = [line for line in res.err.strip().splitlines() if line.strip()]
    assert res.code == 2, res.err[-3000:]
    assert "Traceback" not in res.err and lines[-1].startswith("nlpexp: error: "), res.err[-3000:]
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    return lines[-1]


def test_a_trainer_checkpoint_killed_mid_write_is_skipped_and_resume_equals_the_uninterrupted_run(nlpexp, tmp_path):
    killer = tmp_path / "killer.py"
    killer.write_text(KILL_TRAINER_INSIDE_CHECKPOINT_6)
    proc = subprocess.run([sys.executable, str(killer), *RUN], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, check=False, env=ENV)
    assert proc.returncode == -9, proc.stderr[-3000:]
    (run,) = [p.parent for p in (tmp_path / "outputs").rglob(".hydra")]
    ckpts = run / "checkpoints"
    half = ckpts / ".staging" / "checkpoint-6"
    assert (half / "optimizer.pt").stat().st_size == 0  # killed in the middle of checkpoint-6's write ...
    assert not (ckpts / "checkpoint-6").exists()  # ... which never got its final name
    assert (ckpts / "checkpoint-4" / MANIFEST).is_file()
    assert runs.latest_checkpoint(run) == ckpts / "checkpoint-4"

    # what a save without the staging folder left (an earlier version, a full disk): checkpoint-6 under its final
    # name, its optimizer.pt empty, a trainer_state.json beside it
    shutil.copytree(half, ckpts / "checkpoint-6")
    shutil.copy(ckpts / "checkpoint-4" / "trainer_state.json", ckpts / "checkpoint-6")
    res = nlpexp(f"resume={run}")
    assert res.code == 0, res.err[-3000:]
    assert "nlpexp: checkpoint-6 is incomplete (optimizer.pt is empty): resuming from checkpoint-4" in res.err
    assert "Traceback" not in res.err
    resumed = json.loads((run / "metrics.json").read_text())
    assert resumed["status"] == "complete" and resumed["resumed_from"].endswith("checkpoint-4")
    assert not (ckpts / ".staging").exists() and not list(ckpts.glob("checkpoint-*"))

    ref = tmp_path / "reference"
    assert nlpexp(*RUN, f"hydra.run.dir={ref}").code == 0
    reference = json.loads((ref / "metrics.json").read_text())
    assert resumed["metrics"] == reference["metrics"]

    # the saved model's config.json names another architecture, its size in saved_files.json made to fit
    best = run / "checkpoints" / "best"
    config = json.loads((best / "config.json").read_text())
    config["architectures"] = ["BertForMaskedLM"]
    (best / "config.json").write_text(json.dumps(config))
    listed = json.loads((best / MANIFEST).read_text())
    listed["config.json"]["size"] = (best / "config.json").stat().st_size
    (best / MANIFEST).write_text(json.dumps(listed))
    one_line(nlpexp("mode=eval", f"ckpt={run}", f"hydra.run.dir={tmp_path / 'eval'}"), str(best),
                    "config.json is not the file that was saved")


LOOP_JOB = """
import sys, torch
from pathlib import Path
from nlpexp.training import loop


class Regression:
    unit = "rows"

    def __init__(self):
        gen = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(16, 3, generator=gen), torch.randn(16, generator=gen)
        self.model = torch.nn.Linear(3, 1)
        torch.nn.init.zeros_(self.model.weight)
        torch.nn.init.zeros_(self.model.bias)

    def batches(self, epoch):
        order = loop.seeded_order(16, 1, epoch)
        return [order[i:i + 2] for i in range(0, 16, 2)]

    def units(self, batch):
        return len(batch)

    def loss_sum(self, batch):
        return ((self.model(self.x[batch]).squeeze(-1) - self.y[batch]) ** 2).sum()


SETTINGS = loop.Settings(epochs=2, batch_size=2, lr=0.1, save_steps=2)
if __name__ == "__main__":
    loop.fit(Regression(), SETTINGS, "cpu", run_dir=Path(sys.argv[1]))
"""


def test_a_loop_checkpoint_killed_mid_write_is_skipped_and_resume_ends_with_the_uninterrupted_weights(tmp_path,
                                                                                                      capsys):
    script = tmp_path / "job.py"
    script.write_text(KILL_INSIDE_SAVE.format(folder="checkpoint-6", file="optimizer.safetensors") + LOOP_JOB)
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(script), str(run)], capture_output=True, text=True, timeout=120,
                          check=False, env=ENV)
    assert proc.returncode == -9, proc.stderr[-3000:]
    ckpts = run / "checkpoints"
    (half,) = ckpts.glob("checkpoint-6.tmp-*")
    assert (half / "optimizer.safetensors").stat().st_size == 0  # killed mid-write, never renamed
    assert sorted(p.name for p in ckpts.iterdir() if p != half) == ["checkpoint-2", "checkpoint-4"]

    job: dict = {}
    exec(compile(LOOP_JOB, "job", "exec"), job)
    cfg = runs.resume_point(OmegaConf.create({}), run)
    assert cfg.resume_from == str(ckpts / "checkpoint-4")
    assert not half.exists()  # the killed save's temporary folder is cleared
    resumed, reference = job["Regression"](), job["Regression"]()
    _, info = loop.fit(resumed, job["SETTINGS"], "cpu", run_dir=run, resume_from=cfg.resume_from)
    loop.fit(reference, job["SETTINGS"], "cpu")
    assert info["train_steps"] == 16
    assert torch.equal(resumed.model.weight, reference.model.weight)
    assert torch.equal(resumed.model.bias, reference.model.bias)


def test_resume_falls_back_past_incomplete_checkpoints_in_one_line(tmp_path, capsys):
    ckpts = tmp_path / "checkpoints"
    for step in (2, 4, 6, 8):
        with write_dir(ckpts / f"checkpoint-{step}") as tmp:
            (tmp / "loop_state.json").write_text("{}")
            (tmp / "optimizer.safetensors").write_bytes(b"x" * 100)
    (ckpts / "checkpoint-8" / "optimizer.safetensors").write_bytes(b"y" * 100)  # same size, other bytes
    os.truncate(ckpts / "checkpoint-6" / "optimizer.safetensors", 10)
    (ckpts / "checkpoint-10.tmp-99").mkdir()  # a killed save's temporary folder: never a candidate
    cfg = runs.resume_point(OmegaConf.create({}), tmp_path)
    err = capsys.readouterr().err
    assert cfg.resume_from == str(ckpts / "checkpoint-4")
    assert err.strip() == ("nlpexp: checkpoint-8 is incomplete (optimizer.safetensors is not the file that was saved "
                           "(its sha256 differs)) (and checkpoint-6): resuming from checkpoint-4")
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-2", "checkpoint-4"]  # written again by training
    for folder in ckpts.iterdir():
        (folder / "optimizer.safetensors").unlink()
    cfg = runs.resume_point(OmegaConf.create({}), tmp_path)
    assert cfg.resume_from is None
    assert "checkpoint-4 is incomplete (optimizer.safetensors is missing) (and checkpoint-2): no complete " \
           "checkpoint: starting again from the beginning" in capsys.readouterr().err


def test_a_checkpoint_of_an_earlier_version_without_a_list_is_taken_unless_a_file_is_empty(tmp_path):
    old = tmp_path / "checkpoints" / "checkpoint-3"
    old.mkdir(parents=True)
    (old / "trainer_state.json").write_text("{}")
    (old / "optimizer.pt").write_bytes(b"x")
    assert runs.latest_checkpoint(tmp_path) == old
    (old / "optimizer.pt").write_bytes(b"")
    skipped: list = []
    assert runs.latest_checkpoint(tmp_path, skipped) is None
    assert skipped == [(old, "optimizer.pt is empty")]


def test_an_edited_or_swapped_file_is_one_line_naming_it(tmp_path):
    folder = tmp_path / "best"
    with write_dir(folder) as tmp:
        (tmp / "config.json").write_text('{"architectures": ["BertForSequenceClassification"]}')
        (tmp / "tokenizer.json").write_text('{"vocab": {"a": 0}}')
    listed = json.loads((folder / MANIFEST).read_text())
    assert set(listed["config.json"]) == {"size", "sha256"}
    check_files(folder)
    (folder / "tokenizer.json").write_text('{"vocab": {"b": 0}}')  # another model's, of the same size
    with pytest.raises(UserError, match=r"best: cannot load the saved model \(tokenizer.json is not the file that "
                                        r"was saved \(its sha256 differs\)\)"):
        with loading(folder):
            pass


def test_a_list_of_sizes_of_an_earlier_version_still_loads_and_is_checked_for_sizes(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / MANIFEST).write_text(json.dumps({"config.json": 2}))
    check_files(tmp_path)
    (tmp_path / "config.json").write_text("{ }")
    with pytest.raises(UserError, match=r"config.json has 3 bytes, 2 were written"):
        check_files(tmp_path)


@pytest.mark.parametrize("entry", ["../x", "/etc/passwd", "sub/../../x"])
def test_an_entry_outside_the_folder_is_refused_without_being_looked_at(tmp_path, monkeypatch, entry):
    folder = tmp_path / "best"
    with write_dir(folder) as tmp:
        (tmp / "config.json").write_text("{}")
    (tmp_path / "x").write_text("{}")  # there, of the listed size: only the refusal can fail the check
    listed = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**listed, entry: {"size": 2, "sha256": "0" * 64}}))
    looked: list = []
    stat = os.stat
    monkeypatch.setattr(os, "stat", lambda path, *a, **k: looked.append(str(path)) or stat(path, *a, **k))
    with pytest.raises(UserError, match=rf"best: cannot load the saved model \(saved_files.json names "
                                        rf"'{entry}', a path outside the folder\)"):
        check_files(folder)
    assert not [p for p in looked if Path(p).name in ("x", "passwd")]
