"""Training throughput: the nlpexp runner vs the original study's hand-written recipe, same model, same data.

The original recipe: transformers Trainer, texts padded to max_length=128, batch 8.
The runner: `nlpexp task=finsent` (dynamic padding, length-grouped batches), batch 8.
Both train the same model for the same number of samples on the same split; both evaluate once on validation.

    python bench/finsent_throughput.py [--data PATH] [--samples N] [--model minilm]
    python bench/finsent_throughput.py --tiny   # seconds: the model built small (model.pretrained=null), 64
                                                # samples of the embedded sample, both at once on one thread
                                                # each (the test suite runs this)
Ends with `ratio X.XX`: the runner's training samples/s over the original recipe's.
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


def runner(data: str | None, samples: int, model: str, out: Path, extra: list[str], env: dict):
    """Start the `nlpexp` command; returns a function that waits for it and gives its training samples/s."""
    args = [sys.executable, "-m", "nlpexp.cli", "task=finsent", f"model={model}", "trainer.epochs=1",
            f"data.max_train_samples={samples}", f"hydra.run.dir={out}", *extra]
    if data:
        args.append(f"data.path={data}")
    err = out.parent / "runner.err"  # a file: a pipe read only at the end could fill up and stop the run
    with open(err, "w") as stderr:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=stderr, env={**os.environ, **env})

    def samples_per_s() -> float:
        if proc.wait() != 0:
            sys.exit(f"bench/finsent_throughput.py: the runner failed (exit {proc.returncode}): "
                     f"{err.read_text().strip()[-2000:]}")
        return json.loads((out / "metrics.json").read_text())["train_samples_per_s"]

    return samples_per_s


def original_recipe(data: str | None, samples: int, model: str, out: Path, extra: list[str]) -> float:
    """What the study's notebook did: from_pretrained(num_labels=3) (a fresh head), pad everything to 128
    tokens, batch 8, Trainer with per-epoch eval."""
    import numpy as np
    from datasets import Dataset
    from hydra import compose, initialize_config_module
    from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

    from nlpexp.inputs.hub import load_pretrained
    from nlpexp.tasks.classify.data import load_splits
    from nlpexp.tasks.classify.hf import build

    overrides = ["task=finsent", f"model={model}", f"data.max_train_samples={samples}", *extra] + (
        [f"data.path={data}"] if data else [])
    with initialize_config_module("nlpexp.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    labels = list(cfg.task.labels)
    splits = load_splits(cfg.data, labels, cfg.seed)
    if cfg.model.pretrained is None:  # built small from config, one output per label (as the runner builds it)
        tokenizer, net = build(cfg.model, labels, splits["train"]["text"], 128)
    else:  # a pretrained checkpoint's own head has its own classes (or none): a fresh one, as the notebook's
        tokenizer, net = load_pretrained(cfg.model.pretrained, AutoModelForSequenceClassification,
                                         cfg.model.get("revision"), num_labels=len(labels),
                                         ignore_mismatched_sizes=True)

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
    parser.add_argument("--tiny", action="store_true",
                        help="seconds: the model built small (model.pretrained=null), the embedded sample, 64 samples, "
                             "32 evaluation texts, the two side by side on one thread each (a check that the bench "
                             "works, not a measurement)")
    opts = parser.parse_args()
    extra, env = [], {}
    if opts.tiny:
        opts.data, opts.samples, extra = None, 64, ["model.pretrained=null", "data.max_eval_samples=32"]
        env = {"OMP_NUM_THREADS": "1"}
        import torch

        torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.time()
        ours = runner(opts.data, opts.samples, opts.model, Path(tmp) / "runner", extra, env)
        if not opts.tiny:  # one after the other; --tiny: the original recipe runs while the runner does
            ours = ours()
        theirs = original_recipe(opts.data, opts.samples, opts.model, Path(tmp) / "original", extra)
        if opts.tiny:
            ours = ours()
    built = " built small (model.pretrained=null)" if opts.tiny else ""
    print(f"data: {opts.data or 'embedded sample'}; model {opts.model}{built}; {opts.samples} training samples, "
          "1 epoch")
    print(f"{'':<34}{'samples/s':>10}")
    print(f"{'original recipe (pad to 128)':<34}{theirs:>10.1f}")
    print(f"{'nlpexp runner (dynamic padding)':<34}{ours:>10.1f}")
    print(f"runner / original recipe, samples/s ({time.time() - started:.0f}s in all):")
    print(f"ratio {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
