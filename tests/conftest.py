import os
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never touch the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Under pytest-xdist (make test: one worker per core) each worker, and every process a test starts, gets its share
# of the cores for torch's threads: on 2 cores, 2 workers with 2 threads each spin waiting for a busy core (a smoke
# run then costs twice the CPU). Set before torch is imported; a value already in the environment is kept.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


SLOW_MODULES = {"test_resume_ddp", "test_sweeps", "test_hub", "test_sweeps_persist"}  # processes, launchers, kill -9


# make test runs `pytest -n 2 --dist loadfile --no-loadscope-reorder`: each test file goes whole to one worker (its
# module fixtures built once), the files in the order below (xdist's own order is by number of tests, which left the
# few long files, one to eleven tests each, for the end, on one worker while the other was done). Longest first:
# these, as measured (seconds in `make test` on a 2-core AMD EPYC: from ~280 for test_sweeps_persist down to ~14),
# then the other files with slow tests (most slow tests first), then the unit tests (most tests first), which fill
# the end so that both workers finish at about the same time. The order changes nothing a test checks; a file
# missing here only runs later.
LONGEST_FIRST = (
    "core/test_sweeps_persist.py", "core/test_benches.py", "core/test_smoke_matrix.py", "classify/test_finsent.py",
    "core/test_saved_folders.py", "core/test_multinode.py", "core/test_hub.py", "classify/test_classification_heads.py",
    "classify/test_own_data.py",
    "classify/test_contract_classify.py", "classify/test_emotion.py", "embedding/test_embedding.py",
    "core/test_console.py", "core/test_resume_ddp.py", "core/test_spine.py", "story/test_story.py",
    "core/test_trust.py", "core/test_loggers.py", "core/test_loop.py", "core/test_sweeps.py", "core/test_trust_io.py",
    "core/test_trust_ckpt.py", "core/test_config.py", "classify/test_lora.py", "core/test_errors.py",
    "novel/test_novel.py",
)


def longest_first(items) -> list:
    """`items` file by file (each file's tests in their order), the longest files first (see LONGEST_FIRST)."""
    files: dict[str, list] = {}
    for item in items:
        files.setdefault(item.nodeid.split("::", 1)[0], []).append(item)

    def rank(path: str) -> tuple:
        known = [i for i, name in enumerate(LONGEST_FIRST) if path.endswith(name)]
        if known:
            return 0, known[0]
        slow = sum(1 for item in files[path] if item.get_closest_marker("slow"))
        return (1, -slow) if slow else (2, -len(files[path]))

    return [item for path in sorted(files, key=rank) for item in files[path]]


def pytest_collection_modifyitems(items):
    """`slow`: every test that runs the command end to end (the nlpexp fixture), trains, or starts processes;
    `make test-fast` runs the others (the unit tests). Under xdist: the files in the order above."""
    for item in items:
        if "nlpexp" in getattr(item, "fixturenames", ()) or item.module.__name__ in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items[:] = longest_first(items)


@pytest.fixture(autouse=True, scope="session")
def _cache_in_tmp(tmp_path_factory):
    """The suite's runs, and the processes they start, keep their caches (NLPEXP_CACHE_DIR: tokenized data,
    embeddings) in this session's temporary folder: never in the user's ~/.cache, nor one a test left behind."""
    before = os.environ.get("NLPEXP_CACHE_DIR")
    os.environ["NLPEXP_CACHE_DIR"] = str(tmp_path_factory.getbasetemp() / "nlpexp_cache")
    yield
    if before is None:
        os.environ.pop("NLPEXP_CACHE_DIR", None)
    else:
        os.environ["NLPEXP_CACHE_DIR"] = before


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
