"""Units behind the cluster recipe (K sweepers x SLURM x one study); tests/cluster/ runs them on real PostgreSQL
and SLURM."""
import warnings

import pytest

optuna = pytest.importorskip("optuna")
from hydra_plugins.nlpexp_optuna_sweeper import seed_per_trial  # noqa: E402


def _propose(storage, workers=2, rounds=3):
    """`workers` sweepers with the same sampler seed asking in turn from one study: (trial number, x) each."""
    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    studies = [optuna.create_study(study_name="s", storage=storage, load_if_exists=True,
                                   sampler=seed_per_trial(optuna.samplers.TPESampler(seed=42), 42))
               for _ in range(workers)]
    out = []
    for _ in range(rounds):
        for study in studies:
            trial = study.ask()
            x = trial.suggest_float("x", 0, 1)
            study.tell(trial, x)
            out.append((trial.number, x))
    return out


def test_sweepers_on_one_study_and_a_rerun_propose_distinct_trials(tmp_path):
    storage = f"sqlite:///{tmp_path}/study.db"
    first, again = _propose(storage), _propose(storage)
    assert len({x for _, x in first + again}) == len(first + again)
    # reproducible: a trial's draw depends on (seed, its number) only, here while TPE is in its random start-up
    alone = optuna.create_study(sampler=seed_per_trial(optuna.samplers.TPESampler(seed=42), 42))
    assert [alone.ask().suggest_float("x", 0, 1) for _ in range(3)] == [x for _, x in first[:3]]


def test_unseeded_or_grid_samplers_are_left_alone():
    tpe = optuna.samplers.TPESampler()
    assert seed_per_trial(tpe, None) is tpe
    assert seed_per_trial("a partial", 1) == "a partial"


def test_the_reaper_leaves_slurm_jobs_alone(monkeypatch):
    """sbatch copies NLPEXP_SWEEP_PID into a SLURM job: a dead sweeper's reaper must not stop that job, only
    processes of its own (here: no SLURM job of its own)."""
    import os
    import subprocess
    import sys

    from nlpexp.watchdog import ENV, left_behind

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    env = {**os.environ, ENV: "999999999"}
    sleep = [sys.executable, "-c", "import time; time.sleep(30)"]
    worker = subprocess.Popen(sleep, env=env)
    slurm_job = subprocess.Popen(sleep, env={**env, "SLURM_JOB_ID": "17"})
    try:
        found = left_behind(999999999)
        assert worker.pid in found and slurm_job.pid not in found
        monkeypatch.setenv("SLURM_JOB_ID", "17")  # a sweeper inside SLURM job 17: that job's processes are its own
        assert slurm_job.pid in left_behind(999999999)
    finally:
        worker.kill()
        slurm_job.kill()


def test_the_slurm_launcher_fits_the_partition_or_says_why():
    from omegaconf import OmegaConf

    from hydra_plugins.nlpexp_slurm_launcher import fit

    node = {"name": "cpu", "cpus": 2, "mem_mb": 24000, "gpus": 0, "nodes": 1}
    cpu = OmegaConf.create({"device": {"name": "cpu"}, "trainer": {"nproc": 2}})
    params = {"gpus_per_node": None, "cpus_per_task": None, "tasks_per_node": 1}
    assert fit(params, cpu, node) is None and params["gpus_per_node"] is None and params["cpus_per_task"] == 2
    cuda = OmegaConf.create({"device": {"name": "cuda"}, "trainer": {"nproc": 2}})
    assert "nodes have no GPUs" in fit({"gpus_per_node": None, "cpus_per_task": None}, cuda, node)
    assert fit({"gpus_per_node": None, "cpus_per_task": None}, cuda, {**node, "gpus": 8}) is None
    assert "have 2 CPUs" in fit({"gpus_per_node": None, "cpus_per_task": 8}, cpu, node)
    assert "have 23 GB" in fit({"gpus_per_node": None, "cpus_per_task": 1, "mem_gb": 64}, cpu, node)
    two_nodes = {"gpus_per_node": None, "cpus_per_task": None, "nodes": 2}  # trainer.nnodes=2
    assert "partition cpu has 1 node" in fit(two_nodes, cpu, node)
    assert fit(two_nodes, cpu, {**node, "nodes": 4}) is None
