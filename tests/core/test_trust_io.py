"""Runs you can trust, round 2: a run stopped by Ctrl-C or SIGTERM says so and resumes; a FIFO, device or socket
named as a file is refused before anything opens it; every size has an upper bound; an output file is written
whole or not at all; a CSV's duplicate header and a UTF-8 file's stray latin-1 line are refused in one line."""
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from refusals import one_line  # tests/ is on sys.path

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


# -- 1. SIGINT / SIGTERM ------------------------------------------------------------------------------------------
# parks the training at step 3, checkpoint-2 saved (in the main thread, as a long step would), so the signal arrives
# mid-training however fast or slow the machine is
PARK = """
import sys, time
from pathlib import Path
from transformers import Trainer
from nlpexp.cli import main

marker = Path(sys.argv.pop(1))
step = Trainer.training_step
def park_at_step_3(self, *args, **kwargs):  # checkpoint-2 is saved (and sealed) before step 3 begins
    if self.state.global_step == 2 and not marker.exists():
        marker.write_text("parked")
        time.sleep(120)
    return step(self, *args, **kwargs)
Trainer.training_step = park_at_step_3
sys.argv = ["nlpexp", *sys.argv[1:]]
main()
"""

# a small model (built from model.small): the signal handling is the same for every model the Trainer trains
RUN = ["+smoke=true", "model=bert", "trainer.epochs=2", "trainer.max_steps=-1", "trainer.save_steps=2"]


def default_sigint() -> None:
    """The child starts as from a terminal: SIGINT at its default and not blocked, so Python turns it into
    KeyboardInterrupt. Both are inherited: a process started with SIGINT ignored or blocked (as this pytest worker
    may be, after another test's library ran in it) never sees Ctrl-C; in the full suite the parked run then
    trained to the end and exited 0."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_ctrl_c_mid_training_records_interrupted_exits_130_and_resume_finishes_it(nlpexp, tmp_path):
    script, marker, run = tmp_path / "park.py", tmp_path / "parked", tmp_path / "run"
    script.write_text(PARK)
    proc = subprocess.Popen([sys.executable, str(script), str(marker), *RUN, f"hydra.run.dir={run}"], cwd=tmp_path,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=default_sigint)
    try:
        deadline = time.time() + 240
        while not marker.exists():
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:] if proc.poll() else ""
            time.sleep(0.05)
        assert metrics(run)["status"] == "running"
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole process group
        _, err = proc.communicate(timeout=200)  # a loaded machine (CI: the full suite, 2 cores) is slow to stop
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and len(lines) == 1, err[-3000:]
    assert lines[0] == f"nlpexp: interrupted (SIGINT) after checkpoint-2: resume={run} continues it"
    stopped = metrics(run)
    assert stopped["status"] == "interrupted" and stopped["signal"] == "SIGINT"
    assert stopped["last_checkpoint"].endswith("checkpoint-2")
    from nlpexp.runs import folder_state, lock_owner

    assert lock_owner(run) is None and folder_state(run)[0] == "unfinished"  # the lock went with the process
    res = nlpexp(f"resume={run}")
    assert res.code == 0, res.err[-3000:]
    done = metrics(run)
    assert done["status"] == "complete" and done["resumed_from"].endswith("checkpoint-2")


def test_sigterm_records_interrupted_exits_143_in_one_line(nlpexp, tmp_path, monkeypatch):
    from nlpexp import runtime

    seed = runtime.seed_everything

    def seed_then_terminated(value):  # a scheduler's SIGTERM once the run has started
        seed(value)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises in the main thread before this ends

    monkeypatch.setattr(runtime, "seed_everything", seed_then_terminated)
    run = tmp_path / "run"
    started = time.time()
    res = nlpexp("task=posenc", "+smoke=true", f"hydra.run.dir={run}")
    assert time.time() - started < 5
    lines = [line for line in res.err.strip().splitlines() if line.strip()]
    assert res.code == 143, res.err[-2000:]
    assert "Traceback" not in res.err and len(lines) == 1, res.err
    assert lines[0] == f"nlpexp: interrupted (SIGTERM) before its first checkpoint: resume={run} continues it"
    assert metrics(run)["status"] == "interrupted"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler lives only while the run does
    from nlpexp.runs import folder_state

    assert folder_state(run)[0] == "unfinished"
    monkeypatch.setattr(runtime, "seed_everything", seed)
    res = nlpexp(f"resume={run}")
    assert res.code == 0, res.err[-2000:]
    assert metrics(run)["status"] == "complete"


# -- 2. FIFOs, devices, sockets -----------------------------------------------------------------------------------
@pytest.fixture
def fifo(tmp_path):
    """A FIFO; should anything open it for reading, a writer turns up after 20 s, so a regression fails the test
    instead of hanging it."""
    path = tmp_path / "pipe.csv"
    os.mkfifo(path)
    threading.Thread(target=lambda: (time.sleep(20), open(path, "w").close()), daemon=True).start()
    return path


def test_special_files_are_named_without_being_opened(tmp_path, fifo):
    from nlpexp.errors import UserError
    from nlpexp.inputs.readers import read_labelled_file, read_text, read_texts, special_file_error, text_file_error

    assert special_file_error(fifo) == f"{fifo} is a FIFO (named pipe), not a regular file"
    assert special_file_error("/dev/null") == "/dev/null is a character device, not a regular file"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "s.sock"))
    try:
        assert "is a socket, not a regular file" in special_file_error(tmp_path / "s.sock")
    finally:
        sock.close()
    (tmp_path / "ok.csv").write_text("text,label\na,b\n")
    assert special_file_error(tmp_path / "ok.csv") is None and special_file_error(tmp_path) is None
    assert "is a FIFO" in text_file_error(fifo)
    for read in (read_text, read_texts, read_labelled_file):
        with pytest.raises(UserError, match="is a FIFO"):
            read(fifo)


@pytest.mark.parametrize("args", [
    ["data.path={fifo}"],
    ["task=novel", "model=transformer", "data.path={fifo}"],
    ["task=novel", "model=transformer", "data.path=[{ok},{fifo}]"],
    ["task=story", "model=transformer", "data.path={ok}", "data.test_path={fifo}", "data.test_size=null"],
    ["task=embedding", "model=doc2vec", "data.path={fifo}"],
    ["mode=predict", "ckpt={tmp}", "input={fifo}"],
    ["task=embedding", "model=doc2vec", "mode=apply", "ckpt={tmp}", "input={fifo_npy}"],
    ["task=emotion", "eval_on=[{fifo}]"],
])
def test_a_fifo_named_anywhere_is_refused_in_one_line(nlpexp, tmp_path, fifo, args):
    (tmp_path / "ok.txt").write_text("a story.\n" * 20)
    os.mkfifo(tmp_path / "pipe.npy")
    values = {"fifo": fifo, "ok": tmp_path / "ok.txt", "tmp": tmp_path, "fifo_npy": tmp_path / "pipe.npy"}
    started = time.time()
    line = one_line(nlpexp(*[a.format(**values) for a in args]))
    assert "is a FIFO (named pipe), not a regular file" in line
    assert time.time() - started < 15
    assert not (tmp_path / "outputs").exists()


def test_dev_stdin_as_data_is_refused(nlpexp, tmp_path):
    """/dev/stdin is the terminal or a pipe (here /dev/null): never read as a data file."""
    line = one_line(nlpexp("data.path=/dev/stdin"))
    assert "/dev/stdin is a" in line and "not a regular file" in line


# -- 3. upper bounds ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, expected", [
    (["task=novel", "model=transformer", "mode=generate", "length=99999999999", "prompt=x"],
     "length must be an integer in [1, 100000] (got 99999999999)"),
    (["task=novel", "model=transformer", "generate.num_beams=1000"],
     "generate.num_beams must be in (0, 64] (got 1000)"),
    (["task=story", "model=gpt2", "generate.max_new_tokens=10000000"],
     "generate.max_new_tokens must be in (0, 100000] (got 10000000)"),
    (["trainer.batch_size=100000000"], "trainer.batch_size must be in (0, 65536] (got 100000000)"),
    (["trainer.epochs=10000000"], "trainer.epochs must be in [0, 100000] (got 10000000)"),
    (["trainer.max_length=5000000"], "trainer.max_length must be in (0, 100000] (got 5000000)"),
    (["trainer.max_steps=99999999999"], "trainer.max_steps must be -1 (no cap) or an integer in [1, 1000000000]"),
    (["task=novel", "model=transformer", "task.seq_len=10000000"],
     "task.seq_len must be in (0, 100000] (got 10000000)"),
    (["task=novel", "model=transformer", "generate.top_k=99999999"],
     "generate.top_k must be in [0, 1000000] (got 99999999)"),
    (["task=story", "model=gpt2", "generate.num_samples=1000000"],
     "generate.num_samples must be in (0, 10000] (got 1000000)"),
    (["task=embedding", "model=minilm", "task.finetune.epochs=10000000"],
     "task.finetune.epochs must be in (0, 100000] (got 10000000)"),
    (["model=minilm", "model.small.hidden_size=10000000"],
     "model.small.hidden_size must be in (0, 65536] (got 10000000)"),
])
def test_every_size_has_an_upper_bound(args, expected):
    from nlpexp.config.validate import compose
    from nlpexp.config.validate import config_errors

    errors = config_errors(compose(args), args)
    assert any(expected in e for e in errors), errors


def test_a_huge_length_is_refused_before_anything_runs(nlpexp, tmp_path):
    line = one_line(nlpexp("task=novel", "model=transformer", "mode=generate", "length=99999999999", "prompt=x",
                           f"ckpt={tmp_path}"))
    assert "length must be an integer in [1, 100000] (got 99999999999)" in line


# -- 4. output= on a full disk ------------------------------------------------------------------------------------
def test_atomic_output_leaves_nothing_half_written(tmp_path):
    from nlpexp.errors import UserError
    from nlpexp.inputs.readers import atomic_output

    out = tmp_path / "out.csv"
    out.write_text("the earlier file\n")
    with pytest.raises(UserError, match=f"no space left on device while writing {out}"):
        with atomic_output(out) as handle:
            handle.write("half a ro")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert out.read_text() == "the earlier file\n" and os.listdir(tmp_path) == ["out.csv"]
    with atomic_output(out) as handle:
        handle.write("a,b\n")
    assert out.read_text() == "a,b\n" and os.listdir(tmp_path) == ["out.csv"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from saved_runs import train  # tests/ is on sys.path

    return train(tmp_path_factory.mktemp("trained"), "run", "model=bert")  # small: predict's speed


def test_predict_on_a_full_disk_names_the_output_and_leaves_no_file(nlpexp, tmp_path, trained, monkeypatch):
    import pandas as pd

    texts, out = tmp_path / "texts.txt", tmp_path / "preds.csv"
    texts.write_text("shares fell\nprofit rose\n")
    to_csv = pd.DataFrame.to_csv

    def full_disk(self, handle, *args, **kwargs):  # the first row written, then the disk is full
        to_csv(self.head(1), handle, *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    line = one_line(nlpexp("mode=predict", f"ckpt={trained}", f"input={texts}", f"output={out}"))
    assert line == f"nlpexp: error: no space left on device while writing {out}: nothing written (free some " \
                   "space, or give output= on another disk)"
    assert sorted(os.listdir(tmp_path)) == ["texts.txt"]  # no truncated CSV, no temporary file
    assert not (trained / "predict").exists()  # the predict run's own folder went too
    monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv)
    res = nlpexp("mode=predict", f"ckpt={trained}", f"input={texts}", f"output={out}")
    assert res.code == 0, res.err[-2000:]
    assert list(pd.read_csv(out)["text"]) == ["shares fell", "profit rose"]


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/proc/mounts").exists(), reason="mounting a tmpfs needs root")
def test_predict_into_a_really_full_tmpfs(nlpexp, tmp_path, trained):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(disk)], check=False,
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        texts, out = tmp_path / "texts.txt", disk / "preds.csv"
        texts.write_text("shares fell on weak demand in the quarter\n" * 2000)  # ~85 KB of CSV > 16 KiB
        line = one_line(nlpexp("mode=predict", f"ckpt={trained}", f"input={texts}", f"output={out}"))
        assert f"no space left on device while writing {out}" in line
        assert os.listdir(disk) == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# -- 5. reading user data -----------------------------------------------------------------------------------------
def test_a_duplicated_header_is_refused_naming_the_column(tmp_path):
    from nlpexp.errors import UserError
    from nlpexp.inputs.readers import read_labelled_file

    path = tmp_path / "d.csv"
    path.write_text("text,label,text\nprofit rose,positive,ignored\n")
    with pytest.raises(UserError, match=r"the header names column 'text' twice \(columns 1 and 3\)"):
        read_labelled_file(path)
    tsv = tmp_path / "d.tsv"
    tsv.write_text("text\tlabel\tlabel\nprofit rose\tpositive\tnegative\n")
    with pytest.raises(UserError, match="column 'label' twice"):
        read_labelled_file(tsv)


def test_a_utf8_file_with_one_latin1_line_is_refused_naming_the_line(tmp_path, capsys):
    from nlpexp.errors import UserError
    from nlpexp.inputs.readers import read_labelled_file

    rows = ["text,label", "Gewinn in Malmö stieg,positive"] + ["plain ascii,neutral"] * 55
    path = tmp_path / "mixed.csv"
    path.write_bytes("\n".join(rows).encode("utf-8") + b"\nUmsatz in Z\xfcrich fiel,negative\n")
    with pytest.raises(UserError) as caught:
        read_labelled_file(path)
    assert str(caught.value) == (f"{path} line 58 is not UTF-8 (byte 0xfc at column 12), though its other lines "
                                 "are: save the file as UTF-8")


def test_a_wholly_cp1252_or_latin1_file_still_reads(tmp_path, capsys):
    from nlpexp.inputs.readers import read_labelled_file

    path = tmp_path / "cp.csv"
    path.write_bytes(b"text,label\nIt\x92s up in Z\xfcrich,positive\nplain,neutral\n")
    frame = read_labelled_file(path)
    assert list(frame["label"]) == ["positive", "neutral"] and "Z\u00fcrich" in frame["text"][0]
    assert "is not UTF-8; read as latin-1" in capsys.readouterr().err


def test_a_data_file_nlpexp_may_not_read_is_one_line(tmp_path):
    """chmod 000 (root reads anything: it runs without the capability that lets it)."""
    import shutil

    data = tmp_path / "d.csv"
    data.write_text("text,label\n" + "".join(f"text {i} here,{'ab'[i % 2]}\n" for i in range(40)))
    data.chmod(0)
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("root without setpriv reads any file")
        prefix = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
                  "--bounding-set=-dac_override,-dac_read_search", "--"]
    proc = subprocess.run([*prefix, sys.executable, "-m", "nlpexp", "model=doc2vec", "+smoke=true",
                           f"data.path={data}"], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[0].startswith(f"nlpexp: error: permission denied: {data}")
    assert not (tmp_path / "outputs").exists()


def test_an_output_write_removes_what_a_killed_one_left(tmp_path):
    from nlpexp.inputs.readers import atomic_output

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = tmp_path / f".preds.csv.{dead.stdout.strip()}.tmp"  # kill -9 mid-write: its process is gone
    left.write_text("half")
    live = tmp_path / f".preds.csv.{os.getppid()}.tmp"  # another process still writing: left alone
    live.write_text("busy")
    with atomic_output(tmp_path / "preds.csv") as handle:
        handle.write("text,label\n")
    assert (tmp_path / "preds.csv").read_text() == "text,label\n"
    assert not left.exists() and live.exists()
