"""The cluster recipe (docs/sweeps-and-clusters.md) on real components: PostgreSQL, a single-node SLURM
(slurmctld, slurmd, munge), started on localhost by tests/cluster/services.sh and stopped after the tier, however
it ends. `make test-cluster` (not part of `make test`); skipped with its reason where they cannot run (no root,
no apt).

One module fixture runs every scenario at once (the node has few CPUs; the requeue waits minutes), the tests
check one defect each on what it found:
- D1: K sweepers and a re-run propose distinct trials;
- D2: a job that reaches its time limit is requeued and completes, resuming in its own folder;
- D3: kill -9 of a sweeper leaves its SLURM job running to completion;
- D4: the shipped launcher config runs on a CPU partition; an impossible request is refused in one line;
- D5: the killed sweeper, restarted, leaves nothing RUNNING in the study (nor its folder "running");
- D6: nlpexp-report of the sweepers' parent folder shows the study's best trial;
- D7: a recipe command that also sets a key the search tunes is refused in one line."""
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")  # optuna<3 on SQLAlchemy 1.4 (the sweep extra pins it)
pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

SERVICES = Path(__file__).parent / "services.sh"
STUDY = "finsent_bert"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """{"env": the environment a sweeper needs, "pg": the study's URL}; every daemon started here is stopped."""
    state = tmp_path_factory.mktemp("services")
    started = subprocess.run(["bash", str(SERVICES), "start", str(state)], capture_output=True, text=True,
                             timeout=900)
    try:
        if started.returncode == 3:
            pytest.skip(started.stderr.strip().splitlines()[-1])
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-3000:]
        found = dict(line.split("=", 1) for line in (state / "env").read_text().split())
        env = {k: v for k, v in os.environ.items() if not k.startswith("NLPEXP_")}
        env.update(SLURM_CONF=found["SLURM_CONF"], HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        yield {"env": env, "pg": found["NLPEXP_PG_URL"], "partition": found["NLPEXP_PARTITION"]}
    finally:
        subprocess.run(["bash", str(SERVICES), "stop", str(state)], timeout=300)


def nlpexp(cluster, cwd: Path, *args, log: str):
    """`nlpexp args` in the background, its output in cwd/log."""
    with open(cwd / log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "nlpexp", *args], cwd=cwd, env=cluster["env"], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc, cwd: Path, log: str, timeout: float = 480) -> tuple[int, str]:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return proc.returncode, (cwd / log).read_text()


def slurm(cluster, *cmd) -> str:
    return subprocess.run(list(cmd), env=cluster["env"], capture_output=True, text=True, timeout=60).stdout


def wait_for(what, seconds: float, every: float = 1.0):
    deadline = time.time() + seconds
    while not (found := what()):
        assert time.time() < deadline, f"waited {seconds:.0f} s"
        time.sleep(every)
    return found


def status(folder: Path) -> str | None:
    try:
        return json.loads((folder / "metrics.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


def recipe(cluster, worker: str, n_trials: int, *extra):
    """The cluster recipe (docs/sweeps-and-clusters.md) for one worker, smoke-sized, on the CPU partition."""
    return ["-m", "hparams_search=finsent_optuna", "model=bert", "device=cpu", "hydra/launcher=submitit_slurm",
            f"hydra.launcher.partition={cluster['partition']}", "hydra.launcher.timeout_min=10",
            "hydra.sweeper.n_jobs=1", f"hydra.sweeper.n_trials={n_trials}", f"hydra.sweeper.storage={cluster['pg']}",
            f"hydra.sweeper.study_name={STUDY}", f"hydra.sweep.dir=outputs/optuna/{STUDY}/{worker}", "+smoke=true",
            *extra]


def two_sweepers_and_a_rerun(cluster, cwd):
    """D1, D4: two sweepers at once (shipped launcher config, 2 trials each), then worker_1 run again."""
    procs = {k: nlpexp(cluster, cwd, *recipe(cluster, f"worker_{k}", 2), log=f"worker_{k}.log") for k in (1, 2)}
    runs = {k: finish(p, cwd, f"worker_{k}.log") for k, p in procs.items()}
    runs["rerun"] = finish(nlpexp(cluster, cwd, *recipe(cluster, "worker_1", 1), log="rerun.log"), cwd, "rerun.log")
    return runs


def killed_sweeper(cluster, cwd):
    """D3, D5: worker_3's sweeper is killed (-9) while its trial's SLURM job trains; then it is started again with
    its own command line."""
    # a trial that outlives the reaper's 7 s (a wider model, every training sample, no step cap: >10 s)
    args = recipe(cluster, "worker_3", 1, "hydra.launcher.cpus_per_task=1", "data.max_train_samples=320",
                  "trainer.max_steps=-1", "model.small.hidden_size=256", "model.small.intermediate_size=512",
                  "model.small.num_hidden_layers=2", "model.small.num_attention_heads=4")
    proc = nlpexp(cluster, cwd, *args, log="worker_3.log")
    job = cwd / "outputs" / "optuna" / STUDY / "worker_3" / "0"
    wait_for(lambda: list(job.parent.glob(".submitit/*/*_log.out")) or proc.poll() is not None, 300)  # it started
    assert proc.poll() is None, (cwd / "worker_3.log").read_text()[-3000:]
    ids = [p.name for p in (job.parent / ".submitit").iterdir() if p.name[:1].isdigit()]  # 12_0: an array job
    os.kill(proc.pid, signal.SIGKILL)  # the sweeper only (its reaper is in a session of its own)
    proc.wait()
    time.sleep(8)  # the reaper notices within 1 s, waits 3 s, TERM, 3 s, KILL: it would have killed the job by now
    alive = slurm(cluster, "squeue", "-h", "-o", "%i %T").split()
    restarted = finish(nlpexp(cluster, cwd, *args, log="worker_3_again.log"), cwd, "worker_3_again.log")
    return {"job_ids": ids, "squeue_after_kill": alive, "restarted": restarted, "folder": job}


def timed_out_job(cluster, cwd):
    """D2: one job of 2800 tiny steps (~55 s on an idle 2-core machine) under a 1-minute limit, SLURM's USR2 30 s before
    it: requeued by submitit, it resumes in its folder. Once requeued, the test gives the job 10 minutes and lets it
    start at once (SLURM holds a requeued job ~2 minutes; with a 1-minute window each the rest could take several
    requeues on a busy machine)."""
    args = ["-m", "model=bert", "+smoke=true", "data.max_train_samples=320", "trainer.epochs=140",
            "trainer.max_steps=-1", "trainer.save_steps=50",
            "hydra/launcher=submitit_slurm", "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=30",
            "hydra.launcher.cpus_per_task=1", "hydra.sweep.dir=outputs/timeout"]
    proc = nlpexp(cluster, cwd, *args, log="timeout.log")
    submitit = cwd / "outputs" / "timeout" / ".submitit"

    def requeued():
        for log in submitit.glob("*/*.out"):
            if "Requeued job" in log.read_text():
                return log.parent.name
        return proc.poll() is not None

    job = wait_for(requeued, 300)
    if isinstance(job, str):  # once SLURM holds it (PENDING, not while it is still completing)
        wait_for(lambda: "PENDING" in slurm(cluster, "squeue", "-h", "-j", job, "-o", "%T") or proc.poll() is not None,
                 60, every=0.5)
        slurm(cluster, "scontrol", "update", f"JobId={job}", "TimeLimit=10", "StartTime=now")
    return finish(proc, cwd, "timeout.log")


def refused(cluster, cwd):
    """D4: GPUs on a partition without any, and more CPUs than a node has: one line each, nothing submitted."""
    out = {}
    out["overlap"] = subprocess.run([sys.executable, "-m", "nlpexp", *recipe(cluster, "refused_overlap", 1,
                                                                             "trainer.epochs=3")],
                                    cwd=cwd, env=cluster["env"], capture_output=True, text=True, timeout=120)
    for name, extra in {"gpu": ["device=cuda"], "cpus": ["hydra.launcher.cpus_per_task=512"]}.items():
        out[name] = subprocess.run(
            [sys.executable, "-m", "nlpexp", "-m", "model=doc2vec", "+smoke=true", "hydra/launcher=submitit_slurm",
             f"hydra.sweep.dir=outputs/refused_{name}", *extra], cwd=cwd, env=cluster["env"], capture_output=True,
            text=True, timeout=120)
    return out


@pytest.fixture(scope="module")
def ran(cluster, tmp_path_factory):
    """Every scenario at once; {name: what it found}, plus the study's trials and the wall time."""
    cwd = tmp_path_factory.mktemp("recipe")
    started = time.time()
    scenarios = {"recipe": two_sweepers_and_a_rerun, "killed": killed_sweeper, "timeout": timed_out_job,
                 "refused": refused}
    with ThreadPoolExecutor(len(scenarios)) as pool:
        futures = {name: pool.submit(run, cluster, cwd) for name, run in scenarios.items()}
        found = {}
        for name, future in futures.items():
            try:
                found[name] = future.result()
            except Exception as err:  # noqa: BLE001 -- the test of that scenario reports it
                found[name] = err
    import optuna

    found["trials"] = optuna.load_study(study_name=STUDY, storage=cluster["pg"]).trials
    found["wall_s"] = time.time() - started
    found["cwd"] = cwd
    print(f"cluster tier: scenarios took {found['wall_s']:.0f} s", file=sys.stderr)
    return found


def result(ran, name):
    if isinstance(ran[name], Exception):
        raise ran[name]
    return ran[name]


def test_sweepers_and_a_rerun_propose_distinct_trials(ran):
    runs = result(ran, "recipe")
    for name, (code, log) in runs.items():
        assert code == 0, f"{name}: {log[-3000:]}"
    complete = [t for t in ran["trials"] if t.state.name == "COMPLETE"]
    assert len(complete) >= 5, [(t.number, t.state.name) for t in ran["trials"]]
    params = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(params)) == len(params), params


def test_a_timed_out_job_is_requeued_and_resumes_in_its_folder(ran):
    code, log = result(ran, "timeout")
    assert code == 0, log[-3000:]
    folder = ran["cwd"] / "outputs" / "timeout"
    jobs = sorted(p.name for p in folder.iterdir() if p.name.isdigit())
    assert jobs == ["0"], jobs
    done = json.loads((folder / "0" / "metrics.json").read_text())
    assert done["status"] == "complete" and done.get("resumed_from"), done
    logs = "".join(p.read_text() for p in folder.glob(".submitit/*/*.out"))
    assert "Requeued job" in logs and "resuming it in its folder" in logs, logs[-3000:]


def test_a_killed_sweeper_leaves_its_slurm_job_running_to_completion(ran):
    found = result(ran, "killed")
    assert found["job_ids"] and found["job_ids"][0] in found["squeue_after_kill"], found
    log = "".join(p.read_text() for p in found["folder"].parent.glob(f".submitit/{found['job_ids'][0]}/*_log.*"))
    assert "Job completed successfully" in log and "CANCELLED" not in log, log[-3000:]
    done = json.loads((found["folder"] / "metrics.json").read_text())
    assert done["status"] == "complete" and not done.get("resumed_from"), done  # it ran through, untouched


def test_a_restarted_sweeper_leaves_nothing_running(ran):
    found = result(ran, "killed")
    code, log = found["restarted"]
    assert code == 0, log[-3000:]
    assert [t.number for t in ran["trials"] if t.state.name == "RUNNING"] == []
    assert "lost its sweeper" in log, log[-3000:]
    sweep = ran["cwd"] / "outputs" / "optuna" / STUDY
    running = [p for p in sweep.glob("worker_*/[0-9]*") if status(p) == "running"]
    assert running == [], running


def test_the_shipped_launcher_config_fits_the_partition_or_refuses_in_one_line(ran):
    runs = result(ran, "recipe")  # worker_1 and worker_2 ran with the shipped gpus_per_node and cpus_per_task
    assert all(code == 0 for code, _ in runs.values())
    for name, proc in result(ran, "refused").items():
        if name == "overlap":
            continue
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("nlpexp: error: "), proc.stderr
        assert not (ran["cwd"] / "outputs" / f"refused_{name}" / ".submitit").exists()


def test_the_report_of_the_sweepers_parent_folder_shows_the_study_best_trial(ran):
    import yaml

    from nlpexp.report.tables import write_report

    result(ran, "recipe")
    text = write_report(ran["cwd"] / "outputs" / "optuna" / STUDY)["markdown"]
    assert text.count("## Optuna best trial") == 1 and f"(study {STUDY}, best of " in text, text[-3000:]
    shown = yaml.safe_load(text.split("## Optuna best trial", 1)[1].split("```")[1])
    assert shown["best_value"] == max(t.value for t in ran["trials"] if t.state.name == "COMPLETE")


def test_a_key_the_search_tunes_is_refused_in_one_line(ran):
    proc = result(ran, "refused")["overlap"]
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("nlpexp: error: trainer.epochs=3: hparams_search=finsent_optuna tunes trainer.epochs")
    assert not (ran["cwd"] / "outputs" / "optuna" / STUDY / "refused_overlap").exists()


def test_the_study_password_reaches_no_saved_file(ran, cluster):
    """The storage URL carries the database password (as a sweeper on another node connects): every .hydra/ file,
    multirun.yaml and metrics.json keeps the URL with REDACTED in its place."""
    result(ran, "recipe")
    password = cluster["pg"].split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    sweep = ran["cwd"] / "outputs" / "optuna" / STUDY
    saved = [p for p in sweep.rglob("*") if p.is_file() and (p.parent.name == ".hydra" or p.suffix == ".json")]
    assert saved and [p for p in saved if f":{password}@".encode() in p.read_bytes()] == []
    assert any(b":REDACTED@127.0.0.1" in p.read_bytes() for p in saved if p.name == "hydra.yaml")
