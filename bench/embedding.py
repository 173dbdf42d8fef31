"""Embedding customization: the vectorised threshold accuracy vs the original study's double loop, and
negative sampling at 20,000 texts.

    .venv/bin/python bench/embedding.py [--pairs 2000] [--repeats 20] [--texts 20000]
    .venv/bin/python bench/embedding.py --tiny   # 200 pairs, 2,000 texts: a second (the test suite runs this)

The double loop (2,000 thresholds x pairs, as in the original notebook) and the sort-once version must give the
same best accuracy; the ratio of their times is printed. Then: drawing 10,000 negatives among 20,000 texts
directly, against the size of the candidate set the original study materialised (all text pairs).
Ends with `ratio X.XX`: the double loop's time over the sort-once version's.
"""
import argparse
import time
import tracemalloc

import numpy as np

from nlpexp.tasks.embedding.data import sample_negatives
from nlpexp.report.metrics import threshold_accuracy


def original_accuracy_and_se(cosine_similarity, labeled_similarity):
    """The original study's loop, verbatim in structure."""
    accuracies = []
    for threshold_thousandths in range(-1000, 1000, 1):
        threshold = threshold_thousandths / 1000
        total = 0
        correct = 0
        for cs, ls in zip(cosine_similarity, labeled_similarity):
            total += 1
            if cs > threshold:
                prediction = 1
            else:
                prediction = -1
            if prediction == ls:
                correct += 1
        accuracy = correct / total
        accuracies.append(accuracy)
    a = max(accuracies)
    n = len(cosine_similarity)
    standard_error = (a * (1 - a) / n) ** 0.5
    return a, standard_error


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--texts", type=int, default=20_000, help="texts to draw negatives among (half as many)")
    parser.add_argument("--tiny", action="store_true", help="seconds-long sizes: 200 pairs, 2 repeats, 2,000 texts")
    args = parser.parse_args()
    if args.tiny:
        args.pairs, args.repeats, args.texts = 200, 2, 2_000
    rng = np.random.default_rng(0)
    labels = rng.choice([1, -1], size=args.pairs)
    sims = np.clip(0.3 * labels + rng.normal(0, 0.35, size=args.pairs), -1, 1)
    sims[: args.pairs // 10] = rng.integers(-1000, 1000, size=args.pairs // 10) / 1000  # ties on grid points

    started = time.perf_counter()
    loop_acc, loop_se = original_accuracy_and_se(sims.tolist(), labels.tolist())
    loop_s = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(args.repeats):
        fast = threshold_accuracy(sims, labels)
    fast_s = (time.perf_counter() - started) / args.repeats
    identical = fast["accuracy"] == loop_acc and fast["se"] == loop_se
    print(f"threshold accuracy over 2,000 thresholds x {args.pairs} pairs")
    print(f"  {'double loop (original)':<26}{loop_s * 1000:>10.1f} ms   accuracy {loop_acc:.6f} ± {1.96 * loop_se:.6f}")
    print(f"  {'sort once (nlpexp)':<26}{fast_s * 1000:>10.3f} ms   "
          f"accuracy {fast['accuracy']:.6f} ± {fast['ci95']:.6f}")
    print(f"  identical: {identical}   speed-up: {loop_s / fast_s:,.0f}x")

    n, half = args.texts, args.texts // 2
    texts = [f"text {i}" for i in range(n)]
    order = rng.permutation(n)
    t1, t2 = [texts[i] for i in order[:half]], [texts[i] for i in order[half:]]
    tracemalloc.start()
    started = time.perf_counter()
    negs = sample_negatives(t1, t2, half, seed=0)
    took = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    all_pairs = n * (n - 1) // 2
    print(f"negative sampling: {len(negs):,} negatives among {n:,} texts in {took:.3f} s, peak {peak:.1f} MiB "
          f"(the original study's set of all pairs would hold {all_pairs:,} tuples)")
    print(f"ratio {loop_s / fast_s:.2f}")  # threshold accuracy: the double loop's time / ours


if __name__ == "__main__":
    main()
