"""The spine: adapters reload on the device they are given, keys a path does not read are refused, the user
config layer (./conf, --config-dir, hydra.searchpath) goes through the same pre-run check, --help and dry_run."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from nlpexp.config import registry

CLASSIFIERS = [("finsent", m) for m in ("minilm", "bert_fc", "bert_lstm", "transformer", "gpt2", "gpt2_prompt",
                                        "doc2vec")] + [("chnsenti", "bert_chinese_mlm")]


def smoke_cfg(*overrides):
    from nlpexp.runtime import apply_smoke

    with initialize_config_module("nlpexp.conf", version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    return apply_smoke(cfg, list(overrides))


def parameter_devices(thing) -> set[str]:
    model = getattr(thing, "model", thing)
    return {p.device.type for p in model.parameters()} if isinstance(model, torch.nn.Module) else {"cpu"}


@pytest.fixture
def cuda_visible(monkeypatch):
    """Call it to fake a visible GPU: a loader that picks CUDA for itself instead of the given device is caught."""
    return lambda: monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


@pytest.mark.slow
@pytest.mark.parametrize("task,model", CLASSIFIERS)
def test_every_classifier_reloads_on_the_device_it_is_given(tmp_path, cuda_visible, task, model):
    from nlpexp.tasks.classify import recipe
    from nlpexp.tasks.classify.data import label_names, load_splits

    cfg = smoke_cfg(f"task={task}", f"model={model}", "trainer.max_steps=1", "model.epochs=1")  \
        if model == "doc2vec" else smoke_cfg(f"task={task}", f"model={model}", "trainer.max_steps=1")
    labels = label_names(cfg.task)
    splits = load_splits(cfg.data, labels, cfg.seed)
    trained, _, _ = recipe.adapter(model).fit(*recipe.fit_inputs(cfg, tmp_path, "cpu"), labels, splits)
    before = trained.predict_proba(["Profit rose.", "Sales fell."])
    cuda_visible()
    for device in ("cpu", "meta"):  # meta: a device this machine surely does not default to
        loaded = recipe.adapter(model).load(tmp_path / "checkpoints" / "best", device)
        assert parameter_devices(loaded) == ({"meta"} if device == "meta" and model != "doc2vec" else {"cpu"})
    again = recipe.adapter(model).load(tmp_path / "checkpoints" / "best", "cpu").predict_proba(
        ["Profit rose.", "Sales fell."])
    assert again == pytest.approx(before, abs=1e-5)


@pytest.mark.parametrize("model", registry.TASKS["story"].models)
def test_every_story_model_reloads_on_the_device_it_is_given(tmp_path, cuda_visible, model):
    from nlpexp.tasks.story.recipe import adapter, load_checkpoint

    from nlpexp.config.schema import typed

    cfg = smoke_cfg("task=story", f"model={model}")
    config = typed(cfg.model, registry.MODELS[model].adapters["story"].config)
    built = adapter(model).build(config, typed(cfg.task, config.task()), ["A cat sat on a mat. It slept."] * 20)
    built.model.save(tmp_path, built.tokenizer)
    cuda_visible()
    for device in ("cpu", "meta"):
        loaded, _ = load_checkpoint(tmp_path, device)
        assert parameter_devices(loaded) == {device}


@pytest.mark.parametrize("model", registry.TASKS["novel"].models)
def test_every_novel_model_reloads_on_the_device_it_is_given(tmp_path, cuda_visible, model):
    from nlpexp.tasks.novel.recipe import adapter, load_checkpoint, save_checkpoint

    cfg = smoke_cfg("task=novel", f"model={model}", "model.pretrained=null" if model != "transformer" else "seed=1")
    from nlpexp.config.schema import typed

    config = typed(cfg.model, registry.MODELS[model].adapters["novel"].config)
    codec = adapter(model).codec(config, "天地玄黄宇宙洪荒日月盈昃", cfg.data)
    save_checkpoint(adapter(model).build(config, codec, 8), codec, tmp_path, 8, model)
    cuda_visible()
    for device in ("cpu", "meta"):
        loaded, reloaded_codec, seq_len = load_checkpoint(tmp_path, device)
        assert parameter_devices(loaded) == {device} and seq_len == 8 and len(reloaded_codec) == len(codec)


def test_a_small_hf_embedder_reloads_on_the_device_it_is_given(tmp_path, cuda_visible):
    from nlpexp.tasks.embedding import hf

    cfg = smoke_cfg("task=embedding", "model=bert", "model.pretrained=null")
    from nlpexp.config.schema import typed
    from nlpexp.tasks.embedding.config import EncodesTruncated, HFEmbedder

    encodes = typed(cfg.trainer, EncodesTruncated)
    hf.embedder(typed(cfg.model, HFEmbedder), encodes, 0, ["a cat", "a dog sat"] * 10, "cpu").save(tmp_path)
    cuda_visible()
    for device in ("cpu", "meta"):
        assert parameter_devices(hf.load(tmp_path, device)) == {device}


# -- keys a path does not read ----------------------------------------------------------------------------
@pytest.mark.parametrize("args,needle", [
    (["model=doc2vec", "trainer.epochs=10"], "trainer.epochs is not read by task=finsent model=doc2vec (Doc2Vec "
                                             "trains for model.epochs)"),
    (["model=doc2vec", "trainer.lr=1e-3"], "trainer.lr is not read by task=finsent model=doc2vec"),
    (["model=gpt2_prompt", "trainer.best_metric=macro_f1"], "trainer.best_metric is not read by task=finsent "
                                                           "model=gpt2_prompt (gpt2_prompt keeps the epoch with"),
    (["model=doc2vec", "trainer.precision=bf16"], "trainer.precision is not read by task=finsent model=doc2vec"),
    (["task=novel", "task.mixed_precision=bf16"], "task.mixed_precision: no such key (renamed: use trainer.precision)"),
    (["model=minilm", "device=cpu", "trainer.precision=fp16"], "trainer.precision=fp16 needs a CUDA GPU"),
    (["model=gpt2_prompt", "trainer.average_last=2"], "trainer.average_last is not read by task=finsent "
                                                      "model=gpt2_prompt"),
    (["model=bert_fc", "model.fc_hidden=8"], "model.fc_hidden is not read by task=finsent model=bert_fc (read by "
                                             "task=novel)"),
    (["task=novel", "model=bert_fc", "model.classifier_hidden=8"],
     "model.classifier_hidden is not read by task=novel model=bert_fc (bert_fc's next-character MLP is "
     "model.fc_hidden)"),
    (["task=novel", "model=bert_lstm", "trainer.max_length=64"], "trainer.max_length is not read by task=novel "
                                                                 "model=bert_lstm (task=novel windows hold "
                                                                 "task.seq_len characters)"),
    (["task=story", "model=gpt2", "trainer.max_length=64"], "(task=story sequences hold task.max_len positions)"),
    (["task=story", "model=bert2bert", "task.bpe_vocab_size=3000"],
     "task.bpe_vocab_size is not read by task=story model=bert2bert (our models and a small-built gpt2 train a BPE"),
    (["task=story", "model=bert2bert", "model.pretrained=null", "model.new_lr_scale=10"],
     "model.new_lr_scale scales the weights a warm start lacks: a small-built bert2bert"),
    (["task=story", "model=gpt2", "model.new_lr_scale=10"], "model.new_lr_scale: no such key"),
    (["task=story", "model=transformer", "task.max_len=100"],
     "task.max_len is not read by task=story model=transformer (the positions of transformer_encdec, the causal LM"),
    (["task=story", "model=transformer_encdec", "task.window=8"],
     "task.window is not read by task=story model=transformer_encdec (the next-token classifier's context"),
    (["task=story", "model=transformer", "mode=eval", "ckpt=.", "task.bpe_vocab_size=100"],
     "task.bpe_vocab_size is not read by task=story model=transformer mode=eval"),
    (["task=story", "model=transformer", "mode=eval", "ckpt=.", "trainer.label_smoothing=0.1"],
     "trainer.label_smoothing is not read by task=story model=transformer mode=eval (the saved run's model is "
     "used as trained)"),
    (["task=story", "model=transformer", "model.vocab_size=100"],
     "model.vocab_size is not read by task=story model=transformer (read by task=classify|finsent|emotion|chnsenti|"),
    (["task=story", "mode=generate", "prompt=Hi", "length=50"],
     "length is not read by task=story model=transformer_encdec mode=generate (task=story writes up to "
     "generate.max_new_tokens tokens"),
    (["task=embedding", "task.method=finetune", "trainer.lr=1"],
     "trainer.lr is not read by task=embedding model=sentence_transformers (task.method=finetune trains with "
     "task.finetune.lr)"),
    (["task=embedding", "trainer.max_length=32"], "trainer.max_length is not read by task=embedding "
                                                  "model=sentence_transformers"),
    (["task=posenc", "trainer.epochs=3"], "trainer.epochs is not read by task=posenc model=transformer "
                                          "(task=posenc draws the encoding"),
    (["task=emotion", "model=doc2vec", "tokenizer.keep_whole=[joy]"],
     "tokenizer.keep_whole is not read by task=emotion model=doc2vec (only the WordPiece encoders"),
    (["model=minilm", "text=Profit rose."], "text is not read by task=finsent model=minilm (mode=predict ckpt=<run> "
                                            "reads it)"),
    (["model=doc2vec", "data.eval_split=validation"], "data.eval_split is not read by task=finsent model=doc2vec "
                                                      "(mode=eval ckpt=<run> reads it"),
    (["task=story", "generate.temperature=0.5"], "generate.temperature is not read by task=story "
                                                 "model=transformer_encdec (the evaluation after training decodes at "
                                                 "each of generate.eval_temperatures)"),
    (["task=novel", "model=bert_fc", "generate.strategy=beam"], "generate.strategy is not read by task=novel "
                                                                "model=bert_fc (the held-out continuations"),
])
def test_a_key_the_path_does_not_read_is_refused_in_one_line(nlpexp, tmp_path, args, needle):
    res = nlpexp(*args)
    assert res.code == 2
    assert res.err.count("\n") == 1 and needle in res.err, res.err
    assert not (tmp_path / "outputs").exists()


def test_a_key_given_in_eval_mode_is_refused_it_is_the_saved_runs(nlpexp, tmp_path):
    assert nlpexp("+smoke=true", "model=doc2vec", f"hydra.run.dir={tmp_path}/run").code == 0
    res = nlpexp("mode=eval", f"ckpt={tmp_path}/run", "trainer.epochs=3")
    assert res.code == 2 and "trainer.epochs is not read by task=finsent model=doc2vec mode=eval (the saved run's " \
                              "settings (its .hydra/config.yaml) are used)" in res.err
    assert not (tmp_path / "run" / "eval").exists()


@pytest.mark.parametrize("args,needle", [
    (["trainer.epochs=abc"], "override trainer.epochs=abc: Value 'abc' of type 'str' could not be converted to "
                             "Integer"),
    (["+model.foo=1"], "model.foo: unknown key (the keys of model are: name, pretrained, revision, small, head_init, "
                          "lora)"),
    (["task=story", "model=transformer_encdec", "model.objective=causal_lm"],
     "model.objective: no such key (Key 'objective' not in 'model=transformer_encdec')"),
    (["model=bert_fc", "model.freeze=some"], "model.freeze must be none, all, all_but_pooler or a number of layers"),
    (["trainer.warmup_ratio=1.5"], "trainer.warmup_ratio must be in [0, 1) (got 1.5)"),
    (["data.eval_split=dev"], "data.eval_split must be one of train, validation, test (got 'dev')"),
    (["trainer.best_metric=f1"], "trainer.best_metric must be one of accuracy, macro_f1, weighted_precision, "
                                 "weighted_recall (got 'f1')"),
])
def test_types_unknown_keys_and_ranges_fail_at_composition(nlpexp, tmp_path, args, needle):
    res = nlpexp(*args)
    assert res.code == 2 and needle in res.err and res.err.count("\n") == 1, res.err
    assert not (tmp_path / "outputs").exists()


def test_the_config_is_checked_once_per_run(nlpexp, monkeypatch):
    from nlpexp.config import validate

    calls = []
    check = validate.config_errors
    monkeypatch.setattr(validate, "config_errors", lambda *a, **k: calls.append(1) or check(*a, **k))
    assert nlpexp("+smoke=true", "model=doc2vec").code == 0
    assert len(calls) == 1


# -- dry_run, --help -----------------------------------------------------------------------------------------
def test_dry_run_checks_every_key_and_builds_nothing(nlpexp, tmp_path):
    ok = nlpexp("model=doc2vec", "dry_run=true")
    assert ok.code == 0 and "config OK: task=finsent model=doc2vec mode=train" in ok.out
    bad = nlpexp("model=doc2vec", "dry_run=true", "trainer.epochs=3", "model.window=0", "seed=-1")
    assert bad.code == 2 and bad.err.count("\n") == 1
    for needle in ("model.window must be an integer > 0 (got 0)", "seed must be an integer in [0, 2^32 - 1]"):
        assert needle in bad.err  # every error at once (the unread key is reported once the values are sound)
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_help_names_nlpexp_and_lists_every_task_with_its_models_and_modes():
    out = subprocess.run([sys.executable, "-m", "nlpexp", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("usage: nlpexp ")
    assert "cli" not in out.stdout.split("\n")[0]
    lines = out.stdout.splitlines()
    for task in registry.TASKS.values():
        at = next(i for i, line in enumerate(lines) if line.split()[:1] == [task.name])
        assert lines[at + 1].split()[1:] == list(task.models) and lines[at + 2].split()[1:] == list(task.modes)
    for key in ("seed=", "resume=", "dry_run=true", "tags=[", "verbose=true", "print_config=diff|full|none"):
        assert key in out.stdout  # the top-level keys a user types


# -- the user config layer -------------------------------------------------------------------------------
MINE = """# @package _global_
defaults:
  - override /model: doc2vec
seed: 7
model:
  vector_size: 24
"""


def test_a_users_conf_folder_is_searched_first(nlpexp, tmp_path):
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "mine.yaml").write_text(MINE)
    (tmp_path / "conf" / "local").mkdir()
    (tmp_path / "conf" / "local" / "default.yaml").write_text("model:\n  window: 3\n")  # top-level keys, no header
    res = nlpexp("experiment=mine", "+smoke=true")
    assert res.code == 0, res.err[-2000:]
    (run,) = res.run_dirs()
    assert run.relative_to(tmp_path).parts[:3] == ("outputs", "finsent", "doc2vec")
    saved = (run / ".hydra" / "config.yaml").read_text()
    assert "vector_size: 24" in saved and "window: 3" in saved and json.loads(
        (run / "metrics.json").read_text())["seed"] == 7


def test_a_bad_user_config_is_refused_before_any_folder(nlpexp, tmp_path):
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "bad.yaml").write_text(MINE.replace("vector_size: 24", "vector_size: -4"))
    res = nlpexp("experiment=bad", "+smoke=true")
    assert res.code == 2 and "model.vector_size must be an integer > 0 (got -4)" in res.err
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("how", ["--config-dir", "searchpath"])
def test_config_dir_and_searchpath_pass_the_same_check(nlpexp, tmp_path, how):
    mine = tmp_path / "elsewhere"
    (mine / "experiment").mkdir(parents=True)
    (mine / "experiment" / "mine.yaml").write_text(MINE)
    (mine / "experiment" / "bad.yaml").write_text(MINE.replace("vector_size: 24", "vector_size: -4"))
    where = ["--config-dir", str(mine)] if how == "--config-dir" else [f"hydra.searchpath=[file://{mine}]"]
    bad = nlpexp(*where, "experiment=bad", "+smoke=true")
    assert bad.code == 2 and "model.vector_size must be an integer > 0" in bad.err
    assert not (tmp_path / "outputs").exists()
    good = nlpexp(*where, "experiment=mine", "+smoke=true")
    assert good.code == 0, good.err[-2000:]
    assert "vector_size: 24" in (good.run_dirs()[0] / ".hydra" / "config.yaml").read_text()


def test_the_repositorys_example_experiment_composes():
    example = Path(__file__).parents[2] / "conf" / "experiment" / "example.yaml"
    assert example.exists() and "nlpexp experiment=example" in example.read_text()
