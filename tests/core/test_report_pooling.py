"""nlpexp-report over fabricated run folders: runs are pooled over seeds only when task, model, data and config
agree (else a line says which field differs), intervals beside each value and a t-interval across seeds, and the
paired comparison of two runs on the same test items (`--compare`, and the report's section between
configurations), refused in one line when the items differ."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from nlpexp.report import stats
from nlpexp.report import tables as report

SHA_A, SHA_B = "3f2a" + "1" * 60, "9bc1" + "2" * 60


def run_folder(folder, overrides, metrics, *, config=None, sources=None, intervals=None, items=None,
               baselines=None, seed=1, model="bert"):
    """A finished run as nlpexp writes it: .hydra/overrides.yaml and config.yaml, metrics.json (provenance,
    intervals, baselines when given) and test_items.json (items: (hash, blocks))."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    saved = {"task": {"name": "finsent"}, "model": {"name": model}, "trainer": {"lr": 2e-5, "epochs": 3},
             "data": {"path": "data/x.csv", "split_seed": None}, "seed": seed, "tags": [], "verbose": False,
             "logger": {"name": "csv"}}
    for key, value in (config or {}).items():  # dotted keys: trainer.lr
        *parents, last = key.split(".")
        node = saved
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(saved))
    summary = {"status": "complete", "task": "finsent", "model": model, "metrics": metrics, "seed": seed,
               "wall_time_s": 1.0}
    if sources is not None:
        summary["provenance"] = {"data": {"sources": sources}}
    if intervals is not None:
        summary["intervals"] = {**intervals, "resamples": 1000, "level": 0.95}
    if baselines is not None:
        summary["baselines"] = baselines
    if items is not None:
        stats.save(folder, *items)
        summary["test_items_sha256"] = items[0]
    (folder / "metrics.json").write_text(json.dumps(summary))
    return folder


def test_runs_on_other_data_or_config_are_not_pooled_and_a_line_says_which_field(tmp_path, capsys):
    root = tmp_path / "sweep"
    data = {"data/x.csv": SHA_A}
    run_folder(root / "0", ["seed=1"], {"test_accuracy": 0.80}, sources=data, seed=1)
    run_folder(root / "1", ["seed=2"], {"test_accuracy": 0.82}, sources=data, seed=2,
               config={"verbose": True, "tags": ["x"], "logger.name": "tensorboard"})  # change nothing computed
    run_folder(root / "2", ["seed=3"], {"test_accuracy": 0.84}, sources=data, seed=3,
               config={"data.split_seed": "${seed}"})  # follows the seed, as null does: the seed, not config
    run_folder(root / "3", ["seed=4"], {"test_accuracy": 0.60}, sources={"data/x.csv": SHA_B}, seed=4)
    run_folder(root / "4", ["seed=5"], {"test_accuracy": 0.70}, sources=data, seed=5, config={"trainer.lr": 3e-4})
    report.main([str(root)])
    out = capsys.readouterr().out
    seeds = pd.read_csv(root / "report_seeds.csv")
    assert seeds["runs"].astype(str).tolist() == ["0,1,2", "3", "4"]
    assert seeds["n_seeds"].tolist() == [3, 1, 1]
    assert seeds["test_accuracy_mean"].tolist() == pytest.approx([0.82, 0.60, 0.70])
    lines = [line for line in out.splitlines() if "not pooled" in line]
    assert lines == [f"- all runs: not pooled: data differs (provenance sha256 of data/x.csv: {SHA_A[:8]}… vs "
                     f"{SHA_B[:8]}…): runs 0, 1, 2 vs 3",
                     "- all runs: not pooled: config differs: trainer.lr 2e-05 vs 0.0003: runs 0, 1, 2 vs 4"]
    page = (root / "report.html").read_text()
    assert "data differs (provenance sha256 of data/x.csv" in page and "config differs: trainer.lr" in page


def test_runs_without_provenance_are_told_apart_by_the_data_keys_of_their_config(tmp_path):
    run_folder(tmp_path / "0", ["model=bert", "seed=1"], {"test_accuracy": 0.8}, seed=1)
    run_folder(tmp_path / "1", ["model=bert", "seed=2"], {"test_accuracy": 0.7}, seed=2,
               config={"data.path": "data/y.csv"})
    run_folder(tmp_path / "2", ["model=bert", "seed=3"], {"test_accuracy": 0.9}, seed=3)
    result = report.write_report(tmp_path)
    assert result["summary"]["runs"].astype(str).tolist() == ["0,2", "1"]
    assert result["not_pooled"] == ["all runs: not pooled: data differs: data.path data/x.csv vs data/y.csv: "
                                    "runs 0, 2 vs 1"]


def test_seeds_of_one_config_pool_into_mean_std_and_a_t_interval_and_runs_show_their_intervals(tmp_path, capsys):
    from scipy.stats import t

    values = {"bert": [0.50, 0.60, 0.70], "doc2vec": [0.80, 0.82, 0.84]}
    num = 0
    for model, accs in values.items():
        for seed, acc in enumerate(accs, 1):
            metrics = {"test_accuracy": acc, "test_macro_f1": acc - 0.1}
            if num == 0:
                metrics["test_accuracy_ci"] = [0.0, 1.0]  # an older writer's interval among the metrics: no column
            run_folder(tmp_path / str(num), [f"model={model}", f"seed={seed}"], metrics, model=model, seed=seed,
                       sources={"data/x.csv": SHA_A}, intervals={"test_accuracy_ci": [acc - 0.05, acc + 0.05]},
                       baselines=[{"line": f"FinBERT (Araci 2019) accuracy 0.86: this run {acc:.4f}, gap "
                                           f"{acc - 0.86:+.4f}"}] if num == 3 else None)
            num += 1
    report.main([str(tmp_path)])
    out = capsys.readouterr().out
    seeds = pd.read_csv(tmp_path / "report_seeds.csv").set_index("model")
    half = t.ppf(0.975, 2) * 0.1 / math.sqrt(3)
    assert seeds.loc["bert", "test_accuracy_mean"] == pytest.approx(0.6)
    assert seeds.loc["bert", "test_accuracy_std"] == pytest.approx(0.1)
    assert [seeds.loc["bert", "test_accuracy_t_lo"], seeds.loc["bert", "test_accuracy_t_hi"]] == \
        pytest.approx([0.6 - half, 0.6 + half])
    assert f"0.6000 ± 0.1000 [{0.6 - half:.3f}, {0.6 + half:.3f}]" in out
    table = pd.read_csv(tmp_path / "report.csv")
    assert "test_accuracy_ci" not in table.columns and "test_macro_f1_ci_lo" not in table.columns
    assert table["test_accuracy_ci_lo"].tolist() == pytest.approx([0.45, 0.55, 0.65, 0.75, 0.77, 0.79])
    assert table["test_accuracy_ci_hi"].tolist() == pytest.approx([0.55, 0.65, 0.75, 0.85, 0.87, 0.89])
    md = (tmp_path / "report.md").read_text()
    assert "| 0.5000 [0.450, 0.550] |" in md and "_ci_lo" not in md
    assert "## Published baselines" in md and "- 3: FinBERT (Araci 2019) accuracy 0.86: this run 0.8000, gap " \
        "-0.0600" in md
    page = (tmp_path / "report.html").read_text()
    assert ">0.5000 [0.450, 0.550]<" in page and "Published baselines" in page and "FinBERT (Araci 2019)" in page
    assert f"0.6000 ± 0.1000 [{0.6 - half:.3f}, {0.6 + half:.3f}]" in page


# -- the paired comparison ----------------------------------------------------------------------------------
N = 2000


def hidden_pair():
    """Two classifiers on the same 2,000 items (3 labels): A right on exactly 85 %, B on 80 %, which items each
    gets right drawn independently (a fixed RNG). Returns (items hash, A's blocks, B's blocks, A right, B right)."""
    rng = np.random.default_rng(35)
    gold = rng.integers(0, 3, N)
    right = []
    for share in (0.85, 0.80):
        hit = np.zeros(N, dtype=bool)
        hit[rng.permutation(N)[:round(share * N)]] = True
        right.append(hit)
    blocks = [[stats.confusion_block(gold, np.where(hit, gold, (gold + 1) % 3), 3)] for hit in right]
    items = stats.items_hash([f"text {i}" for i in range(N)], gold.tolist())
    return items, blocks[0], blocks[1], right[0], right[1]


@pytest.fixture(scope="module")
def pair():
    return hidden_pair()


def test_compare_finds_the_known_difference_with_mcnemar_counts_by_hand(tmp_path, capsys, pair):
    items, blocks_a, blocks_b, right_a, right_b = pair
    a = run_folder(tmp_path / "a", ["seed=1"], stats.point(blocks_a), items=(items, blocks_a))
    b = run_folder(tmp_path / "b", ["seed=1"], stats.point(blocks_b), items=(items, blocks_b), model="doc2vec")
    report.main(["--compare", str(a), str(b), "--out", str(tmp_path / "cmp")])
    out = capsys.readouterr().out
    found = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert found["n"] == N and found["items_sha256"] == items and found["resamples"] == 1000
    rows = {r["metric"]: r for r in found["rows"]}
    accuracy = rows["test_accuracy"]
    assert accuracy["a"] == pytest.approx(0.85) and accuracy["b"] == pytest.approx(0.80)
    assert accuracy["difference"] == pytest.approx(0.05)
    assert accuracy["ci"][0] < 0.05 < accuracy["ci"][1] and accuracy["ci"][0] > 0
    assert accuracy["p_value"] < 0.01
    b_hand, c_hand = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    assert (accuracy["mcnemar"]["a_only"], accuracy["mcnemar"]["b_only"]) == (b_hand, c_hand)
    assert accuracy["mcnemar"]["p_value"] < 0.01
    assert "mcnemar" not in rows["test_macro_f1"]  # McNemar's test is for right/wrong items only
    line = next(line for line in out.splitlines() if line.startswith("| test_accuracy "))
    assert "| 0.8500 " in line and "| +0.0500 " in line and f"(b={b_hand}, c={c_hand})" in line
    assert (tmp_path / "cmp" / "compare.md").read_text().count("| test_accuracy ") == 1
    again = report.compare_runs(a, b)  # a fixed seed: the same interval and p-value every time
    assert again["rows"][0]["ci"] == accuracy["ci"] and again["rows"][0]["p_value"] == accuracy["p_value"]


def test_compare_refuses_other_items_and_folders_that_are_not_runs_in_one_line(tmp_path, capsys, pair):
    items, blocks_a, _, _, _ = pair
    a = run_folder(tmp_path / "a", ["seed=1"], stats.point(blocks_a), items=(items, blocks_a))
    fewer = stats.confusion_block(np.asarray(blocks_a[0].data["codes"][:-2]) // 3,
                                  np.asarray(blocks_a[0].data["codes"][:-2]) % 3, 3)
    other = stats.items_hash([f"text {i}" for i in range(N - 2)], [0] * (N - 2))
    b = run_folder(tmp_path / "b", ["seed=1"], stats.point([fewer]), items=(other, [fewer]))
    old = run_folder(tmp_path / "old", ["seed=1"], {"test_accuracy": 0.5})  # no test_items.json
    (tmp_path / "plain").mkdir()
    cases = {b: f"nlpexp-report: error: the test items differ: A's {N} items (sha256 {items[:8]}…) vs B's {N - 2} "
                f"({other[:8]}…): a paired comparison needs the same test items",
             old: f"nlpexp-report: error: --compare: B: {old} has no test_items.json",
             tmp_path / "plain": f"nlpexp-report: error: --compare: B {tmp_path / 'plain'} is not an nlpexp run "}
    for folder, said in cases.items():
        with pytest.raises(SystemExit) as stop:
            report.main(["--compare", str(a), str(folder)])
        err = capsys.readouterr().err.strip().splitlines()
        assert stop.value.code == 2 and len(err) == 1 and err[0].startswith(said), err
        assert "Traceback" not in err[0]
    with pytest.raises(SystemExit) as stop:
        report.main(["--compare", str(a), str(a), "--resamples", "many"])
    assert stop.value.code == 2 and capsys.readouterr().err.count("\n") == 1


def test_the_report_compares_configurations_on_the_same_test_items(tmp_path, capsys, pair):
    items, blocks_a, blocks_b, _, _ = pair
    root = tmp_path / "sweep"
    run_folder(root / "0", ["model=bert", "seed=1"], stats.point(blocks_a), items=(items, blocks_a), seed=1)
    run_folder(root / "1", ["model=bert", "seed=2"], stats.point(blocks_a), items=(items, blocks_a), seed=2)
    run_folder(root / "2", ["model=doc2vec", "seed=2"], stats.point(blocks_b), items=(items, blocks_b), seed=2,
               model="doc2vec")
    run_folder(root / "3", ["model=doc2vec", "seed=1"], stats.point(blocks_b), items=(items, blocks_b), seed=1,
               model="doc2vec")
    report.main([str(root)])
    capsys.readouterr()
    md = (root / "report.md").read_text()
    section = md.split("## Paired comparisons")[1].split("\n## ")[0]
    assert section.count("### ") == 1
    assert f"### model=bert vs model=doc2vec: run 0 vs run 3 ({N} test items, sha256 {items[:8]}…)" in section
    alone = report.compare_runs(root / "0", root / "3")["markdown"]  # the same table as --compare prints
    table = [line for line in alone.splitlines() if line.startswith("|")]
    assert table and all(line in section for line in table)
    page = (root / "report.html").read_text()
    assert "<h2>Paired comparisons</h2>" in page and "model=bert vs model=doc2vec: run 0 vs run 3" in page
    assert "McNemar p (b/c)" in page
