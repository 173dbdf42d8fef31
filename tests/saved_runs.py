"""Saved runs for the tests of a saved folder's checks: a +smoke=true run trained in a subprocess, a copy of it to
damage, and the line a folder without its saved_files.json is refused with."""
import shutil
import subprocess
import sys
from pathlib import Path

MISSING = "cannot load the saved model (saved_files.json is missing"


def train(root: Path, name: str, *args) -> Path:
    run = root / name
    proc = subprocess.run([sys.executable, "-m", "nlpexp", "+smoke=true", *args, f"hydra.run.dir={run}"], cwd=root,
                          text=True, capture_output=True, timeout=300, env={**__import__("os").environ,
                                                                            "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def copy_of(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / run.name, ignore=shutil.ignore_patterns(".lock")))
