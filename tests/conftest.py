import os
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never touch the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


SLOW_MODULES = {"test_resume_ddp", "test_sweeps", "test_hub", "test_sweeps_persist"}  # processes, launchers, kill -9


def pytest_collection_modifyitems(items):
    """`slow`: every test that runs the command end to end (the nlpexp fixture), trains, or starts processes;
    `make test-fast` runs the others (the unit tests)."""
    for item in items:
        if "nlpexp" in getattr(item, "fixturenames", ()) or item.module.__name__ in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


class Result:
    def __init__(self, code: int, out: str, err: str, cwd: Path):
        self.code, self.out, self.err, self.cwd = code, out, err, cwd

    def run_dirs(self):
        """Run folders (those holding a Hydra .hydra/ folder) below the working directory."""
        return sorted(p.parent for p in self.cwd.rglob(".hydra"))

    def metrics(self):
        import json

        dirs = [d for d in self.run_dirs() if (d / "metrics.json").exists()]
        assert dirs, f"no run folder with metrics.json under {self.cwd}\n{self.err[-3000:]}"
        return json.loads((dirs[-1] / "metrics.json").read_text())


@pytest.fixture
def nlpexp(tmp_path, monkeypatch, capsys):
    """Run the `nlpexp` entrypoint in-process inside tmp_path; returns a Result."""
    from hydra.core.global_hydra import GlobalHydra

    from nlpexp import cli

    def run(*args, cwd: Path | None = None) -> Result:
        where = cwd or tmp_path
        monkeypatch.chdir(where)
        monkeypatch.setattr(sys, "argv", ["nlpexp", *args])
        GlobalHydra.instance().clear()
        code = 0
        try:
            cli.main()
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        finally:
            GlobalHydra.instance().clear()
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err, where)

    return run
