"""Saved runs for the tests of a saved folder's checks: a +smoke=true run trained once for a module (in this process,
as the nlpexp fixture runs the command), a copy of it to damage, and the line a folder without its
saved_files.json is refused with."""
import contextlib
import io
import shutil
import sys
from pathlib import Path

MISSING = "cannot load the saved model (saved_files.json is missing"


def in_process(cwd: Path, *args, env: dict | None = None) -> tuple[int, str]:
    """`nlpexp <args>` run in this process inside `cwd`, as the nlpexp fixture (conftest.py) runs it, for fixtures
    wider than a test (that fixture is a test's): its exit code and the end of what it wrote. The process's cwd,
    argv and environment are as they were afterwards. A run in a fresh process costs its imports (~6 CPU-s)."""
    import pytest
    from hydra.core.global_hydra import GlobalHydra

    from nlpexp import cli

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        patch.chdir(cwd)
        patch.setattr(sys, "argv", ["nlpexp", *args])
        patch.setenv("HF_HUB_OFFLINE", "1")
        for key, value in (env or {}).items():
            patch.setenv(key, value)
        GlobalHydra.instance().clear()
        code = 0
        try:
            cli.main()
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        finally:
            GlobalHydra.instance().clear()
    return code, out.getvalue()[-3000:]


def train(root: Path, name: str, *args) -> Path:
    run = root / name
    code, said = in_process(root, "+smoke=true", *args, f"hydra.run.dir={run}")
    assert code == 0, said
    return run


def copy_of(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / run.name, ignore=shutil.ignore_patterns(".lock")))


