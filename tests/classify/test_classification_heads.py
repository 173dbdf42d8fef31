"""Classification heads (bert_fc, bert_lstm, transformer, bert_chinese_mlm) and the Chinese / CLUE tasks."""
import json

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from nlpexp.config import registry

pytestmark = pytest.mark.filterwarnings("ignore:Glyph .* missing from font")  # no CJK font for plot labels

NEW_CELLS = [(task, model) for task in ("chnsenti", "zh_emotion", "clue") for model in registry.TASKS[task].models]


@pytest.mark.parametrize("task,model", NEW_CELLS)
def test_smoke_cell_runs_and_scores_every_split(nlpexp, task, model):
    res = nlpexp("+smoke=true", f"task={task}", f"model={model}")
    assert res.code == 0, res.err[-3000:]
    (run,) = res.run_dirs()
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "complete"
    preds = pd.read_csv(run / "predictions.csv", dtype=str, keep_default_na=False)
    assert summary["metrics"]["test_accuracy"] == pytest.approx((preds["predicted"] == preds["gold"]).mean(), abs=1e-6)
    assert summary["trainable_params"] == summary["total_params"] > 0  # nothing frozen by default
    labels = {"chnsenti": {"负", "正"}, "zh_emotion": set("乐哀怒爱惊惧恶")}.get(task)
    if labels:
        assert set(summary["per_class"]) >= labels
    assert (run / "checkpoints" / "best").is_dir()


def test_eval_and_predict_reload_the_saved_heads(nlpexp, tmp_path):
    for model in ("bert_lstm", "transformer", "bert_chinese_mlm"):
        run = tmp_path / model
        assert nlpexp("+smoke=true", "task=chnsenti", f"model={model}", f"hydra.run.dir={run}").code == 0
        trained = json.loads((run / "metrics.json").read_text())["metrics"]
        res = nlpexp("mode=eval", f"ckpt={run}")
        assert res.code == 0, res.err[-2000:]
        evaluated = json.loads(sorted((run / "eval").glob("*/metrics.json"))[-1].read_text())["metrics"]
        assert evaluated["test_accuracy"] == trained["test_accuracy"]
        res = nlpexp("mode=predict", f"ckpt={run}", "text=房间干净，服务周到，下次还来。")
        assert res.code == 0 and res.out.split()[0] in ("负", "正")


def small_cfg(name, **extra):
    """The model's dataclass (its Adapter record's `config`), as recipe.fit_inputs hands it to the adapter: a small
    BERT (pretrained=null); the settings the dataclass has no field for are left out."""
    from nlpexp.config.schema import typed

    small = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
             "vocab_size": 300}
    node = OmegaConf.create({"name": name, "pretrained": None, "small": small, "classifier_hidden": 200,
                             "hidden_size": 24, "num_layers": 1, "dropout": 0.1, **extra})
    return typed(node, registry.MODELS[name].adapters["classify"].config)


TEXTS = ["房间很干净，服务也好", "太吵了，再也不来", "早餐丰富，位置方便", "前台态度很差"] * 3


def test_bert_fc_head_and_freeze_options():
    from nlpexp.tasks.classify.bert_heads import build_classifier

    def trainable(freeze):
        _, model = build_classifier(small_cfg("bert_fc", freeze=freeze), ["负", "正"], TEXTS, 32)
        return sum(p.numel() for p in model.parameters() if p.requires_grad), model

    full, model = trainable("none")
    fc = model.fc
    assert [type(m).__name__ for m in fc] == ["Linear", "ReLU", "Dropout", "Linear"]
    assert fc[0].out_features == 200 and fc[3].out_features == 2
    head = sum(p.numel() for p in fc.parameters())
    pooler = sum(p.numel() for p in model.bert.pooler.parameters())
    assert trainable("all_but_pooler")[0] == head + pooler
    assert trainable("all")[0] == head
    layer = sum(p.numel() for p in model.bert.encoder.layer[0].parameters())
    embeddings = sum(p.numel() for p in model.bert.embeddings.parameters())
    assert trainable(1)[0] == full - embeddings - layer


def test_lstm_and_transformer_ignore_padding():
    """A text scores the same alone and right-padded in a batch with a longer one (last non-pad / mean pool)."""
    from nlpexp.tasks.classify import bert_heads, transformer

    sizes = {"d_model": 32, "num_heads": 2, "d_ff": 64, "vocab_size": 300}
    for build, cfg in ((bert_heads.build_classifier, small_cfg("bert_lstm")),
                       (transformer.build_classifier, small_cfg("transformer", **sizes))):
        tok, model = build(cfg, ["负", "正"], TEXTS, 32)
        model.eval()
        with torch.no_grad():
            alone = model(**tok(["很好"], return_tensors="pt")).logits
            batch = model(**tok(["很好", "房间很干净，服务也好，下次还来"], padding=True, return_tensors="pt")).logits
        assert torch.allclose(alone[0], batch[0], atol=1e-5)


def test_mlm_prompt_scores_the_label_characters_at_mask():
    from nlpexp.tasks.classify.mlm_prompt import build

    prompt = "请分析给定文本的情感倾向，从{choices}中选一个字。文本如下：{text}\n答案是：[MASK]"
    cfg = small_cfg("bert_chinese_mlm", prompt=prompt, mlm_probability=0.15)
    tok, model = build(cfg, ["负", "正"], TEXTS, 48)
    model.eval()
    long_text = "服务" * 100  # cut so that the prompt and its [MASK] still fit
    enc = tok([long_text, "很好"], padding=True, truncation=True, max_length=48, return_tensors="pt")
    assert enc["input_ids"].shape[1] <= 48
    assert (enc["input_ids"] == tok.mask_token_id).sum(dim=1).tolist() == [1, 1]
    with torch.no_grad():
        out = model(**enc)
        vocab = model(**enc, labels=torch.tensor([0, 1]))  # loss over the whole vocabulary at [MASK]
        hidden = model.bert(**enc).last_hidden_state
    answer = (enc["input_ids"] == tok.mask_token_id).int().argmax(dim=1)
    expected = model.cls(hidden[torch.arange(2), answer])[:, [tok.convert_tokens_to_ids("负"),
                                                               tok.convert_tokens_to_ids("正")]]
    assert torch.allclose(out.logits, expected, atol=1e-5)
    assert vocab.loss > 0


def test_clue_labels_sparse_ids_and_pairs(nlpexp, tmp_path):
    from nlpexp.tasks.classify.data import labelled_splits

    data = OmegaConf.create({"path": None, "source": "embedded", "embedded": "clue_sample.jsonl",
                             "embedded_format": "clue", "format": "clue", "text_column": None,
                             "label_column": None, "split": [0.64, 0.16, 0.2]})
    labels = labelled_splits(data, None, seed=0)[2]
    assert len(labels) == 8 and labels[0] == "news_story"  # id 100 first, ordered by id
    run = tmp_path / "clue"
    assert nlpexp("+smoke=true", "task=clue", "model=bert_fc", f"hydra.run.dir={run}").code == 0
    assert json.loads((run / "labels.json").read_text()) == labels
    res = nlpexp("mode=predict", f"ckpt={run}", "text=国足出线形势分析")
    assert res.code == 0 and res.out.split()[0] in labels

    pairs = tmp_path / "afqmc.json"
    rows = [{"sentence1": f"花呗怎么还款{i}", "sentence2": f"借呗{'怎么' if i % 2 else '为什么'}还款{i}",
             "label": str(i % 2)} for i in range(40)]
    pairs.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    res = nlpexp("+smoke=true", "task=clue", "model=bert_fc", f"data.path={pairs}")
    assert res.code == 0, res.err[-2000:]
    assert set(res.metrics()["per_class"]) >= {"0", "1"}


@pytest.mark.parametrize("args,message", [
    (["task=chnsenti", "model=bert_fc", "model.freeze=some"], "model.freeze must be none, all, all_but_pooler"),
    (["task=chnsenti", "model=bert_fc", "model.classifier_hidden=0"], "model.classifier_hidden must be"),
    (["task=chnsenti", "model=transformer", "model.num_heads=3"], "must be divisible by model.num_heads"),
    (["task=chnsenti", "model=bert_chinese_mlm", "model.prompt='no mask {text}'"], "model.prompt must contain"),
    (["task=chnsenti", "model=bert_chinese_mlm", "model.mlm_probability=1.5"], "model.mlm_probability must be"),
    (["task=finsent", "model=bert_chinese_mlm"], "supported models for finsent"),
    (["task=clue", "model=bert_chinese_mlm"], "supported models for clue"),
    (["task=clue", "model=bert_fc", "data.format=xml"], "data.format must be one of"),
])
def test_bad_options_fail_in_one_line(nlpexp, args, message):
    res = nlpexp("+smoke=true", *args)
    assert res.code == 2 and message in res.err and "Traceback" not in res.err
    assert not res.run_dirs()


def test_clue_file_errors_name_the_line(nlpexp, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"sentence": "好", "label": "1"}\n{"text": "x", "label": "2"}\n')
    res = nlpexp("+smoke=true", "task=clue", "model=bert_fc", f"data.path={bad}")
    assert res.code == 2 and "line 2" in res.err and "sentence" in res.err


def test_mlm_probability_masks_only_the_texts_real_tokens():
    from nlpexp.tasks.classify.mlm_prompt import build

    cfg = small_cfg("bert_chinese_mlm", prompt="文本如下：{text}\n答案是：[MASK]", mlm_probability=0.5)
    tok, model = build(cfg, ["负", "正"], TEXTS, 48)
    enc = tok(["很好", "房间很干净，服务也好，下次还来"], padding=True, return_tensors="pt")
    answer = (enc["input_ids"] == tok.mask_token_id).int().argmax(dim=1)
    torch.manual_seed(0)
    ids, targets = model.mask_tokens(enc["input_ids"], enc["attention_mask"], answer)
    picked = targets >= 0
    assert picked.any()
    special = torch.isin(enc["input_ids"], torch.tensor(tok.all_special_ids))
    assert not (picked & (special | ~enc["attention_mask"].bool())).any()  # never [CLS]/[SEP]/pad/the answer
    assert (targets[picked] == enc["input_ids"][picked]).all()
    assert (ids[torch.arange(2), answer] == tok.mask_token_id).all()
    model.train()
    out = model(**enc, labels=torch.tensor([1, 0]))
    assert torch.isfinite(out.loss) and out.logits.shape == (2, 2)
