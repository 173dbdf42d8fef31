"""Every bench/*.py at its seconds-long size (`--tiny`), so that a change that breaks a bench fails here. Found by
glob: a new bench is covered as soon as it exists (it needs a --tiny flag). No timing is asserted: each bench must
exit 0 and end, as at full size, with the line `ratio X.XX`. Each runs in its own temporary folder (cwd and
TMPDIR): a bench writes nothing into the repository."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHES = sorted((ROOT / "bench").glob("*.py"))
RATIO = re.compile(r"^ratio \d+\.\d\d$")


def test_benches_are_found():
    assert BENCHES, f"no bench/*.py under {ROOT}"


@pytest.mark.slow
@pytest.mark.parametrize("bench", BENCHES, ids=lambda path: path.stem)
def test_bench_tiny(bench, tmp_path):
    # one thread: the suite runs on 2 workers, and torch threads that wait for a busy core spin
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, str(bench), "--tiny"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    lines = run.stdout.strip().splitlines()
    shown = f"stdout:\n{run.stdout[-2000:]}\nstderr:\n{run.stderr[-3000:]}"
    assert run.returncode == 0, f"bench/{bench.name} --tiny: exit {run.returncode}\n{shown}"
    assert lines and RATIO.match(lines[-1]), f"bench/{bench.name} --tiny: the last line is not `ratio X.XX`\n{shown}"
