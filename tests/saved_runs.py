"""Saved runs for the tests of a saved folder's checks: a +smoke=true run trained once for a module (in this process,
as the nlpexp fixture runs the command), a copy of it to damage, and the line a folder without its
saved_files.json is refused with."""
import shutil
from pathlib import Path

MISSING = "cannot load the saved model (saved_files.json is missing"


def in_process(cwd: Path, *args, env: dict | None = None) -> tuple[int, str]:
    """`nlpexp <args>` run in this process inside `cwd` (inprocess.call_main), for fixtures wider than a test (the
    nlpexp fixture is a test's), with `env` set for it: its exit code and the end of what it wrote. A run in a fresh
    process costs its imports (~6 CPU-s)."""
    import os

    from inprocess import call_main

    before = dict(os.environ)
    os.environ.update({"HF_HUB_OFFLINE": "1", **(env or {})})  # call_main restores the environment
    try:
        code, out, err = call_main(cwd, *args)
    finally:
        os.environ.clear()
        os.environ.update(before)
    return code, (out + err)[-3000:]


def train(root: Path, name: str, *args) -> Path:
    run = root / name
    code, said = in_process(root, "+smoke=true", *args, f"hydra.run.dir={run}")
    assert code == 0, said
    return run


def copy_of(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / run.name, ignore=shutil.ignore_patterns(".lock")))


