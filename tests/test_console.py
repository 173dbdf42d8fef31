"""What a run prints at its start: the config tree (print_config=diff|full|none)."""
from omegaconf import OmegaConf

from nlpexp.console import config_tree


def cfg(**over):
    base = {"task": {"name": "finsent"}, "model": {"name": "bert", "pretrained": "x"}, "seed": 42,
            "trainer": {"lr": 2e-5, "epochs": 4}, "data": {"path": None}}
    return OmegaConf.merge(OmegaConf.create(base), OmegaConf.create(over))


def test_the_tree_shows_only_what_differs_grouped_by_section():
    text = config_tree(cfg(trainer={"lr": 1e-4}, seed=1, data={"path": "a.csv"}), cfg())
    lines = text.splitlines()
    assert lines[0].startswith("config: task=finsent model=bert, what differs")
    assert [line.split()[0] for line in lines[1:]] == ["(top)", "data", "trainer"]
    assert "seed=1" in lines[1] and "path=a.csv" in lines[2] and lines[3].split()[1:] == ["lr=0.0001"]
    assert "epochs" not in text and "pretrained" not in text


def test_full_shows_every_key_and_no_change_says_so():
    full = config_tree(cfg(), None)
    assert "epochs=4" in full and "pretrained=x" in full and "what differs" not in full
    assert config_tree(cfg(), cfg()) == "config: the defaults of task=finsent model=bert (print_config=full shows them)"


def test_secrets_and_long_values_are_not_printed_whole():
    text = config_tree(cfg(model={"api_key": "sk-123"}, data={"path": "p" * 200}), cfg())
    assert "sk-123" not in text and "api_key=REDACTED" in text
    assert max(len(line) for line in text.splitlines()) < 120


def test_a_run_prints_its_diff_at_the_start_and_none_prints_nothing(nlpexp):
    res = nlpexp("+smoke=true", "model=doc2vec", "model.epochs=3")
    assert res.code == 0, res.err[-2000:]
    first = res.out.splitlines()[:6]
    assert first[0].startswith("config: task=finsent model=doc2vec") and any(
        line.split()[:2] == ["model", "epochs=3"] for line in first)
    res = nlpexp("+smoke=true", "model=doc2vec", "print_config=none")
    assert res.code == 0 and "config:" not in res.out
    res = nlpexp("+smoke=true", "model=doc2vec", "print_config=all")
    assert res.code == 2 and "print_config must be diff, full or none" in res.err
