"""What a run prints: the config tree at its start (print_config=diff|full|none), one progress display per phase
(a bar on a terminal, plain lines elsewhere), a line per evaluation, and none of the libraries' own output."""
import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from nlpexp.report.console import Epochs, Progress, config_tree


def cfg(**over):
    base = {"task": {"name": "finsent"}, "model": {"name": "bert", "pretrained": "x"}, "seed": 42,
            "trainer": {"lr": 2e-5, "epochs": 4}, "data": {"path": None}}
    return OmegaConf.merge(OmegaConf.create(base), OmegaConf.create(over))


def test_the_tree_shows_only_what_differs_grouped_by_section():
    text = config_tree(cfg(trainer={"lr": 1e-4}, seed=1, data={"path": "a.csv"}), cfg())
    lines = text.splitlines()
    assert lines[0].startswith("config: task=finsent model=bert, what differs")
    assert [line.split()[0] for line in lines[1:]] == ["(top)", "data", "trainer"]
    assert "seed=1" in lines[1] and "path=a.csv" in lines[2] and lines[3].split()[1:] == ["lr=0.0001"]
    assert "epochs" not in text and "pretrained" not in text


def test_full_shows_every_key_and_no_change_says_so():
    full = config_tree(cfg(), None)
    assert "epochs=4" in full and "pretrained=x" in full and "what differs" not in full
    assert config_tree(cfg(), cfg()) == "config: the defaults of task=finsent model=bert (print_config=full shows them)"


def test_secrets_and_long_values_are_not_printed_whole():
    text = config_tree(cfg(model={"api_key": "sk-123"}, data={"path": "p" * 200}), cfg())
    assert "sk-123" not in text and "api_key=REDACTED" in text
    assert max(len(line) for line in text.splitlines()) < 120


def test_a_run_prints_its_diff_at_the_start_and_none_prints_nothing(nlpexp):
    res = nlpexp("+smoke=true", "model=doc2vec", "model.epochs=3")
    assert res.code == 0, res.err[-2000:]
    first = res.out.splitlines()[:6]
    assert first[0].startswith("config: task=finsent model=doc2vec") and any(
        line.split()[:2] == ["model", "epochs=3"] for line in first)
    res = nlpexp("+smoke=true", "model=doc2vec", "print_config=none")
    assert res.code == 0 and "config:" not in res.out
    res = nlpexp("+smoke=true", "model=doc2vec", "print_config=all")
    assert res.code == 2 and "print_config must be diff, full or none" in res.err


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_off_a_terminal_a_phase_prints_a_line_at_each_tenth_and_every_30_seconds(capsys):
    clock = Clock()
    bar = Progress(200, "train", mode="plain", clock=clock)
    for _ in range(200):
        clock.now += 0.01
        bar.update(1, loss=0.5, lr=2e-5)
    bar.close()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10 and lines[0].startswith("train  20/200  10%  loss 0.5  lr 2.00e-05")
    assert lines[-1].startswith("train  200/200 100%") and "left" not in lines[-1]
    slow = Progress(1000, "decode", every=None, mode="plain", clock=clock)  # a short phase: only the 30 s lines
    for _ in range(1000):
        clock.now += 0.1
        slow.update(1)
    slow.close()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0].startswith("decode  300/1000  30%") and "~1:10 left" in lines[0]


def test_a_resumed_phase_counts_from_where_it_was_and_off_prints_nothing(capsys):
    bar = Progress(100, "train", initial=50, mode="plain", clock=Clock())
    bar.update(5)
    bar.update(5)
    assert capsys.readouterr().out.splitlines() == ["train  60/100  60%  0:00"]
    quiet = Progress(100, "train", mode="off")
    quiet.update(100)
    assert capsys.readouterr().out == ""


def test_epoch_lines_are_a_table_when_they_fit_and_key_value_lines_when_not(capsys):
    row = {"epoch": 1.0, "step": 39, "train_loss": 1.09712, "val_loss": 1.0831, "val_accuracy": 0.44156,
           "best": True, "early_stop": True}
    wide = Epochs(4, width=120)
    wide(row)
    wide({**row, "epoch": 2.0, "step": 78, "val_accuracy": 0.79221})
    head, first, second = capsys.readouterr().out.splitlines()
    assert head.split() == ["epoch", "step", "train_loss", "val:", "loss", "accuracy"]
    assert first.split() == ["1", "39", "1.097", "1.083", "0.4416"] and second.split()[-1] == "0.7922"
    assert len(head) == len(first) == len(second)  # aligned columns
    narrow = Epochs(4, width=30)
    narrow(row)
    line = capsys.readouterr().out.strip()
    assert line == "epoch 1/4  step 39  train_loss 1.097  val_loss 1.083  val_accuracy 0.4416"


def test_labels_a_font_cannot_draw_are_drawn_by_index():
    from nlpexp.report.metrics import drawable

    assert drawable(["negative", "positive"]) == (["negative", "positive"], None, "")
    shown, family, note = drawable(["负面", "正面"])
    assert (shown, note) == (["#0", "#1"], "labels by index (no CJK font installed)") or family


# MiniLM (its real weights), 2 epochs of 4 steps of 4 texts
SMALL = ["trainer.batch_size=4", "data.max_train_samples=16", "data.max_eval_samples=8"]
RUN = [sys.executable, "-m", "nlpexp", "+smoke=true", "trainer.epochs=2", "trainer.max_steps=-1", *SMALL]


@pytest.mark.slow  # two runs in subprocesses: not in `make test-fast`
def test_a_run_off_a_terminal_prints_plain_lines_and_verbose_brings_the_libraries_back(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           **{k: os.environ[k] for k in ("OMP_NUM_THREADS",) if k in os.environ}}  # the suite's share of the cores
    quiet = subprocess.run(RUN, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    out = quiet.stdout + quiet.stderr
    assert quiet.returncode == 0, out[-3000:]
    assert "\r" not in out and "\x1b[" not in out  # no redraws, no escape codes
    for noise in ("Loading weights", "Writing model shards", "{'loss'", "{'eval_loss'", "it/s]"):
        assert noise not in out, noise
    lines = out.splitlines()
    assert any(line.startswith("train epoch 2/2  8/8 100%  loss ") and "samples/s" in line for line in lines)
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["epoch", "step", "train_loss"])
    assert lines[header + 1].split()[:2] == ["1", "4"] and lines[-8].startswith("finsent / minilm (train)")
    assert lines[-2].startswith("[lo, hi]: 95% bootstrap interval over the test items")  # the end table's last note
    assert len(lines) < 30
    # the smoke run's one epoch of 4 steps is enough to hear the libraries
    loud = subprocess.run([*RUN[:4], *SMALL, "verbose=true"], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=600)
    out = loud.stdout + loud.stderr
    assert loud.returncode == 0 and "Loading weights" in out and "{'loss'" in out
