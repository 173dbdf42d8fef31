"""Prediction speed: `nlpexp mode=predict input=<N texts>` vs transformers' text-classification pipeline, same model,
same texts, measured in one run.

The model: a MiniLM classifier trained for a few steps (`+smoke=true model=minilm`: the full 22.7M-parameter
encoder with its head; the speed does not depend on how well it is trained). The texts: Financial PhraseBank
sentences (or the embedded sample) repeated to N. The runner is timed as the whole command a user types
(start-up, loading, reading the file, writing the CSV); the pipeline in-process, after loading, as users call it
(`pipe(texts)`, its default batch of 1), and with batch_size=64 for reference.

    python bench/predict.py [--data PATH] [--texts 10000]
    python bench/predict.py --tiny   # seconds: MiniLM built small (model.pretrained=null), 64 embedded texts
Ends with `ratio X.XX`: the runner's texts/s over the pipeline's at its default batch.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/datasets/financial_phrasebank/Sentences_50Agree.txt"


def nlpexp(*args, cwd: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "nlpexp", *args], cwd=cwd, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    if run.returncode != 0:
        sys.exit(f"bench/predict.py: nlpexp {' '.join(args)} failed (exit {run.returncode}): {run.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA) if DEFAULT_DATA.exists() else None)
    parser.add_argument("--texts", type=int, default=10_000)
    parser.add_argument("--tiny", action="store_true",
                        help="seconds: MiniLM built small (model.pretrained=null), 64 texts of the embedded sample "
                             "(a check that the bench works, not a measurement)")
    opts = parser.parse_args()
    if opts.tiny:
        opts.data, opts.texts = None, 64
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # the model trains (untimed) while this process imports what it needs and reads the texts
        with open(tmp / "train.err", "w") as err:
            train = subprocess.Popen([sys.executable, "-m", "nlpexp", "+smoke=true", "model=minilm",
                                      *(["model.pretrained=null"] if opts.tiny else []),
                                      f"hydra.run.dir={tmp / 'run'}"], cwd=tmp, stdout=subprocess.DEVNULL, stderr=err)
        import torch
        from transformers import pipeline

        from nlpexp.inputs.readers import read_labelled_file

        source = opts.data or Path(__file__).parents[1] / "nlpexp/resources/finsent.csv"
        pool = read_labelled_file(source)["text"].tolist()
        texts = [pool[i % len(pool)] for i in range(opts.texts)]
        (tmp / "texts.txt").write_text("\n".join(texts) + "\n")
        if train.wait() != 0:
            sys.exit(f"bench/predict.py: the training run failed (exit {train.returncode}): "
                     f"{(tmp / 'train.err').read_text()[-2000:]}")
        started = time.perf_counter()
        nlpexp("mode=predict", f"ckpt={tmp / 'run'}", f"input={tmp / 'texts.txt'}", f"output={tmp / 'p.csv'}",
               cwd=tmp)
        ours = opts.texts / (time.perf_counter() - started)
        pipe = pipeline("text-classification", model=str(tmp / "run" / "checkpoints" / "best"), device=-1,
                        truncation=True, max_length=128)
        rates = {}
        for batch in (1, 64):
            started = time.perf_counter()
            pipe(texts, batch_size=batch)
            rates[batch] = opts.texts / (time.perf_counter() - started)
    built = " (built small: model.pretrained=null)" if opts.tiny else ""
    print(f"{opts.texts} texts from {source}; MiniLM classifier{built}; {torch.get_num_threads()} threads")
    print(f"{'':<52}{'texts/s':>9}")
    print(f"{'nlpexp mode=predict (whole command, start-up included)':<52}{ours:>9.1f}")
    print(f"{'transformers pipeline, default batch (1), after loading':<52}{rates[1]:>9.1f}")
    print(f"{'transformers pipeline, batch_size=64, after loading':<52}{rates[64]:>9.1f}")
    print(f"runner / pipeline at batch 64: {ours / rates[64]:.2f}")
    print(f"ratio {ours / rates[1]:.2f}")


if __name__ == "__main__":
    main()
