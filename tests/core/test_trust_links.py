"""Run folders are data, round 3: no path we write or read in a run folder may be a symbolic link (a .lock,
checkpoints/ or eval/ link made a resume or an eval write outside the run, a linked model file loaded another
run's), nor a FIFO (reads waited forever); every run-folder file is read bounded (size, nesting, YAML tags); and
hydra.job.name is a plain name (Hydra writes <run folder>/<name>.log)."""
import json
import os
import signal
from pathlib import Path

import pytest
import yaml

from nlpexp import cli, runs
from nlpexp.report import tables as report
from nlpexp.errors import UserError
from nlpexp.runs import RunFileError, claim, folder_state, load_run_file, read_metrics, release, run_folder_error
from nlpexp.runs import check_ckpt_args, earlier_jobs, folder_errors, nlpexp_run_error, resume_args
from refusals import refused  # tests/ is on sys.path

LINK = "is a symbolic link: a run folder holds no links; remove it"


def run_folder(where: Path, metrics: dict | None = None) -> Path:
    """A training run as nlpexp leaves it: .hydra/, metrics.json, a saved model under checkpoints/best."""
    (where / ".hydra").mkdir(parents=True)
    (where / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["+smoke=true", "model=doc2vec"]))
    (where / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"task": {"name": "finsent"},
                                                                  "model": {"name": "doc2vec"}, "mode": "train"}))
    (where / "checkpoints" / "best").mkdir(parents=True)
    (where / "checkpoints" / "best" / "classifier.json").write_text("{}")
    (where / "metrics.json").write_text(json.dumps(metrics or {"status": "complete", "metrics": {}}))
    return where


@pytest.fixture
def victim(tmp_path) -> Path:
    (tmp_path / "outside").mkdir()
    path = tmp_path / "outside" / "victim.txt"
    path.write_text("precious\n")
    return path


@pytest.fixture(autouse=True)
def no_hang():
    """A read that opens a FIFO would wait forever: fail the test instead."""
    previous = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("blocked on a FIFO"))
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


# -- S11: the lock --------------------------------------------------------------------------------------------
def test_claim_refuses_a_lock_linked_to_a_file_outside_and_leaves_that_file_alone(tmp_path, victim):
    run = run_folder(tmp_path / "run", {"status": "running"})
    (run / ".lock").symlink_to(victim)
    message = refused(claim, run)
    assert message == f"{run / '.lock'} {LINK}"
    assert victim.read_text() == "precious\n"
    assert runs.lock_owner(run) is None


def test_claim_refuses_a_fifo_lock_and_takes_a_regular_one(tmp_path):
    run = run_folder(tmp_path / "run", {"status": "running"})
    os.mkfifo(run / ".lock")
    assert "is not a regular file" in refused(claim, run)
    assert runs.lock_owner(run) is None and runs._recorded_pid(run) is None  # neither waits on it
    (run / ".lock").unlink()
    claim(run)
    try:
        assert (run / ".lock").read_text() == f"{os.getpid()}\n"
    finally:
        release(run)


# -- S12, S08, S07: one check for every path of a run folder ---------------------------------------------------
@pytest.mark.parametrize("where", [".lock", "metrics.json", "metrics.tmp", ".hydra", ".hydra/config.yaml",
                                   "checkpoints", "checkpoints/best", "checkpoints/best/classifier.json", "eval",
                                   "predict", "generate", "predictions.csv"])
def test_a_link_anywhere_we_write_or_read_is_named(tmp_path, victim, where):
    run = run_folder(tmp_path / "run")
    path = run / where
    if path.is_dir():
        os.rename(path, tmp_path / "outside" / "moved")
    else:
        path.unlink(missing_ok=True)
    path.symlink_to(victim.parent if where in ("eval", "predict", "generate") else victim)
    assert run_folder_error(run) == f"{path} {LINK}"


def test_a_fifo_in_a_run_folder_is_named_and_a_clean_folder_or_a_link_to_one_passes(tmp_path):
    run = run_folder(tmp_path / "run")
    (run / "eval" / "2024-01-01_00-00-00").mkdir(parents=True)
    (tmp_path / "alias").symlink_to(run)  # hydra.run.dir=<a link to the folder>: resolved, it is that folder
    assert run_folder_error(run) is None and run_folder_error(tmp_path / "alias") is None
    assert run_folder_error(tmp_path / "not-made-yet") is None
    os.mkfifo(run / "checkpoints" / "best" / "model.safetensors")
    assert run_folder_error(run) == (f"{run / 'checkpoints' / 'best' / 'model.safetensors'} is a FIFO (named pipe), "
                                     "not a regular file: a run folder holds only files and folders; remove it")


def test_resume_refuses_a_checkpoints_link_before_reading_anything(tmp_path, monkeypatch, victim):
    monkeypatch.chdir(tmp_path)
    run = run_folder(tmp_path / "run", {"status": "running"})
    (run / ".hydra" / "overrides.yaml").unlink()
    (run / ".hydra" / "overrides.yaml").symlink_to(victim)  # would be read (and replayed) otherwise
    assert refused(resume_args, [f"resume={run}"], []) == f"{run / '.hydra' / 'overrides.yaml'} {LINK}"
    (run / ".hydra" / "overrides.yaml").unlink()
    (run / ".hydra" / "overrides.yaml").write_text("- +smoke=true\n")
    os.rename(run / "checkpoints", tmp_path / "outside" / "checkpoints")
    (run / "checkpoints").symlink_to(tmp_path / "outside" / "checkpoints")
    assert refused(resume_args, ["resume=run"], []) == f"{run / 'checkpoints'} {LINK}"
    assert refused(folder_errors, run, True) == f"{run / 'checkpoints'} {LINK}"  # hydra.run.dir=run


def test_ckpt_runs_are_checked_before_their_files_are_read(tmp_path, victim):
    run = run_folder(tmp_path / "run")
    (run / "eval").symlink_to(victim.parent)
    assert refused(check_ckpt_args, ["mode=eval", f"ckpt={run}"]) == f"{run / 'eval'} {LINK}"
    (run / "eval").unlink()
    other = run_folder(tmp_path / "other")
    model = run / "checkpoints" / "best" / "classifier.json"
    model.unlink()
    model.symlink_to(other / "checkpoints" / "best" / "classifier.json")
    assert refused(check_ckpt_args, ["mode=soup", f"ckpt=[{other},{run}]"]) == f"{model} {LINK}"
    (tmp_path / "hub").mkdir()  # a folder that is no run folder is left to ckpt='s own check
    (tmp_path / "hub" / "model.bin").symlink_to(victim)
    check_ckpt_args([f"ckpt={tmp_path / 'hub'}"])


def test_a_sweep_run_again_refuses_a_job_folder_that_is_or_holds_a_link(tmp_path, victim):
    sweep = tmp_path / "sweep"
    run_folder(sweep / "0", {"status": "complete", "overrides": ["seed=1"]})
    (sweep / "1").symlink_to(victim.parent)
    jobs = [("seed=1",), ("seed=2",)]
    assert refused(earlier_jobs, [f"hydra.sweep.dir={sweep}"], jobs, []) == \
        f"hydra.sweep.dir={sweep}: job 1: {sweep / '1'} {LINK}"
    (sweep / "1").unlink()
    (sweep / "0" / ".hydra" / "hydra.yaml").symlink_to(victim)  # Hydra rewrites it before the job starts
    assert refused(earlier_jobs, [f"hydra.sweep.dir={sweep}"], jobs, []) == \
        f"hydra.sweep.dir={sweep}: job 0: {sweep / '0' / '.hydra' / 'hydra.yaml'} {LINK}"
    assert victim.read_text() == "precious\n"


def test_a_saved_model_whose_file_list_is_a_link_does_not_load(tmp_path):
    from nlpexp.runs import MANIFEST, check_files, write_dir

    for name in ("mine", "other"):
        with write_dir(tmp_path / name) as folder:
            (folder / "classifier.json").write_text(json.dumps({"name": name}))
    check_files(tmp_path / "mine")
    (tmp_path / "mine" / "classifier.json").write_text(json.dumps({"name": "other"}))  # same size, other bytes
    (tmp_path / "mine" / MANIFEST).unlink()
    (tmp_path / "mine" / MANIFEST).symlink_to(tmp_path / "other" / MANIFEST)  # the other folder's list vouches
    assert f"{MANIFEST} is a link" in refused(check_files, tmp_path / "mine")


# -- H06, F59: reads of run-folder files are bounded -------------------------------------------------------------
def test_reads_refuse_links_fifos_huge_deep_and_tagged_files(tmp_path, victim):
    os.mkfifo(tmp_path / "metrics.json")
    with pytest.raises(RunFileError, match="FIFO"):
        load_run_file(tmp_path / "metrics.json")
    (tmp_path / "deep.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(RunFileError, match="nests too deeply"):
        load_run_file(tmp_path / "deep.json")
    (tmp_path / "big.yaml").write_text("a: " + "x" * (1 << 20) + "\n")
    with pytest.raises(RunFileError, match="larger than"):
        load_run_file(tmp_path / "big.yaml")
    (tmp_path / "code.yaml").write_text("- !!python/object/apply:os.system ['true']\n")
    with pytest.raises(RunFileError, match="unreadable"):
        load_run_file(tmp_path / "code.yaml")
    (tmp_path / "link.yaml").symlink_to(victim)
    with pytest.raises(RunFileError, match="symbolic link"):
        load_run_file(tmp_path / "link.yaml")
    (tmp_path / "ok.yaml").write_text("- seed=1\n")
    assert load_run_file(tmp_path / "ok.yaml") == ["seed=1"]


@pytest.mark.parametrize("kind", ["fifo", "deep", "link", "huge"])
def test_a_metrics_json_that_cannot_be_read_safely_is_unreadable(tmp_path, victim, kind):
    run = run_folder(tmp_path / "run")
    path = run / "metrics.json"
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "deep":
        path.write_text("[" * 100000 + "]" * 100000)
    elif kind == "link":
        path.symlink_to(victim)
    else:
        path.write_text(json.dumps({"status": "complete", "pad": "x" * (16 << 20)}))
    assert read_metrics(run) == {"status": "unreadable"}
    assert folder_state(run)[0] == "unreadable"
    assert nlpexp_run_error(run) is None  # resume reads it as a torn one, not a traceback


# -- S17: the report -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["overrides.yaml", "config.yaml"])
def test_report_shows_a_run_with_a_python_tag_in_its_hydra_files_as_unreadable(tmp_path, capsys, name):
    runs = tmp_path / "runs"
    bad = run_folder(runs / "a", {"status": "running"})
    (bad / ".hydra" / name).write_text("- !!python/object/apply:os.system ['touch pwned']\n")
    run_folder(runs / "b", {"status": "complete", "metrics": {"test_accuracy": 0.5}})
    report.main([str(runs), "--out", str(tmp_path / "rep")])
    table = {r["run_dir"]: r for r in report.collect_runs(runs)}
    assert table[str(bad)]["status"] == "unreadable"
    assert f".hydra/{name} is unreadable" in table[str(bad)]["error"]
    assert table[str(runs / "b")]["status"] == "complete"
    assert "| a     | unreadable |" in (tmp_path / "rep" / "report.md").read_text()
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_report_reads_a_fifo_metrics_json_as_unreadable(tmp_path, capsys):
    run = run_folder(tmp_path / "runs" / "a")
    (run / "metrics.json").unlink()
    os.mkfifo(run / "metrics.json")
    (found,) = report.collect_runs(tmp_path / "runs")
    assert found["status"] == "incomplete" and found["error"] == "unreadable metrics.json"


# -- S28: hydra.job.name ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../../../outside/pwn", "a/b", "", "..", "'..'", "x\\y"])
def test_a_job_name_that_is_not_a_plain_file_name_is_refused(name):
    message = refused(cli.argument_errors, ["+smoke=true", f"hydra.job.name={name}"])
    assert message.startswith(f"hydra.job.name={name}: the job name is")


def test_a_plain_job_name_passes():
    cli.argument_errors(["+smoke=true", "hydra.job.name=my_job.v2"])


# -- end to end: refused in one line with nothing written; a real run folder passes its own check ----------------
def test_end_to_end_links_and_job_names_are_refused_and_a_real_run_into_a_linked_folder_works(nlpexp, tmp_path,
                                                                                             victim):
    res = nlpexp("+smoke=true", "model=doc2vec", "hydra.job.name=../../outside/pwn")
    assert res.code == 2 and res.err.strip().startswith("nlpexp: error: hydra.job.name=") and len(
        res.err.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("pwn.log")) and not (tmp_path / "outputs").exists()

    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")  # hydra.run.dir=<a link>: the folder it names
    res = nlpexp("+smoke=true", "model=doc2vec", "device=cpu", "hydra.run.dir=alias")
    assert res.code == 0, res.err[-3000:]
    run = tmp_path / "real"
    assert json.loads((run / "metrics.json").read_text())["status"] == "complete"
    assert run_folder_error(run) is None  # nothing nlpexp, Hydra or the libraries write is a link

    (run / "eval").symlink_to(victim.parent)
    res = nlpexp("mode=eval", f"ckpt={run}")
    assert res.code == 2 and res.err.strip() == f"nlpexp: error: {run / 'eval'} {LINK}", res.err[-3000:]
    assert list(victim.parent.iterdir()) == [victim]
    (run / "eval").unlink()

    (run / "metrics.json").write_text(json.dumps({"status": "running"}))
    (run / ".lock").unlink()
    (run / ".lock").symlink_to(victim)
    res = nlpexp(f"resume={run}")
    assert res.code == 2 and res.err.strip() == f"nlpexp: error: {run / '.lock'} {LINK}", res.err[-3000:]
    assert victim.read_text() == "precious\n"


def test_a_fifo_among_the_users_configs_is_one_line(tmp_path, monkeypatch):
    from nlpexp.config.validate import checked_config

    (tmp_path / "conf" / "local").mkdir(parents=True)
    os.mkfifo(tmp_path / "conf" / "local" / "default.yaml")  # optional: Hydra would skip it in silence
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="conf/local/default.yaml is a FIFO"):
        checked_config(["model=doc2vec"], None)


def test_a_run_killed_before_hydra_wrote_its_settings_leaves_a_free_folder(tmp_path):
    """kill -9 right after the pre-run check took the lock: nothing to resume, the same command may run there."""
    (tmp_path / ".lock").write_text("123\n")
    assert folder_state(tmp_path)[0] == "empty"
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- model=doc2vec\n")
    assert folder_state(tmp_path)[0] == "unfinished"  # from here on resume= continues it
