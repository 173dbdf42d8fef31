"""What the bootstrap intervals add to a run: the test metrics of a 2,000-item test set scored once (what a run did
before) against the same plus `eval.bootstrap=1000` resamples of every metric (report.stats.intervals).

Two test sets, made up with a fixed seed: a 3-label classification (accuracy, macro F1, weighted P/R: one confusion
block) and 2,000 generated stories against their references (BLEU-1/2/4, distinct-1/2, repetition: the story wing's
blocks). Each is timed over a few repeats, side by side; the goal is under 2 s added per run. The last line is the
time with the intervals over the time without.

    python bench/bootstrap.py [--items 2000] [--resamples 1000] [--repeats 3]
    python bench/bootstrap.py --tiny   # 200 items, 100 resamples: a check that the bench works
"""
import argparse
import time

import numpy as np
import sacrebleu

from nlpexp.report import stats
from nlpexp.report.metrics import bleu_scores, classification_metrics, distinct_n, repetition_rate


def test_sets(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 3, n)
    pred = np.where(rng.random(n) < 0.8, gold, rng.integers(0, 3, n))
    words = [f"w{i}" for i in range(3000)]
    refs = [" ".join(rng.choice(words, 40)) for _ in range(n)]
    hyps = [" ".join(w if rng.random() < 0.3 else rng.choice(words) for w in r.split()[:35]) for r in refs]
    return gold, pred, hyps, refs


def score(gold, pred, hyps, refs, bleu: bool = True) -> dict:
    """The metrics as a run computed them before the intervals (bleu=False: corpus BLEU is left to the block's
    point value, as the story wing now reads it, so sacrebleu counts the n-grams once)."""
    metrics, _ = classification_metrics(gold, np.eye(3)[pred], ["a", "b", "c"])
    if bleu:
        metrics["bleu"], metrics["sentence_bleu"] = bleu_scores(hyps, refs)
    else:  # the mean sentence BLEU the story wing still reports
        metrics["sentence_bleu"] = float(np.mean([sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(hyps, refs)]))
    words = [h.split() for h in hyps]
    metrics.update(d1=distinct_n(words, 1), d2=distinct_n(words, 2), rep=repetition_rate(words, 4))
    return metrics


def blocks_of(gold, pred, hyps, refs) -> list:
    """What a run adds for the intervals: the per-item statistics the bootstrap resamples."""
    words = [h.split() for h in hyps]
    bleu, _ = stats.bleu_block(hyps, refs, "t")
    blocks = [stats.confusion_block(gold, pred, 3), bleu, stats.distinct_block(words, 1, "d1"),
              stats.distinct_block(words, 2, "d2"),
              stats.mean_block([repetition_rate([w], 4) for w in words], "rep")]
    return blocks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    if args.tiny:
        args.items, args.resamples, args.repeats = 200, 100, 1
    data = test_sets(args.items)
    small = test_sets(50)
    score(*small), stats.intervals(blocks_of(*small), 10, seed=0)  # imports out of the timing
    without, with_ci = [], []
    for _ in range(args.repeats):  # side by side, alternating
        started = time.perf_counter()
        score(*data)
        without.append(time.perf_counter() - started)
        started = time.perf_counter()
        score(*data, bleu=False)
        blocks = blocks_of(*data)
        stats.point(blocks)
        found = stats.intervals(blocks, args.resamples, seed=42)
        with_ci.append(time.perf_counter() - started)
    a, b = float(np.median(without)), float(np.median(with_ci))
    print(f"{args.items} test items, {args.resamples} resamples, {len(found)} intervals, median of {args.repeats}")
    print(f"metrics only          {a:7.3f} s")
    print(f"metrics + intervals   {b:7.3f} s   (the bootstrap adds {b - a:.3f} s; goal: under 2 s)")
    print(f"ratio {b / a:.2f}")


if __name__ == "__main__":
    main()
