"""Training throughput: the nlpexp runner vs the original study's hand-written recipe, same model, same data.

The original recipe: transformers Trainer, texts padded to max_length=128, batch 8.
The runner: `nlpexp task=finsent` (dynamic padding, length-grouped batches), batch 8.
Both train the same model for the same number of samples on the same split; both evaluate once on validation.

    python bench/finsent_throughput.py [--data PATH] [--samples N] [--model minilm]
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


def runner(data: str | None, samples: int, model: str, out: Path) -> float:
    args = [sys.executable, "-m", "nlpexp.cli", "task=finsent", f"model={model}", "trainer.epochs=1",
            f"data.max_train_samples={samples}", f"hydra.run.dir={out}"]
    if data:
        args.append(f"data.path={data}")
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((out / "metrics.json").read_text())["train_samples_per_s"]


def original_recipe(data: str | None, samples: int, model: str, out: Path) -> float:
    """What the study's notebook did: pad everything to 128 tokens, batch 8, Trainer with per-epoch eval."""
    import numpy as np
    from datasets import Dataset
    from hydra import compose, initialize_config_module
    from transformers import Trainer, TrainingArguments

    from nlpexp.tasks.classify.data import load_splits
    from nlpexp.tasks.classify.hf import build

    overrides = [f"model={model}", f"data.max_train_samples={samples}"] + ([f"data.path={data}"] if data else [])
    with initialize_config_module("nlpexp.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    labels = list(cfg.task.labels)
    splits = load_splits(cfg.data, labels, cfg.seed)
    tokenizer, net = build(cfg.model, labels, splits["train"]["text"], 128)

    def encode(frame):
        ds = Dataset.from_dict({"text": list(frame["text"]), "label": list(frame["label"])})
        return ds.map(lambda b: tokenizer(b["text"], padding="max_length", max_length=128, truncation=True),
                      batched=True)

    args = TrainingArguments(output_dir=str(out), num_train_epochs=1, per_device_train_batch_size=8,
                             per_device_eval_batch_size=64, learning_rate=2e-5, weight_decay=0.01, warmup_steps=0.1,
                             eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
                             metric_for_best_model="accuracy", seed=cfg.seed, use_cpu=True, report_to=[],
                             disable_tqdm=True)
    trainer = Trainer(model=net, args=args, train_dataset=encode(splits["train"]),
                      eval_dataset=encode(splits["validation"]),
                      compute_metrics=lambda p: {"accuracy": float((np.argmax(p[0], -1) == p[1]).mean())})
    return trainer.train().metrics["train_samples_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA) if DEFAULT_DATA.exists() else None,
                        help="Financial PhraseBank file (default: ../shared/datasets copy, else the embedded sample)")
    parser.add_argument("--samples", type=int, default=800)
    parser.add_argument("--model", default="minilm")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.time()
        ours = runner(opts.data, opts.samples, opts.model, Path(tmp) / "runner")
        theirs = original_recipe(opts.data, opts.samples, opts.model, Path(tmp) / "original")
    print(f"data: {opts.data or 'embedded sample'}; model {opts.model}; {opts.samples} training samples, 1 epoch")
    print(f"{'':<34}{'samples/s':>10}")
    print(f"{'original recipe (pad to 128)':<34}{theirs:>10.1f}")
    print(f"{'nlpexp runner (dynamic padding)':<34}{ours:>10.1f}")
    print(f"runner / original recipe, samples/s ({time.time() - started:.0f}s in all):")
    print(f"ratio {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
