"""nlpexp-report over a fabricated sweep folder: differing overrides, mean ± std over seeds, failures kept out."""
import json

import pandas as pd
import pytest
import yaml

from nlpexp.report import tables as report


def fake_run(folder, overrides, metrics=None, status="complete", wall=1.0, tags=()):
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    model = next(o.split("=")[1] for o in overrides if o.startswith("model="))
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"task": {"name": "finsent"},
                                                                    "model": {"name": model}, "tags": list(tags)}))
    if status == "complete":
        summary = {"status": "complete", "task": "finsent", "model": model, "metrics": metrics,
                   "objective": "val_accuracy", "wall_time_s": wall, "tags": list(tags)}
    elif status == "failed":
        summary = {"status": "failed", "error": "ValueError('boom')"}
    else:
        return
    (folder / "metrics.json").write_text(json.dumps(summary))


@pytest.fixture
def sweep(tmp_path):
    """3 seeds x 2 models, plus one failed and one killed (no metrics.json) run; every run shares +smoke=true."""
    root = tmp_path / "multirun"
    num = 0
    values = {"bert": [0.50, 0.60, 0.70], "doc2vec": [0.80, 0.82, 0.84]}
    for model in ("bert", "doc2vec"):
        for i, seed in enumerate((1, 2, 3)):
            acc = values[model][i]
            fake_run(root / str(num), ["+smoke=true", f"model={model}", f"seed={seed}"],
                     {"val_accuracy": acc, "test_accuracy": acc - 0.1, "val_loss": 1 - acc}, wall=2.0 + num)
            num += 1
    fake_run(root / str(num), ["+smoke=true", "model=bert", "seed=4"], status="failed")
    fake_run(root / str(num + 1), ["+smoke=true", "model=doc2vec", "seed=4"], status="incomplete")
    return root


def test_report_table_seeds_best_and_failures(sweep, capsys):
    report.main([str(sweep)])
    out = capsys.readouterr().out
    table = pd.read_csv(sweep / "report.csv")
    assert len(table) == 8
    # only differing overrides become columns (+smoke=true is the same everywhere)
    assert {"model", "seed", "val_accuracy", "test_accuracy", "val_loss", "wall_time_s"} <= set(table.columns)
    assert "smoke" not in table.columns
    statuses = dict(zip(table["run"].astype(str), table["status"]))
    assert statuses["6"] == "failed" and statuses["7"] == "incomplete"
    assert table.loc[table["status"] != "complete", "val_accuracy"].isna().all()

    seeds = pd.read_csv(sweep / "report_seeds.csv").set_index("model")
    assert seeds.loc["bert", "n_seeds"] == 3 and seeds.loc["bert", "not_complete"] == 1
    assert seeds.loc["bert", "val_accuracy_mean"] == pytest.approx(0.6)          # failed seed 4 not averaged in
    assert seeds.loc["bert", "val_accuracy_std"] == pytest.approx(0.1)           # sample std of .5 .6 .7
    assert seeds.loc["doc2vec", "val_accuracy_mean"] == pytest.approx(0.82)
    assert "0.6000 ± 0.1000" in out and "0.8200 ± 0.0200" in out

    md = (sweep / "report.md").read_text()
    assert "## Best run per metric" in md and "## Not complete" in md
    best = md.split("## Best run per metric")[1]
    rows = {line.split("|")[1].strip(): line for line in best.splitlines() if line.startswith("| ")}
    assert "max" in rows["val_accuracy"] and "0.8400" in rows["val_accuracy"] and "doc2vec" in rows["val_accuracy"]
    assert "min" in rows["val_loss"] and "0.1600" in rows["val_loss"]
    assert (sweep / "report.png").stat().st_size > 1000


def test_report_without_seeds_lists_runs_and_refuses_empty_folders(tmp_path, capsys):
    fake_run(tmp_path / "a", ["model=bert"], {"val_accuracy": 0.5})
    fake_run(tmp_path / "b", ["model=doc2vec"], {"val_accuracy": 0.7})
    result = report.write_report(tmp_path)
    assert result["summary"] is None
    assert list(result["table"]["model"]) == ["bert", "doc2vec"]
    assert result["best"].iloc[0]["model"] == "doc2vec"
    with pytest.raises(SystemExit) as stop:
        report.main([str(tmp_path / "a" / ".hydra")])
    assert stop.value.code == 2
    assert "no runs below" in capsys.readouterr().err


def test_report_tags_keep_the_runs_that_carry_all_of_them(tmp_path, capsys):
    fake_run(tmp_path / "a", ["model=bert"], {"val_accuracy": 0.5}, tags=["baseline", "v1"])
    fake_run(tmp_path / "b", ["model=doc2vec"], {"val_accuracy": 0.7}, tags=["v1"])
    fake_run(tmp_path / "c", ["model=minilm"], status="incomplete", tags=["baseline"])  # tags from its config
    report.main([str(tmp_path), "--tags", "baseline"])
    assert sorted(pd.read_csv(tmp_path / "report.csv")["run"].astype(str)) == ["a", "c"]
    report.main([str(tmp_path), "--tags", "v1,baseline"])
    assert list(pd.read_csv(tmp_path / "report.csv")["run"].astype(str)) == ["a"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        report.main([str(tmp_path), "--tags", "nope"])
    assert stop.value.code == 2 and "carry the tags nope" in capsys.readouterr().err


def test_the_html_report_is_one_self_contained_page_with_tables_plots_and_links(sweep):
    import base64
    import re
    from html.parser import HTMLParser

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    fig.savefig(sweep / "0" / "history.png")
    plt.close(fig)
    report.main([str(sweep)])
    page = (sweep / "report.html").read_text()

    class Page(HTMLParser):
        def __init__(self):
            super().__init__()
            self.images, self.links, self.tables, self.external = [], [], [], []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "img":
                self.images.append(a["src"])
            if tag == "a":
                self.links.append(a["href"])
            if tag == "table":
                self.tables.append(a.get("class") or "")
            if tag in ("script", "link", "img") and re.match(r"https?://", a.get("src") or a.get("href") or ""):
                self.external.append(a)

    parsed = Page()
    parsed.feed(page)
    assert not parsed.external  # nothing fetched: it opens offline, attached to a mail
    assert len(parsed.images) == 2 and all(src.startswith("data:image/png;base64,") for src in parsed.images)
    assert base64.b64decode(parsed.images[-1].split(",", 1)[1]) == (sweep / "0" / "history.png").read_bytes()
    assert parsed.tables[0] == "sortable" and "table.querySelectorAll('th')" in page
    assert {"./0/", "./5/", "./7/"} <= set(parsed.links)  # every run, failed and killed ones too, links its folder
    assert "0.6000 ± 0.1000" in page and "0.8200 ± 0.0200" in page  # mean ± std rows
    assert 'class="text failed"' in page and 'class="text incomplete"' in page  # status colours


def test_a_parent_of_several_sweepers_shows_the_study_best_trial(tmp_path):
    """The cluster recipe's folder: worker_k/ per sweeper process, each with its optimization_results.yaml (the
    study's best when it ended): the report of the parent shows the best of them, once per study."""
    root = tmp_path / "finsent_bert"
    for k, best in ((1, 0.71), (2, 0.83), (3, 0.78)):
        sweep = root / f"worker_{k}"
        fake_run(sweep / "0", ["+smoke=true", "model=bert", f"trainer.lr={k}e-5"], {"val_accuracy": best})
        saved = {"hydra": {"sweeper": {"storage": "postgresql://u@localhost/optuna", "study_name": "finsent_bert",
                                       "direction": "maximize"}}}  # basic launcher: multirun.yaml; submitit: none
        (sweep / "multirun.yaml" if k == 1 else sweep / "0" / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(saved))
        (sweep / "optimization_results.yaml").write_text(yaml.safe_dump(
            {"name": "optuna", "best_params": {"trainer.lr": k * 1e-5}, "best_value": best}))
    text = report.write_report(root)["markdown"]
    assert text.count("## Optuna best trial") == 1
    assert "## Optuna best trial (study finsent_bert, best of 3 sweepers: worker_2)" in text
    assert "best_value: 0.83" in text
