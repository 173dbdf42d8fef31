"""bf16 vs fp32 training throughput on this machine's CPU, side by side: what `trainer.precision=auto` decides from.

Both runs train the same MiniLM on the same finsent texts for the same samples, one thread each, alternating
(noise on a shared machine hits both). Prints the CPU, whether its bf16 is native, and bf16/fp32 samples/s.

    python bench/precision.py [--samples 256] [--rounds 2] [--data PATH]
    python bench/precision.py --tiny   # seconds: MiniLM built small (model.pretrained=null), 32 samples, 1 round
Ends with `ratio X.XX`: bf16 samples/s over fp32's.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nlpexp.training.precision import cpu_has_native_bf16, cpu_name  # noqa: E402


def samples_per_s(precision: str, samples: int, data: str | None, out: Path, extra: list[str]) -> float:
    args = [sys.executable, "-m", "nlpexp.cli", "task=finsent", "model=minilm", "trainer.epochs=1",
            f"trainer.precision={precision}", f"data.max_train_samples={samples}", f"hydra.run.dir={out}", *extra]
    args += [f"data.path={data}"] if data else []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return json.loads((out / "metrics.json").read_text())["train_samples_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", default=None)
    parser.add_argument("--tiny", action="store_true",
                        help="seconds: MiniLM built small (model.pretrained=null), the embedded sample, 32 samples, "
                             "1 round (a check that the bench works, not a measurement)")
    args = parser.parse_args()
    extra = ["model.pretrained=null", "data.max_eval_samples=32"] if args.tiny else []
    if args.tiny:
        args.samples, args.rounds, args.data = 32, 1, None
    speeds = {"fp32": [], "bf16": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for precision in speeds:
                speeds[precision].append(samples_per_s(precision, args.samples, args.data,
                                                       Path(tmp) / f"{precision}_{r}", extra))
    fp32, bf16 = median(speeds["fp32"]), median(speeds["bf16"])
    print(f"cpu: {cpu_name()} (native bf16: {cpu_has_native_bf16()})")
    print(f"samples/s, median of {args.rounds}: fp32 {fp32:.2f}, bf16 {bf16:.2f}")
    print(f"ratio {bf16 / fp32:.2f}")


if __name__ == "__main__":
    main()
