"""The pieces of persistent and resumable sweeps that need no sweep: GPU shares, job identity, job numbering,
the search space by model, what a data-parallel worker is told."""
import json

import pytest
from omegaconf import OmegaConf

from nlpexp import runs, runtime


@pytest.fixture
def fresh_gpus(monkeypatch):
    """share_gpus writes os.environ itself: every variable it sets is put back afterwards."""
    import os

    names = ("NLPEXP_SWEEP_GPUS", "NLPEXP_JOB_GPUS", "CUDA_VISIBLE_DEVICES")
    before = {name: os.environ.get(name) for name in names}
    for name in names[:2]:
        os.environ.pop(name, None)
    monkeypatch.setattr(runtime, "_GPU_SLOT", {})
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def hydra_cfg(target: str, sweep_dir):
    return OmegaConf.create({"launcher": {"_target_": target}, "sweep": {"dir": str(sweep_dir)}})


def test_side_by_side_jobs_take_gpus_round_robin_by_slot(tmp_path, monkeypatch, fresh_gpus):
    import fcntl

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,7")
    cfg = hydra_cfg("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", tmp_path)
    (tmp_path / ".gpu_slots").mkdir()
    held = open(tmp_path / ".gpu_slots" / "0.lock", "a")  # slot 0 is another live job's
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert runtime.share_gpus(cfg, "auto", nproc=2) == "7,3"  # slot 1: GPUs 2 and 3 of three, round-robin
    assert runtime.share_gpus(cfg, "auto", nproc=2) == "7,3"  # the same process keeps its slot
    held.close()
    assert runtime.visible_gpus() == ["3", "5", "7"]  # the sweep's GPUs, not the job's narrowed list


def test_no_gpu_share_for_cpu_runs_one_gpu_or_other_launchers(tmp_path, monkeypatch, fresh_gpus):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    joblib = hydra_cfg("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", tmp_path)
    slurm = hydra_cfg("hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher", tmp_path)
    assert runtime.share_gpus(joblib, "cpu", 1) is None and runtime.share_gpus(slurm, "cuda", 1) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert runtime.share_gpus(joblib, "cuda", 1) is None


def test_same_overrides_and_what_a_job_folder_holds(tmp_path):
    assert runs.same_overrides(["+smoke=true", "model=bert"], ["model=bert", "+smoke=True"])
    assert not runs.same_overrides(["seed=1"], ["seed=2"])
    job = tmp_path / "0"
    assert runs.earlier_job(job, ["seed=1"]) == (None, None)
    job.mkdir()
    (job / "metrics.json").write_text(json.dumps({"status": "complete", "overrides": ["seed=1"], "metrics": {}}))
    assert runs.earlier_job(job, ["seed=1"])[0] == "complete"
    state, why = runs.earlier_job(job, ["seed=2"])
    assert state == "other" and "holds another job (seed=1)" in why
    (job / "metrics.json").write_text(json.dumps({"status": "running", "pid": 2 ** 22 + 7, "overrides": ["seed=1"]}))
    assert runs.earlier_job(job, ["seed=1"]) == ("resume", None)  # its process is gone
    (job / "metrics.json").write_text(json.dumps({"status": "failed", "error": "x", "overrides": ["seed=1"]}))
    assert runs.earlier_job(job, ["seed=1"]) == ("resume", None)


def test_a_continued_optuna_sweep_numbers_jobs_after_its_folders(tmp_path):
    from hydra_plugins.nlpexp_optuna_sweeper import next_job_number

    assert next_job_number(tmp_path / "absent") == 0
    for name in ("0", "1", "4", ".submitit", "notes"):
        (tmp_path / name).mkdir()
    assert next_job_number(tmp_path) == 5


def test_the_search_space_follows_what_the_model_reads():
    import optuna

    from nlpexp.tasks.classify.search import classify

    for model, keys in (("doc2vec", {"model.vector_size", "model.window", "model.epochs", "model.C"}),
                        ("minilm", {"trainer.lr", "trainer.batch_size", "trainer.epochs", "trainer.weight_decay"})):
        trial = optuna.create_study().ask()
        classify(OmegaConf.create({"model": {"name": model}}), trial)
        assert set(trial.params) == keys


def test_data_parallel_workers_run_the_job_once_with_its_overrides(tmp_path):
    from nlpexp.training.distributed import worker_command

    cmd = worker_command(["trainer.lr=0.001", "hparams_search=finsent_optuna"], tmp_path, 2)
    assert "trainer.lr=0.001" in cmd and "hydra.mode=RUN" in cmd  # an Optuna trial: one run on each rank
