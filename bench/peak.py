"""How close the runner's training comes to this machine's matmul peak, measured in one run.

1. Peak: the best of square matmuls (1024, 2048, 4096) in fp32 and in bf16 on all cores, FLOP/s = 2 n^3 / time,
   measured before and after the runner (the best of both: a shared machine only ever lowers it).
2. The runner: `nlpexp task=finsent model=minilm trainer.epochs=1` on Financial-PhraseBank-sized data, with
   `trainer.precision=<--precision>`; its training FLOP/s = samples/s x tokens per sample x
   (6 x non-embedding parameters + 6 x layers x tokens x hidden), the usual estimate of a forward and backward pass
   (Kaplan et al., 2020), counting only real (unpadded) tokens. samples/s is metrics.json's train_samples_per_s,
   whose time includes the end-of-epoch evaluation and checkpoint: the validation split is capped
   (--eval-samples, data.max_eval_samples) so that they weigh little.
The last line is the runner's fraction of the peak of the precision it trained in (metrics.json "precision";
fp32 when a run does not record it).

    python bench/peak.py [--data PATH] [--samples N] [--precision fp32|bf16] [--eval-samples 64]
    python bench/peak.py --tiny   # seconds: 128/256 matmuls for 0.05 s, MiniLM built small (model.pretrained=null)
                                  # on 64 texts of the embedded sample (the test suite runs this)
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/datasets/financial_phrasebank/Sentences_50Agree.txt"


def matmul_peak(dtype, sizes=(1024, 2048, 4096), seconds: float = 2.0) -> tuple[float, int]:
    """(best FLOP/s, the size that reached it)."""
    import torch

    best = (0.0, 0)
    for n in sizes:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        a @ b  # warm-up: allocation, kernel choice
        reps, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            a @ b
            reps += 1
        flops = 2 * n ** 3 * reps / (time.perf_counter() - started)
        best = max(best, (flops, n))
    return best


def runner_flops(data: str | None, samples: int, precision: str, eval_samples: int, out: Path,
                 extra: list[str]) -> dict:
    """The run's model and tokenizer sizes are read back from its saved model (checkpoints/best)."""
    from transformers import AutoConfig, AutoTokenizer

    from nlpexp.inputs.readers import read_labelled_file

    args = [sys.executable, "-m", "nlpexp.cli", "task=finsent", "model=minilm", "trainer.epochs=1",
            f"data.max_train_samples={samples}", f"data.max_eval_samples={eval_samples}", f"hydra.run.dir={out}",
            *extra]
    args += [f"data.path={data}"] if data else []
    args += [f"trainer.precision={precision}"]  # always: auto means bf16 on a CPU with native bf16
    run = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if run.returncode != 0:
        sys.exit(f"bench/peak.py: the runner failed ({' '.join(args[2:])}): {run.stderr.strip()[-400:]}")
    summary = json.loads((out / "metrics.json").read_text())
    texts = read_labelled_file(data or Path(__file__).parents[1] / "nlpexp/resources/finsent.csv")["text"].tolist()
    saved = out / "checkpoints" / "best"
    tokenizer = AutoTokenizer.from_pretrained(saved)
    tokens = sum(len(ids) for ids in tokenizer(texts, truncation=True, max_length=128)["input_ids"]) / len(texts)
    config = AutoConfig.from_pretrained(saved)
    hidden, layers = config.hidden_size, config.num_hidden_layers
    embeddings = (config.vocab_size + config.max_position_embeddings + config.type_vocab_size) * hidden
    params = summary["total_params"] - embeddings
    per_token = 6 * params + 6 * layers * tokens * hidden
    return {"samples_per_s": summary["train_samples_per_s"], "tokens_per_sample": tokens,
            "precision": summary.get("precision", "fp32"),
            "non_embedding_params": params, "flops": summary["train_samples_per_s"] * tokens * per_token}


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA) if DEFAULT_DATA.exists() else None,
                        help="Financial PhraseBank file (default: ../shared/datasets copy, else the embedded sample)")
    parser.add_argument("--samples", type=int, default=800)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="the runner's trainer.precision (always given to it)")
    parser.add_argument("--eval-samples", type=int, default=64, help="validation texts (data.max_eval_samples)")
    parser.add_argument("--tiny", action="store_true",
                        help="seconds: 128/256 matmuls for 0.05 s each, MiniLM built small (model.pretrained=null), "
                             "64 texts of the embedded sample (a check that the bench works, not a measurement)")
    opts = parser.parse_args()
    sizes, seconds, extra = (1024, 2048, 4096), 2.0, []
    if opts.tiny:
        sizes, seconds, extra = (128, 256), 0.05, ["model.pretrained=null"]
        opts.data, opts.samples, opts.eval_samples = None, 64, 16
    threads, load = torch.get_num_threads(), os.getloadavg()[0]
    before = {"fp32": matmul_peak(torch.float32, sizes, seconds), "bf16": matmul_peak(torch.bfloat16, sizes, seconds)}
    with tempfile.TemporaryDirectory() as tmp:
        ours = runner_flops(opts.data, opts.samples, opts.precision, opts.eval_samples, Path(tmp) / "run", extra)
    after = {"fp32": matmul_peak(torch.float32, sizes, seconds), "bf16": matmul_peak(torch.bfloat16, sizes, seconds)}
    peak = {k: max(before[k], after[k]) for k in before}
    (fp32, n32), (bf16, n16) = peak["fp32"], peak["bf16"]
    trained = ours["precision"] if ours["precision"] in peak else "fp32"
    print(f"matmul peak, {threads} threads (load average {load:.1f} -> {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores): fp32 {fp32 / 1e9:.1f} GFLOP/s (n={n32}), bf16 {bf16 / 1e9:.1f} GFLOP/s "
          f"(n={n16}), bf16/fp32 {bf16 / fp32:.2f}; before/after the runner: fp32 {before['fp32'][0] / 1e9:.1f}/"
          f"{after['fp32'][0] / 1e9:.1f}, bf16 {before['bf16'][0] / 1e9:.1f}/{after['bf16'][0] / 1e9:.1f}")
    built = " (built small: model.pretrained=null)" if opts.tiny else ""
    print(f"runner, MiniLM{built} asked {opts.precision}, trained in {ours['precision']} (metrics.json) on "
          f"{opts.data or 'the embedded sample'}: {ours['samples_per_s']:.1f} samples/s x "
          f"{ours['tokens_per_sample']:.1f} tokens x {ours['non_embedding_params'] / 1e6:.1f}M non-embedding "
          f"parameters = {ours['flops'] / 1e9:.1f} GFLOP/s")
    if ours["precision"] != opts.precision:
        print(f"warning: asked for {opts.precision}, the runner trained in {ours['precision']}")
    print(f"runner's training FLOP/s / the {trained} matmul peak = {ours['flops'] / peak[trained][0]:.3f} "
          f"(of the fp32 peak {ours['flops'] / fp32:.3f}, of the bf16 peak {ours['flops'] / bf16:.3f})")
    print(f"ratio {ours['flops'] / peak[trained][0]:.2f}")


if __name__ == "__main__":
    main()
