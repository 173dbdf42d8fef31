"""Sweeps that survive and scale: a persistent Optuna study fed by several sweeper processes, a sweep run again
into its folder (finished jobs reused, killed ones resumed), one GPU set per job side by side, data parallel
inside a trial. Every command runs as a subprocess, as a user or a cluster runs it."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from killer import PARK_AFTER_FIRST_TRAINER_CHECKPOINT  # tests/ is on sys.path

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")


def nlpexp(cwd: Path, *args, env=None, wait=True):
    cmd = [sys.executable, "-m", "nlpexp", *args]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("NLPEXP_")}, **(env or {})}
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def ok(proc):
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def study(storage: str, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=storage)


def wait_for_checkpoint(folder: Path, proc, seconds: int = 240) -> None:
    deadline = time.time() + seconds
    while not list((folder / "checkpoints").glob("checkpoint-*/trainer_state.json")):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline, "no checkpoint written in time"
        time.sleep(0.3)


def test_two_sweeper_processes_feed_one_study_and_a_rerun_continues_it(tmp_path):
    """The issue's check: two concurrent Optuna sweeps on one new SQLite study (a race to create it), 2 trials
    each, end with 4 trials; the first run again into its folder adds trials 2 and 3 there."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    common = ["-m", "hparams_search=finsent_optuna", "+smoke=true", "model=doc2vec", "hydra.sweeper.n_trials=2",
              f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=s"]
    procs = [nlpexp(tmp_path, *common, f"hydra.sweep.dir=w{i}", wait=False) for i in (1, 2)]
    for proc in procs:
        out = proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, out[-3000:]
    trials = study(storage, "s").trials
    assert len(trials) == 4 and all(t.state.name == "COMPLETE" for t in trials)
    assert sorted(p.name for p in (tmp_path / "w1").iterdir() if p.is_dir()) == ["0", "1"]
    out = ok(nlpexp(tmp_path, *common, "hydra.sweep.dir=w1")).stdout
    assert "new trials start at 2" in out
    assert len(study(storage, "s").trials) == 6
    assert sorted(p.name for p in (tmp_path / "w1").iterdir() if p.is_dir()) == ["0", "1", "2", "3"]
    assert all(metrics(tmp_path / "w1" / n)["status"] == "complete" for n in "0123")


def test_creating_one_study_from_four_processes_at_once_never_fails(tmp_path):
    storage = f"sqlite:///{tmp_path / 'race.db'}"
    script = ("import sys; sys.path.insert(0, %r); from hydra_plugins.nlpexp_optuna_sweeper import create_study_once; "
              "print(create_study_once('race', %r, ['maximize']).study_name)") % (str(Path.cwd()), storage)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [err[-1500:] for _, err in outs]
    assert all(out.strip() == "race" for out, _ in outs)


def test_a_finished_sweep_run_again_retrains_nothing_and_another_sweep_is_refused(tmp_path):
    args = ["-m", "+smoke=true", "model=doc2vec,bert", "hydra.sweep.dir=s"]
    ok(nlpexp(tmp_path, *args))
    before = {n: (tmp_path / "s" / n / "metrics.json").read_bytes() for n in "01"}
    stamps = {n: (tmp_path / "s" / n / "metrics.json").stat().st_mtime_ns for n in "01"}
    res = ok(nlpexp(tmp_path, *args))
    assert res.stdout.count("complete with the same overrides, reused") == 2
    assert "jobs 0, 1 complete (reused)" in res.stderr
    assert {n: (tmp_path / "s" / n / "metrics.json").read_bytes() for n in "01"} == before
    assert {n: (tmp_path / "s" / n / "metrics.json").stat().st_mtime_ns for n in "01"} == stamps
    from nlpexp.report import tables as report

    assert len(report.collect_runs(tmp_path / "s")) == 2  # one row per job
    saved = (tmp_path / "s" / "1" / ".hydra" / "overrides.yaml").read_text()
    res = nlpexp(tmp_path, "-m", "+smoke=true", "model=doc2vec,bert_fc", "hydra.sweep.dir=s")
    assert res.returncode == 2 and "holds another sweep: job 1" in res.stderr.strip().splitlines()[-1]
    assert (tmp_path / "s" / "1" / ".hydra" / "overrides.yaml").read_text() == saved  # nothing rewritten
    res = nlpexp(tmp_path, *args[:-1], "resume=s/1")
    assert res.returncode == 2 and "a sweep run again with the same command" in res.stderr


@pytest.mark.parametrize("launcher", ["basic", "submitit_local"])
def test_a_sweep_killed_mid_job_finishes_on_rerun_with_that_job_resumed(tmp_path, launcher):
    """basic: the sweep's process is killed while job 1 trains; submitit_local: job 1's own process is (a
    preempted job). Run again, job 0 is reused and job 1 continues from its last checkpoint in its folder.
    A small model (built from model.small), and job 1 parked after its first checkpoint until the kill (a hook on
    PYTHONPATH, first run only): a run of seconds is still killed in the middle."""
    args = ["-m", *([] if launcher == "basic" else [f"hydra/launcher={launcher}"]), "+smoke=true", "model=bert",
            "seed=1,2", "trainer.max_steps=-1", "trainer.epochs=4", "hydra.sweep.dir=k"]
    job = tmp_path / "k" / "1"
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(PARK_AFTER_FIRST_TRAINER_CHECKPOINT)
    hook = os.pathsep.join(filter(None, [str(tmp_path / "hook"), os.environ.get("PYTHONPATH")]))
    proc = nlpexp(tmp_path, *args, wait=False, env={"PYTHONPATH": hook, "PARK_RUN": str(job)})
    wait_for_checkpoint(job, proc)
    if launcher == "basic":
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        os.kill(metrics(job)["pid"], signal.SIGKILL)
    proc.communicate(timeout=600)  # a hang guard: submitit's sweep first waits for job 0, slow on a busy machine
    assert metrics(job)["status"] == "running"  # the killed job: visibly unfinished
    job0 = (tmp_path / "k" / "0" / "metrics.json").read_bytes()
    res = ok(nlpexp(tmp_path, *args))
    logs = res.stdout + "".join(p.read_text() for p in (tmp_path / "k").rglob("*_log.out"))
    assert "this job stopped before it finished: resuming it in its folder" in logs
    assert "resuming from" in logs
    assert metrics(job)["status"] == "complete" and "checkpoint-" in metrics(job)["resumed_from"]
    assert (tmp_path / "k" / "0" / "metrics.json").read_bytes() == job0


@pytest.mark.parametrize("launcher,nproc,expected", [("joblib", 1, {"0", "1"}),
                                                     ("submitit_local", 2, {"0,1", "2,3"})])
def test_jobs_side_by_side_each_get_their_own_gpus(tmp_path, launcher, nproc, expected):
    """Simulated: four GPUs faked through CUDA_VISIBLE_DEVICES (the CPU build of torch ignores it): joblib's two
    workers take one GPU each, submitit_local's two jobs with trainer.nproc=2 two each."""
    model = "doc2vec" if nproc == 1 else "bert"
    extra = [] if nproc == 1 else ["trainer.nproc=2"]
    ok(nlpexp(tmp_path, "-m", f"hydra/launcher={launcher}", "+smoke=true", f"model={model}", "seed=1,2", *extra,
              "hydra.sweep.dir=g", env={"CUDA_VISIBLE_DEVICES": "0,1,2,3"}))
    given = {metrics(tmp_path / "g" / n).get("cuda_visible_devices") for n in "01"}
    assert given == expected


def test_an_optuna_trial_trains_data_parallel_in_one_folder(tmp_path):
    ok(nlpexp(tmp_path, "-m", "hparams_search=finsent_optuna", "+smoke=true", "model=bert", "trainer.nproc=2",
              "hydra.sweeper.n_trials=1", "hydra.sweep.dir=o"))
    assert sorted(p.name for p in (tmp_path / "o").iterdir() if p.is_dir()) == ["0"]
    m = metrics(tmp_path / "o" / "0")
    assert m["status"] == "complete" and m["processes"] == 2
    assert any(o.startswith("trainer.lr=") for o in m["overrides"])  # the trial's parameters, given to every rank
