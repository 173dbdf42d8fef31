"""LoRA vs full fine-tuning of MiniLM on finsent: the same split, seed and epochs, run side by side (one CPU
thread each), so the samples/s ratio is measured under the same load.

    python bench/lora.py                                    # the embedded sample (a minute)
    python bench/lora.py --data ../shared/datasets/financial_phrasebank/Sentences_50Agree.txt --epochs 6
    python bench/lora.py --tiny     # seconds: MiniLM built small (model.pretrained=null), 64 texts, 1 epoch
Full: experiment=finsent_minilm (LP-FT, lr 5e-5). LoRA: the same with model.lora.r=8 alpha=16 and lr 5e-4.
Ends with `ratio X.XX`: LoRA's training samples/s over full fine-tuning's.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

LORA = ["model.lora.r=8", "model.lora.alpha=16", "trainer.lr=5e-4"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", help="a PhraseBank file (default: the embedded sample)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tiny", action="store_true",
                        help="seconds: MiniLM built small (model.pretrained=null), the embedded sample, 64 training "
                             "and 32 evaluation texts, 1 epoch (a check that the bench works, not a measurement)")
    args = parser.parse_args()
    tiny = ["model.pretrained=null", "data.max_train_samples=64", "data.max_eval_samples=32"] if args.tiny else []
    if args.tiny:
        args.data, args.epochs = None, 1
    base = ["experiment=finsent_minilm", f"trainer.epochs={args.epochs}", f"seed={args.seed}", "data.split_seed=42",
            *([f"data.path={Path(args.data).resolve()}"] if args.data else []), *tiny]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "NLPEXP_PROGRESS": "off"}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {name: Path(tmp) / name for name in ("full", "lora")}
        procs = [subprocess.Popen([sys.executable, "-m", "nlpexp", *base, *(LORA if name == "lora" else []),
                                   f"hydra.run.dir={folder}"], env=env, stdout=subprocess.DEVNULL)
                 for name, folder in runs.items()]
        if any(p.wait() for p in procs):
            sys.exit("a run failed")
        m = {name: json.loads((folder / "metrics.json").read_text()) for name, folder in runs.items()}
        size = {name: sum(f.stat().st_size for f in (folder / "checkpoints" / "best").iterdir()) / 1e6
                for name, folder in runs.items()}
    print(f"{'':6} {'trainable':>10} {'share':>7} {'samples/s':>10} {'val acc':>8} {'test acc':>9} {'ckpt MB':>8}")
    for name, s in m.items():
        print(f"{name:6} {s['trainable_params']:>10,} {s['trainable_params'] / s['total_params']:>7.2%} "
              f"{s['train_samples_per_s']:>10.2f} {s['metrics']['val_accuracy']:>8.4f} "
              f"{s['metrics']['test_accuracy']:>9.4f} {size[name]:>8.1f}")
    print(f"ratio {m['lora']['train_samples_per_s'] / m['full']['train_samples_per_s']:.2f}")


if __name__ == "__main__":
    main()
