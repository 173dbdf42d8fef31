"""Runs you can trust, round 2: a run folder is data (resume= replays only plain task settings, never code or a
config from outside the config search path), a resume is its folder's own task and model, run folders are never
nested in runs nor written into system folders, and what Hydra cannot read is one line that shows how to quote it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from nlpexp import cli
from nlpexp.runs import earlier_job, folder_state, is_run_folder, system_folder_error
from nlpexp.runs import folder_errors, place_errors, replay_error, resume_args
from nlpexp.run import check_sweep
from nlpexp.config.registry import config_roots
from nlpexp.config.validate import group_option_errors
from refusals import refused  # tests/ is on sys.path

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_folder(where: Path, overrides: list[str], task="finsent", model="minilm", metrics=None) -> Path:
    """A run folder as nlpexp leaves it (metrics=None: none written yet, as a run killed early)."""
    (where / ".hydra").mkdir(parents=True)
    (where / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (where / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"task": {"name": task}, "model": {"name": model},
                                                                  "seed": 42}))
    if metrics is not None:
        (where / "metrics.json").write_text(json.dumps(metrics))
    return where


def evil_folder(where: Path, marker: Path, line: str = "") -> Path:
    """A killed run whose overrides.yaml climbs out of the config folder into its own .hydra/evil.yaml, a config
    that installs a Hydra callback copying this file to `marker`."""
    run = run_folder(where, ["+smoke=true"], metrics={"status": "running"})
    (run / ".hydra" / "evil.yaml").write_text(
        "# @package _global_\nhydra:\n  callbacks:\n    x:\n      _target_: shutil.copyfile\n"
        f"      src: {__file__}\n      dst: {marker}\n")
    climb = "../" * 12 + str(run / ".hydra" / "evil").lstrip("/")
    (run / ".hydra" / "overrides.yaml").write_text(f"- +smoke=true\n- {line or f'experiment={climb}'}\n")
    return run


@pytest.fixture
def roots(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return config_roots([], None)


# -- 1. nothing read from a run folder names code or a config from elsewhere ------------------------------------
@pytest.mark.parametrize("device", ["experiment", "device", "trainer", "logger"])
def test_resume_refuses_a_group_option_that_climbs_out_of_the_config_folder(tmp_path, monkeypatch, device):
    monkeypatch.chdir(tmp_path)
    run = evil_folder(tmp_path / "run", tmp_path / "marker")
    text = (run / ".hydra" / "overrides.yaml").read_text().replace("experiment=", f"{device}=")
    (run / ".hydra" / "overrides.yaml").write_text(text)
    line = refused(resume_args, [f"resume={run}"], [])
    assert "line 2" in line and f"{device}=../../" in line and "not a plain config name" in line


@pytest.mark.parametrize("item, why", [
    ("+logger@hydra.callbacks.x=csv", "into Hydra's own settings"),
    ("+logger@_global_.hydra.callbacks.x=csv", "into Hydra's own settings"),
    ("trainer.lr=${oc.env:HOME}", "interpolation"),
    ("+x=${nlpexp_run_dir:a,b,train,null}", "interpolation"),
    ("hydra/launcher=joblib", "not a task setting"),
    ("model=nosuch", "no model/nosuch.yaml"),
    ("experiment=/etc/passwd", "not a plain config name"),
    ("experiment=[finsent_minilm,../x]", "not a plain config name"),
    ("model=bert,minilm", "a sweep"),
])
def test_replayed_overrides_are_plain_task_settings(roots, item, why):
    assert why in replay_error(item, roots)


@pytest.mark.parametrize("item", ["+smoke=true", "model=bert", "experiment=finsent_minilm", "trainer=fast",
                                  "trainer.lr=3e-5", "tags=[a,b]", "data.path=../data/x.csv", "ckpt=null",
                                  "experiment=null", "+logger@extra=csv"])
def test_plain_task_settings_are_replayed(roots, item):
    assert replay_error(item, roots) is None


def test_an_option_of_the_users_conf_is_replayed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "mine.yaml").write_text("# @package _global_\nseed: 3\n")
    other = tmp_path / "other" / "experiment"
    other.mkdir(parents=True)
    (other / "theirs.yaml").write_text("seed: 4\n")
    assert replay_error("experiment=mine", config_roots([], None)) is None
    assert "no experiment/theirs.yaml" in replay_error("experiment=theirs", config_roots([], None))
    assert replay_error("experiment=theirs", config_roots([], str(tmp_path / "other"))) is None


@pytest.mark.parametrize("item", ["experiment=../../x", "model=../model/bert", "logger=/tmp/evil",
                                  "+device@extra=../../x", "experiment=[finsent_minilm,../../x]"])
def test_a_command_line_group_option_is_a_name_not_a_path(roots, item):
    line = refused(group_option_errors, [item], roots)
    assert "a config group option is a name, not a path" in line and "--config-dir" in line and "./conf/" in line


def test_paths_of_plain_settings_may_climb(roots):
    group_option_errors(["ckpt=../run", "data.path=../../x.csv", "model=bert", "resume=../r"], roots)


def test_resume_of_a_crafted_folder_copies_nothing_end_to_end(tmp_path):
    marker = tmp_path / "marker"
    run = evil_folder(tmp_path / "run", marker)
    res = subprocess.run([sys.executable, "-m", "nlpexp", f"resume={run}"], cwd=tmp_path, env=ENV,
                         capture_output=True, text=True, timeout=300)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "line 2" in lines[0] and "not a plain config name" in lines[0]
    assert not marker.exists()
    # the same climb given on the command line: one line, nothing run, nothing made
    res = subprocess.run([sys.executable, "-m", "nlpexp", "experiment=" + "../" * 12 + str(
        run / ".hydra" / "evil").lstrip("/"), "hydra.run.dir=out(1)"], cwd=tmp_path, env=ENV, capture_output=True,
        text=True, timeout=300)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr[-2000:]
    assert not marker.exists() and not (tmp_path / "out(1)").exists() and not (tmp_path / "outputs").exists()


# -- 2. a resume is its folder's own run --------------------------------------------------------------------------
def test_resume_refuses_another_task_or_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = run_folder(tmp_path / "novel", ["task=novel", "model=transformer", "+smoke=true"], task="novel",
                     model="transformer", metrics={"status": "running"})
    line = refused(resume_args, [f"resume={run}", "task=finsent", "model=minilm"], [])
    assert "is a task=novel model=transformer run, not task=finsent" in line
    assert "not model=minilm" in refused(resume_args, [f"resume={run}", "model=minilm"], [])
    args = resume_args([f"resume={run}", "task=novel", "model=transformer"], [])
    assert f"hydra.run.dir={run.resolve()}" in args and "task=novel" in args


@pytest.mark.parametrize("config, metrics", [
    ({"db": {"host": "x"}}, None),                          # another Hydra app, nothing of nlpexp's
    ({"db": {"host": "x"}}, {"status": "complete"}),       # ... which writes its own metrics.json
    ({"task": {"name": "finsent"}, "model": {"name": "minilm"}}, {"accuracy": 0.9}),  # a metrics.json of another
])
def test_resume_of_another_apps_folder_says_it_is_not_an_nlpexp_run(tmp_path, monkeypatch, config, metrics):
    monkeypatch.chdir(tmp_path)
    run = run_folder(tmp_path / "app", ["db.host=x"])
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    if metrics is not None:
        (run / "metrics.json").write_text(json.dumps(metrics))
    line = refused(resume_args, [f"resume={run}"], [])
    assert "is not an nlpexp run folder" in line and "already finished" not in line


@pytest.mark.parametrize("text", ["[1, 2]", "\"complete\"", "3", "null", "{torn"])
def test_a_metrics_json_that_is_not_an_object_is_unreadable_everywhere(tmp_path, monkeypatch, text):
    monkeypatch.chdir(tmp_path)
    run = run_folder(tmp_path / "run", ["+smoke=true"])
    (run / "metrics.json").write_text(text)
    assert folder_state(run)[0] == "unreadable"
    assert earlier_job(run, ["+smoke=true"])[0] == "other"
    assert resume_args([f"resume={run}"], [])[-1] == f"hydra.run.dir={run.resolve()}"  # resumable, no traceback
    (run / ".hydra" / "overrides.yaml").unlink()
    assert not is_run_folder(run)


# -- 3. run folders: never inside a run, never a system folder ----------------------------------------------------
def test_a_run_folder_is_never_inside_another_run(tmp_path):
    done = run_folder(tmp_path / "done", ["+smoke=true"], metrics={"status": "complete"})
    line = refused(folder_errors, done / "checkpoints", False)
    assert f"inside the run folder {done.resolve()}" in line
    assert "inside the run folder" in refused(place_errors, done / "a" / "b", "hydra.sweep.dir")
    assert "inside the run folder" in refused(place_errors, done, "hydra.sweep.dir")  # its jobs would be
    only_metrics = tmp_path / "m"
    only_metrics.mkdir()
    (only_metrics / "metrics.json").write_text(json.dumps({"status": "failed"}))
    assert "inside the run folder" in refused(folder_errors, only_metrics / "x", False)
    # the legit ones: an eval run inside its ckpt run, a sweep's jobs inside the sweep folder, a fresh folder
    folder_errors(done / "eval" / "mine", False, inside=done)
    sweep = tmp_path / "sweep"
    (sweep / "0").mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    run_folder(sweep / "1", ["seed=2"], metrics={"status": "running"})
    folder_errors(sweep / "0", False)
    folder_errors(sweep / "1", True)
    place_errors(sweep, "hydra.sweep.dir")
    folder_errors(tmp_path / "new" / "run", False)


@pytest.mark.parametrize("folder", ["/", "~", "/etc/nlpexp", "/usr/lib/x", "/var/log/runs", "/proc/self/x", "/tmp",
                                    "/dev/shm/x", "/boot"])
def test_system_folders_are_refused(folder):
    assert system_folder_error(Path(folder)) is not None
    line = refused(place_errors, Path(folder).expanduser(), "hydra.run.dir")
    assert ("your home folder" if folder == "~" else "system folder") in line


@pytest.mark.parametrize("folder", ["/var/tmp/runs/a", "/tmp/runs/a", "~/runs/a", "/usr/src/app/outputs/x"])
def test_scratch_home_and_project_folders_are_fine(folder):
    assert system_folder_error(Path(folder).expanduser()) is None


def test_a_sweep_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    line = refused(check_sweep, ["-m", "+smoke=true", "seed=1,2", f"hydra.sweep.dir={tmp_path / 'afile'}"], [])
    assert "is a file, not a folder" in line and line.startswith("hydra.sweep.dir=")


# -- 4. messages --------------------------------------------------------------------------------------------------
def bash_argv(command: str) -> str:
    """The one argv item bash makes of `command` (a working form must be one item)."""
    out = subprocess.run(["bash", "-c", f"printf '%s\\0' {command}"], capture_output=True, text=True,
                         check=True).stdout
    items = out.split("\0")[:-1]
    assert len(items) == 1, items
    return items[0]


@pytest.mark.parametrize("arg, value", [
    ("data.path=a<b.csv", "a<b.csv"),
    ("tags=[😀]", ["😀"]),
    ("hydra.run.dir=out(1)", "out(1)"),
    ("data.path=it's (mine).csv", "it's (mine).csv"),
    ("data.path=$HOME (x).csv", "$HOME (x).csv"),
])
def test_a_value_hydra_cannot_read_is_one_line_with_a_quoted_form_that_works(arg, value):
    line = refused(cli.grammar_errors, [arg])
    assert "quote it, e.g. in bash: " in line
    shown = line.split("quote it, e.g. in bash: ")[1]
    parsed = OverridesParser.create().parse_overrides([bash_argv(shown)])[0]
    assert parsed.get_key_element() == arg.split("=")[0] and parsed.value() == value


def test_readable_values_pass_the_grammar_check():
    cli.grammar_errors(["data.path='my file.csv'", "seed=1,2", "tags=['😀']", "--cfg", "job", "-cd", "a b(",
                        "hydra.run.dir='out(1)'"])


@pytest.mark.parametrize("args, expected", [
    (["--cfg", "bogus"], "--cfg bogus: --cfg takes job|hydra|all"),
    (["--cfg=bogus"], "--cfg takes job|hydra|all"),
    (["-c"], "-c takes job|hydra|all"),
    (["--info", "model=nosuch"], "--info takes all|config|defaults|defaults-tree|plugins|searchpath"),
])
def test_flag_values_are_one_line(args, expected):
    assert expected in refused(cli.argument_errors, args)


def test_good_flag_values_pass():
    for args in (["--cfg", "job"], ["--info"], ["--info", "config", "model=bert"], ["-c", "all"], ["--info", "-m"]):
        cli.argument_errors(args)


def test_an_empty_sweep_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "seed=range(0,0) sweeps no values" in refused(check_sweep, ["-m", "seed=range(0,0)"], [])


@pytest.mark.parametrize("ckpt", ['"{run}"', "'{run}'", "{run}"])
def test_a_quoted_ckpt_is_the_folder(tmp_path, ckpt):
    run = run_folder(tmp_path / "x y", ["task=posenc"], task="posenc", model="transformer",
                     metrics={"status": "complete"})
    assert cli._saved_run_choices(["mode=eval", "ckpt=" + ckpt.format(run=run)]) == ["task=posenc",
                                                                                     "model=transformer"]
