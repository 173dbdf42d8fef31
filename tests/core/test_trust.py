"""Runs you can trust: a run folder never runs code, is owned by one run at a time, is complete or visibly not;
bad command lines and faults end in one line, exit 2, with nothing half-written passing for complete."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from refusals import one_line  # tests/ is on sys.path

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def start(*args, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nlpexp", *args], cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for(condition, timeout: float = 240, every: float = 0.05) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(every)


def status(folder: Path) -> str | None:
    try:
        return json.loads((folder / "metrics.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


@pytest.mark.parametrize("args, expected", [
    (["hello"], "'hello' is not a setting: write key=value"),
    (["--foo"], "unknown flag --foo"),
    (["--lr=3"], "unknown flag --lr"),
    (["task=finsent", "hydra.run.dir={file}/run"], "is a file, not a folder"),
])
def test_bad_command_lines_are_one_line(nlpexp, tmp_path, args, expected):
    (tmp_path / "afile").write_text("x")
    res = nlpexp(*[a.format(file=tmp_path / "afile") for a in args])
    assert expected in one_line(res)
    assert not (tmp_path / "outputs").exists()


def test_resume_never_replays_hydra_overrides(nlpexp, tmp_path):
    """A crafted .hydra/overrides.yaml naming a Hydra callback (code Hydra would import and call) is refused."""
    run, marker = tmp_path / "crafted", tmp_path / "marker"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(
        "- +smoke=true\n- +hydra.callbacks.x._target_=shutil.copyfile\n"
        f"- +hydra.callbacks.x.src={__file__}\n- +hydra.callbacks.x.dst={marker}\n")
    line = one_line(nlpexp(f"resume={run}"))
    assert "not a task setting" in line and "hydra.callbacks.x._target_" in line
    assert not marker.exists()


def test_one_run_per_folder_kill_leaves_it_visibly_unfinished_and_resume_takes_it_over(nlpexp, tmp_path):
    """A second run into a live folder is refused; a run killed while saving its final model leaves a folder that
    eval/predict refuse and a fresh run will not reuse; resume= takes the stale lock over and finishes it. A small
    model (built from model.small), parked in the middle of that save until the kill (tests/killer.py)."""
    from killer import PARK_INSIDE_FINAL_SAVE  # tests/ is on sys.path

    run, script = tmp_path / "run", tmp_path / "park.py"
    script.write_text(PARK_INSIDE_FINAL_SAVE)
    first = subprocess.Popen([sys.executable, str(script), "+smoke=true", "model=bert", f"hydra.run.dir={run}",
                              "trainer.save_steps=2"], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_for(lambda: status(run) == "running")
        assert "is in use" in one_line(nlpexp("+smoke=true", "model=bert", f"hydra.run.dir={run}"))
        best = run / "checkpoints"
        wait_for(lambda: any(p.name.startswith("best") for p in best.glob("*")) if best.exists() else False,
                 every=0.01)  # the final save has begun
        os.killpg(first.pid, signal.SIGKILL)
    finally:
        first.wait()
    assert status(run) != "complete"
    assert "not a finished run" in one_line(nlpexp("mode=eval", f"ckpt={run}"))
    assert "not a finished run" in one_line(nlpexp("mode=predict", f"ckpt={run}", "text=shares fell"))
    assert "holds an unfinished run" in one_line(nlpexp("+smoke=true", "model=bert", f"hydra.run.dir={run}"))
    res = nlpexp(f"resume={run}")
    assert res.code == 0, res.err[-3000:]
    assert status(run) == "complete"
    assert Path(json.loads((run / "metrics.json").read_text())["best_checkpoint"]).is_dir()
    res = nlpexp("mode=eval", f"ckpt={run}")
    assert res.code == 0, res.err[-3000:]


def test_saved_run_of_another_task_or_mode_is_named(nlpexp, tmp_path):
    run = tmp_path / "posenc"
    res = nlpexp("task=posenc", "+smoke=true", f"hydra.run.dir={run}")
    assert res.code == 0, res.err[-2000:]
    assert "is a task=posenc run" in one_line(nlpexp("task=finsent", "mode=eval", f"ckpt={run}"))
    assert "no such folder" in one_line(nlpexp("task=finsent", "mode=eval", f"ckpt={tmp_path}/missing"))
    assert "is not a run folder" in one_line(nlpexp("task=finsent", "mode=eval", f"ckpt={tmp_path}"))


def test_secret_overrides_never_reach_a_saved_file(nlpexp, tmp_path):
    run = tmp_path / "run"
    res = nlpexp("task=posenc", "+smoke=true", f"hydra.run.dir={run}", "+hydra.job.env_set.HF_TOKEN=hf_s3cr3t_value",
                 "logger=tensorboard")
    assert res.code == 0, res.err[-2000:]
    files = [p for p in run.rglob("*") if p.is_file()]
    assert any(p.name == "hydra.yaml" for p in files)
    assert [p for p in files if b"hf_s3cr3t_value" in p.read_bytes()] == []
    assert "HF_TOKEN=REDACTED" in (run / ".hydra" / "hydra.yaml").read_text()


def test_secret_keys_are_told_apart_from_settings():
    from nlpexp.secrets import is_secret_key, redact

    assert all(is_secret_key(k) for k in ("hydra.job.env_set.HF_TOKEN", "WANDB_API_KEY", "+db.password", "api_key"))
    assert not any(is_secret_key(k) for k in ("generate.max_new_tokens", "model.tokenizer", "keep_checkpoints"))
    assert redact({"x": ["a.hf_token=1", "b=2"], "secret": "s"}) == {"x": ["a.hf_token=REDACTED", "b=2"],
                                                                    "secret": "REDACTED"}
    # a study's storage URL keeps its user, host and database, not its password
    saved = {"storage": "postgresql://me:pw@db/optuna", "o": ["hydra.sweeper.storage=mysql://me:p%40ss@h/s"]}
    assert redact(saved) == {"storage": "postgresql://me:REDACTED@db/optuna",
                             "o": ["hydra.sweeper.storage=mysql://me:REDACTED@h/s"]}
    assert redact(["postgresql://me@db/optuna", "sqlite:///optuna.db"]) == ["postgresql://me@db/optuna",
                                                                           "sqlite:///optuna.db"]


def _can_mount_tmpfs(folder: Path) -> str | None:
    if os.geteuid() != 0:
        return "needs root to mount a small tmpfs"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        return "mount -t tmpfs is not permitted here"
    return None


def test_full_disk_is_one_line_and_the_folder_says_failed(nlpexp, tmp_path):
    disk = tmp_path / "disk"
    why = _can_mount_tmpfs(disk)
    if why:
        pytest.skip(why)
    try:
        res = nlpexp("+smoke=true", f"hydra.run.dir={disk}/run")
        assert res.code == 2 and "Traceback" not in res.err, res.err[-3000:]
        last = res.err.strip().splitlines()[-1]
        assert last.startswith("nlpexp: error: no space left on device while writing "), last
        assert status(disk / "run") == "failed"
        assert not (disk / "run" / "checkpoints" / "best").exists() or status(disk / "run") != "complete"
        assert "not a finished run" in one_line(nlpexp("mode=eval", f"ckpt={disk}/run"))
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_killing_a_joblib_sweep_stops_its_workers(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    parent = start("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=1,2,3,4,5", "+smoke=true",
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    wait_for(lambda: status(sweep / "0") == "running" or status(sweep / "1") == "running")
    parent.kill()  # the sweep's own process only: its workers must notice
    parent.wait()
    time.sleep(5)
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) <= 2, jobs  # nothing new started once the parent was gone
    assert all(status(sweep / j) in ("failed", "complete") for j in jobs), [status(sweep / j) for j in jobs]
    from nlpexp.watchdog import left_behind

    wait_for(lambda: left_behind(parent.pid) == [], timeout=20, every=0.5)  # the reaper stopped the rest
