"""What the tokenized-data cache saves: `mode=prepare` on a large CSV twice, the first tokenizing it into a fresh
cache, the second finding it there.

An N-row CSV of synthetic text,label rows (finsent's labels; default 1,000,000 rows) is written to a temporary
folder, then `nlpexp task=finsent model=bert_fc mode=prepare data.path=<file> model.pretrained=null` runs twice
in subprocesses with one fresh NLPEXP_CACHE_DIR. Both runs read, deduplicate and split the file and train the
WordPiece as training would; only the second skips the tokenizing. Each run's wall time and peak resident memory
(its own rusage, os.wait4) are printed; the last line is first time / second time.

    python bench/prepare.py [--rows 1000000]
    python bench/prepare.py --tiny   # 300 rows: a check that the bench works (the test suite runs this)
"""
import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
LABELS = ("negative", "neutral", "positive")


def write_csv(path: Path, rows: int, seed: int = 0) -> None:
    """`rows` distinct texts of 8-30 words drawn from a 20,000-word vocabulary, a random finsent label each."""
    rng = random.Random(seed)
    words = [f"w{i:x}" for i in range(20000)]
    with path.open("w", encoding="utf-8") as out:
        out.write("text,label\n")
        for i in range(rows):
            text = " ".join(rng.choices(words, k=rng.randint(8, 30)))
            out.write(f"row{i} {text},{rng.choice(LABELS)}\n")


def run_prepare(data: Path, cache: Path, out: Path) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in GB, stdout) of one `mode=prepare` process."""
    args = [sys.executable, "-m", "nlpexp.cli", "task=finsent", "model=bert_fc", "mode=prepare", f"data.path={data}",
            "model.pretrained=null", f"hydra.run.dir={out}"]
    env = {**os.environ, "NLPEXP_CACHE_DIR": str(cache)}
    log = out.with_suffix(".log")
    started = time.perf_counter()
    with log.open("w") as handle:
        proc = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=env, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (RUSAGE_CHILDREN would mix both runs)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text()
    if proc.returncode != 0:
        sys.exit(f"bench/prepare.py: the run failed ({' '.join(args[2:])}):\n{text[-2000:]}")
    return seconds, usage.ru_maxrss * 1024 / 1e9, text  # Linux: ru_maxrss in KiB


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--tiny", action="store_true", help="300 rows: a check that the bench works")
    opts = parser.parse_args()
    rows = 300 if opts.tiny else opts.rows
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data, cache = tmp / "big.csv", tmp / "cache"
        started = time.perf_counter()
        write_csv(data, rows)
        print(f"data: {rows:,} rows, {data.stat().st_size / 1e6:.1f} MB, written in "
              f"{time.perf_counter() - started:.1f} s; {cpu_name()}, {os.cpu_count()} cores")
        first = run_prepare(data, cache, tmp / "first")
        second = run_prepare(data, cache, tmp / "second")
    for name, (_, _, text) in (("first", first), ("second", second)):
        lines = [line for line in text.splitlines() if line.startswith("tokenized ")]
        print(f"{name}: " + "; ".join(lines))
    reused = [line for line in second[2].splitlines() if line.startswith("tokenized ") and "(cached:" in line]
    if len(reused) != 2:
        sys.exit("bench/prepare.py: the second run did not find train and validation in the cache")
    print(f"first run (tokenized, saved to the cache): {first[0]:.1f} s, peak {first[1]:.2f} GB")
    print(f"second run (read from the cache):          {second[0]:.1f} s, peak {second[1]:.2f} GB")
    print(f"ratio {first[0] / second[0]:.2f}")


if __name__ == "__main__":
    main()
