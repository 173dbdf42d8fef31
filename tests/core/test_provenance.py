"""metrics.json's provenance, piece by piece (nlpexp/provenance.py): the code's commit and diff in a git checkout of
its own, the data files the readers record with their sha256, split ids hashed whatever their order, the installed
packages' hash, and the record run.py writes. A whole run's record is checked in tests/classify/test_finsent.py."""
import hashlib
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch

from nlpexp import provenance
from nlpexp.inputs import readers


def git(folder, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=folder, check=True,
                   capture_output=True)


@pytest.fixture
def checkout(tmp_path):
    """A git checkout of a package folder (its __init__.py committed)."""
    package = tmp_path / "repo" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("x = 1\n")
    git(package.parent, "init", "-q")
    git(package.parent, "add", ".")
    git(package.parent, "commit", "-qm", "first")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=package, capture_output=True, text=True).stdout.strip()
    return package, head


def test_a_clean_checkout_records_its_commit_and_no_diff(checkout, tmp_path):
    package, head = checkout
    state = provenance.code_state(package)
    assert state["commit"] == head and state["dirty"] is False
    assert provenance.commit_label(state) == head
    record = provenance.code_record(state, tmp_path)
    assert record["diff"] is None and record["diff_sha256"] is None and not (tmp_path / "code.diff").exists()


def test_a_dirty_checkout_saves_its_diff_redacted(checkout, tmp_path):
    package, head = checkout
    token = "hf_" + "a1B2c3D4e5F6g7H8i9J0kLmN"
    (package / "__init__.py").write_text(f"x = 2\nTOKEN = '{token}'\n")
    state = provenance.code_state(package)
    assert state["commit"] == head and state["dirty"] is True and "+x = 2" in state["diff"]
    assert provenance.commit_label(state) == f"{head}-dirty"
    record = provenance.code_record(state, tmp_path)
    saved = (tmp_path / "code.diff").read_text()
    assert record["diff"] == "code.diff" and "+x = 2" in saved and token not in saved and "REDACTED" in saved
    assert record["diff_sha256"] == hashlib.sha256(saved.encode()).hexdigest()


def test_no_checkout_gives_no_commit_but_the_version(tmp_path):
    other = tmp_path / "site-packages" / "pkg"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("")
    (tmp_path / "README").write_text("a project\n")  # a repository around it that does not track the package (a
    git(tmp_path, "init", "-q")                         # virtual environment inside a project)
    git(tmp_path, "add", "README")
    git(tmp_path, "commit", "-qm", "first")
    state = provenance.code_state(other)
    assert state["commit"] is None and state["dirty"] is None and state["version"]
    assert provenance.commit_label(state) is None


def test_the_readers_record_every_file_with_its_sha256(tmp_path):
    provenance.clear()
    table = tmp_path / "data.csv"
    table.write_text("text,label\ngood,pos\nbad,neg\n")
    readers.read_labelled_file(table)
    parquet = tmp_path / "data.parquet"
    pd.DataFrame({"text": ["a", "b"], "label": ["x", "y"]}).to_parquet(parquet)
    readers.read_labelled_file(parquet)
    readers.read_labelled_file(readers.resource_path("finsent.csv"))
    assert provenance.SOURCES == {
        str(table.resolve()): hashlib.sha256(table.read_bytes()).hexdigest(),
        str(parquet.resolve()): hashlib.sha256(parquet.read_bytes()).hexdigest(),
        "embedded:finsent.csv": hashlib.sha256(readers.resource_path("finsent.csv").read_bytes()).hexdigest()}
    provenance.clear()
    assert provenance.SOURCES == {} and provenance.SPLITS == {}


def test_split_ids_hash_alike_in_any_order_and_differ_by_one_item():
    lines = pd.Series([5, 2, 9, 14], name="line")
    same = provenance.ids_sha256(lines)
    assert provenance.ids_sha256(np.array([14, 9, 5, 2])) == same == provenance.ids_sha256(torch.tensor([2, 5, 9, 14]))
    assert provenance.ids_sha256(pd.Series([5, 2, 9, 15])) != same
    texts = provenance.ids_sha256(["b a", "c"])
    assert provenance.ids_sha256(["c", "b a"]) == texts != provenance.ids_sha256(["b", "a c"])
    provenance.record_splits({"train": lines, "test": [1, 2]})
    provenance.record_splits({"cross_x": ["t"]}, add=True)
    assert set(provenance.SPLITS) == {"train", "test", "cross_x"}
    provenance.record_splits({"test": [1]})  # an evaluation: the part it scores, alone
    assert provenance.SPLITS == {"test": provenance.ids_sha256([1])}
    provenance.clear()


def test_the_packages_hash_is_stable_and_recomputed_alike():
    first = provenance.packages_sha256()
    assert len(first) == 64 and provenance.packages_sha256() == first
    assert provenance.packages_sha256.__wrapped__() == first  # sorted: the same list hashes alike


def test_the_record_holds_data_code_environment_models_and_the_dataset(tmp_path, monkeypatch):
    provenance.clear()
    provenance.record_source("someone/data:default", "c0ffee")
    state = {"commit": None, "dirty": None, "diff": None, "version": "0.1.0"}
    record = provenance.collect(tmp_path, state, {"name": "financial_phrasebank", "subset": "50agree"},
                                {"org/model": {"revision": "main", "commit": "abc"}})
    assert record["data"] == {"sources": {"someone/data:default": "c0ffee"}, "splits": {},
                              "dataset": {"name": "financial_phrasebank", "subset": "50agree"}}
    assert record["code"] == {"commit": None, "dirty": None, "diff_sha256": None, "diff": None, "version": "0.1.0"}
    assert record["models"] == {"org/model": {"revision": "main", "commit": "abc"}}
    env = record["environment"]
    assert env["torch"] == torch.__version__ and env["packages_sha256"] == provenance.packages_sha256()
    assert {"python", "transformers", "datasets", "cuda", "cudnn", "cpu", "native_bf16"} <= set(env)
    provenance.clear()
