"""report.stats: the bootstrap intervals against closed forms, the metrics of the blocks against the runners' own
(scikit-learn, sacrebleu), McNemar's exact test against a hand-computed table, and the paired comparison on a pair of
made-up runs with a known difference."""
import math

import numpy as np
import pytest

from nlpexp.report import stats
from nlpexp.report.metrics import classification_metrics, distinct_n, multilabel_metrics


def right_wrong(n: int, p: float, seed: int = 0) -> np.ndarray:
    """n items, exactly round(p * n) of them right, in a shuffled order."""
    values = np.zeros(n, dtype=int)
    values[:round(p * n)] = 1
    return np.random.default_rng(seed).permutation(values)


@pytest.mark.parametrize("n,p", [(2000, 0.8), (500, 0.6)])
def test_accuracy_interval_is_the_binomial_one(n, p):
    # the percentile bootstrap of a proportion approaches p ± 1.96 sqrt(p (1 - p) / n)
    lo, hi = stats.intervals([stats.mean_block(right_wrong(n, p), "acc")], 2000, seed=1)["acc_ci"]
    half = 1.959964 * math.sqrt(p * (1 - p) / n)
    assert lo == pytest.approx(p - half, abs=0.15 * half)
    assert hi == pytest.approx(p + half, abs=0.15 * half)


def test_confusion_block_is_scikit_learns_metrics():
    rng = np.random.default_rng(3)
    gold = rng.integers(0, 4, 300)
    pred = np.where(rng.random(300) < 0.7, gold, rng.integers(0, 3, 300))  # label 3 is never predicted
    headline, _ = classification_metrics(gold, np.eye(4)[pred], ["a", "b", "c", "d"])
    found = stats.point([stats.confusion_block(gold, pred, 4)])
    assert found == pytest.approx({f"test_{k}": v for k, v in headline.items()}, abs=1e-12)
    # the same accuracy as a proportion of right items: the confusion block's interval is the proportion's
    same = stats.intervals([stats.mean_block((gold == pred).astype(int), "test_accuracy")], 500, seed=7)
    assert stats.intervals([stats.confusion_block(gold, pred, 4)], 500, seed=7)["test_accuracy_ci"] == \
        same["test_accuracy_ci"]


def test_multilabel_block_is_scikit_learns_metrics():
    rng = np.random.default_rng(4)
    gold = rng.random((200, 5)) < 0.3
    proba = np.clip(gold * 0.6 + rng.random((200, 5)) * 0.5, 0, 1)
    thresholds = np.array([0.5, 0.4, 0.6, 0.5, 0.55])
    headline, _ = multilabel_metrics(gold.astype(float), proba, list("abcde"), thresholds)
    found = stats.point([stats.multilabel_block(gold, proba >= thresholds)])
    assert found == pytest.approx({f"test_{k}": v for k, v in headline.items()}, abs=1e-12)


def test_bleu_block_is_sacrebleus_corpus_bleu():
    from sacrebleu.metrics.bleu import BLEU

    hyps = ["the cat sat on the mat today", "a dog ran home fast", "he went to the store and bought milk ."] * 4
    refs = ["the cat sat on a mat", "the dog ran home", "she went to the store to buy bread ."] * 4
    block, signature = stats.bleu_block(hyps, refs, "test")
    found = stats.point([block])
    for order in (1, 2, 4):
        assert found[f"test_bleu_{order}"] == pytest.approx(
            BLEU(max_ngram_order=order).corpus_score(hyps, [refs]).score / 100, abs=1e-12)
    assert signature.startswith("nrefs:1|") and "tok:13a" in signature


def test_ratio_blocks():
    seqs = [list("abcab"), list("abd"), list("x"), list("abcabc")]
    assert stats.point([stats.distinct_block(seqs, 2, "d2")])["d2"] == pytest.approx(distinct_n(seqs, 2))
    nll, tokens = np.array([10.0, 3.0, 7.5]), np.array([4, 1, 5])
    assert stats.point([stats.perplexity_block(nll, tokens, "ppl")])["ppl"] == pytest.approx(math.exp(20.5 / 10))


def test_mcnemar_hand_table():
    # A right / B wrong on 10 items, the reverse on 3, both right on 50, both wrong on 7:
    # p = 2 P(X <= 3), X ~ Binomial(13, 1/2) = 2 (1 + 13 + 78 + 286) / 2^13
    a = [1] * 10 + [0] * 3 + [1] * 50 + [0] * 7
    b = [0] * 10 + [1] * 3 + [1] * 50 + [0] * 7
    found = stats.mcnemar(a, b)
    assert (found["a_only"], found["b_only"]) == (10, 3)
    assert found["p_value"] == pytest.approx(2 * 378 / 8192, abs=1e-12)
    assert stats.mcnemar(a, a)["p_value"] == 1.0


def test_paired_comparison_of_a_known_difference():
    n = 2000
    a = right_wrong(n, 0.85, seed=5)
    b = a.copy()
    flip = np.random.default_rng(6).choice(np.flatnonzero(a == 1), 100, replace=False)
    b[flip] = 0  # B is A with 100 of its right answers wrong: 0.80, and every difference goes one way
    rows = stats.compare([stats.mean_block(a, "test_accuracy")], [stats.mean_block(b, "test_accuracy")], 1000, 0)
    row = rows[0]
    assert row["difference"] == pytest.approx(0.05)
    assert row["ci"][0] < 0.05 < row["ci"][1] and row["ci"][0] > 0
    assert row["p_value"] < 0.01
    assert (row["mcnemar"]["a_only"], row["mcnemar"]["b_only"]) == (100, 0)
    assert row["mcnemar"]["p_value"] < 1e-20
    same = stats.compare([stats.mean_block(a, "test_accuracy")], [stats.mean_block(a, "test_accuracy")], 200, 0)
    assert same[0]["difference"] == 0 and same[0]["p_value"] == 1.0


def test_t_interval_by_hand():
    lo, hi = stats.t_interval([1.0, 2.0, 3.0])
    half = 4.302653 / math.sqrt(3)  # t(0.975, 2 degrees of freedom) * std 1 / sqrt(3)
    assert (lo, hi) == pytest.approx((2 - half, 2 + half), abs=1e-5)
    assert stats.t_interval([0.5]) is None


def test_items_are_saved_and_read_back(tmp_path):
    gold, pred = [0, 1, 1, 2], [0, 1, 2, 2]
    digest = stats.items_hash(["a", ("b", "c"), "d", "e"], gold)
    assert digest != stats.items_hash(["a", ("b", "c"), "d", "e"], [0, 1, 1, 1])  # gold counts
    assert digest != stats.items_hash(["a", ("b", "x"), "d", "e"], gold)  # both texts of a pair count
    stats.save(tmp_path, digest, [stats.confusion_block(gold, pred, 3)])
    found, blocks = stats.load(tmp_path)
    assert found == digest and stats.point(blocks)["test_accuracy"] == 0.75
    (tmp_path / stats.ITEMS_FILE).write_text('{"items_sha256": "x", "blocks": [{"kind": "pickle"}]}')
    with pytest.raises(ValueError, match="is not a test_items file"):
        stats.load(tmp_path)
    with pytest.raises(ValueError, match="has no test_items.json"):
        stats.load(tmp_path / "missing")
