"""task=emotion: label sets, unification, balanced sampling, every model cell in smoke form, GPT-2 prompt-and-answer,
the keyword-preserving tokenizer, cross-dataset evaluation and generation-augmented training."""
import json

import pandas as pd
import pytest
from omegaconf import OmegaConf

from nlpexp.config import registry
from nlpexp.tasks.classify.data import label_names, load_eval_set, load_splits, per_label_sample, unify_labels
from nlpexp.errors import UserError

SIX = ["anger", "fear", "joy", "love", "sadness", "surprise"]


def emotion_cfg(**overrides):
    cfg = OmegaConf.load(registry.__file__.replace("config/registry.py", "tasks/classify/conf/task/emotion.yaml"))
    cfg.merge_with(OmegaConf.create(overrides))
    return cfg


def test_label_sets_are_chosen_by_config():
    assert label_names(emotion_cfg().task) == SIX
    thirteen = label_names(emotion_cfg(task={"label_set": 13}).task)
    assert len(thirteen) == 13 and thirteen[:6] == SIX and "neutral" in thirteen


def test_unification_map_and_other_labels():
    data = emotion_cfg().data
    frame = pd.DataFrame({"text": list("abcde"), "label": ["Happy", "worry", "neutral", "sadness", "happiness"],
                          "line": range(2, 7)})
    out = unify_labels(frame, data, SIX, "x.csv")
    assert list(out["label"]) == ["joy", "fear", "sadness", "joy"]  # neutral is outside the 6-label set
    data.other_labels = "error"
    from nlpexp.tasks.classify.data import encode_labels

    with pytest.raises(UserError, match=r"x.csv line 4: unknown label 'neutral'"):
        encode_labels(unify_labels(frame, data, SIX, "x.csv"), SIX, "x.csv")


def test_balanced_seeded_sample_and_8_2_split():
    cfg = emotion_cfg(data={"per_label": 40})
    a = load_splits(cfg.data, SIX, seed=3)
    b = load_splits(cfg.data, SIX, seed=3)
    everything = pd.concat([a[s] for s in a])
    assert everything["label"].value_counts().tolist() == [40] * 6  # the embedded sample has >= 40 per label
    assert len(a["test"]) == 48 and len(a["train"]) + len(a["validation"]) == 192  # 8:2
    assert all(a[s]["text"].tolist() == b[s]["text"].tolist() for s in a)
    c = per_label_sample(everything, 5, seed=4)
    assert c["label"].value_counts().tolist() == [5] * 6
    # data.split_seed: runs with other seeds draw the same sample and split (what mode=soup relies on)
    fixed = emotion_cfg(data={"per_label": 40, "split_seed": 7, "max_train_samples": 50}).data
    d, e, f = load_splits(fixed, SIX, seed=1), load_splits(fixed, SIX, seed=2), load_splits(cfg.data, SIX, seed=1)
    assert all(d[s]["text"].tolist() == e[s]["text"].tolist() for s in d)
    assert d["test"]["text"].tolist() != f["test"]["text"].tolist()


def test_eval_set_with_other_spellings_is_unified():
    frame = load_eval_set("emotion_alt.csv", emotion_cfg().data, SIX)
    assert len(frame) == 150 and set(frame["label"]) == set(range(6))  # happiness->joy, worry->fear


@pytest.mark.parametrize("model", registry.TASKS["emotion"].models)
def test_every_emotion_cell_runs_in_smoke_form(nlpexp, model):
    res = nlpexp("+smoke=true", "task=emotion", f"model={model}")
    assert res.code == 0, res.err[-3000:]
    summary = res.metrics()
    (run,) = res.run_dirs()
    preds = pd.read_csv(run / "predictions.csv")
    assert summary["task"] == "emotion"
    assert summary["metrics"]["test_accuracy"] == pytest.approx((preds["predicted"] == preds["gold"]).mean(), abs=1e-6)
    assert set(summary["per_class"]) >= set(SIX)


def test_thirteen_labels_with_gpt2_prompt_and_eval_of_the_saved_run(nlpexp, tmp_path):
    res = nlpexp("+smoke=true", "task=emotion", "task.label_set=13", "model=gpt2_prompt", "model.loss_on=answer",
                 f"hydra.run.dir={tmp_path}/run")
    assert res.code == 0, res.err[-3000:]
    metrics = res.metrics()["metrics"]
    # restricted scoring always names a label; the unrestricted answer is right at most as often as it is a label
    assert metrics["test_accuracy_unrestricted"] <= 1 - metrics["test_answer_not_a_label"] + 1e-9
    prompt = json.loads((tmp_path / "run" / "checkpoints" / "best" / "prompt.json").read_text())
    assert len(prompt["labels"]) == 13 and "relief" in prompt["question"] and prompt["cue"] == "\nThe answer is:"
    preds = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert set(preds["predicted"]) <= set(prompt["labels"])
    assert metrics["test_accuracy"] == pytest.approx((preds["predicted"] == preds["gold"]).mean(), abs=1e-6)
    ev = nlpexp("task=emotion", "mode=eval", f"ckpt={tmp_path}/run", f"hydra.run.dir={tmp_path}/ev")
    assert ev.code == 0, ev.err[-3000:]
    again = pd.read_csv(tmp_path / "ev" / "predictions.csv")
    assert again["predicted"].tolist() == preds["predicted"].tolist()


def test_restricted_scoring_and_greedy_answer_agree_with_generate():
    """The greedy answer read from teacher-forced argmaxes is what model.generate's greedy decoding spells."""
    import torch

    from nlpexp.inputs.hub import small_gpt2_config, train_byte_bpe
    from nlpexp.tasks.classify.gpt2_prompt import PromptClassifier

    texts = ["i am so happy today", "that was scary", "what a surprise"]
    tok = train_byte_bpe(texts * 5 + [" joy fear surprise"] * 5, 300)
    torch.manual_seed(0)
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel(small_gpt2_config(OmegaConf.create({"hidden_size": 16, "num_hidden_layers": 1,
                                                                "num_attention_heads": 2}), len(tok), 64,
                                              tok.eos_token_id, tok.pad_token_id))
    clf = PromptClassifier(tok, model, ["joy", "fear", "surprise"], "Q: joy, fear, surprise?\n", "\nA:", "cpu", 48)
    # a few steps of training on "... fear": the greedy answer then spells a label, so the check has teeth
    from nlpexp.training import loop
    from nlpexp.tasks.classify.gpt2_prompt import LMJob

    loop.fit(LMJob(model, [clf.sequence(t, 1) for t in texts], tok.eos_token_id, 3, 0),
             loop.Settings(epochs=150, batch_size=3, lr=1e-2), "cpu")
    model.eval()
    proba = clf.predict_proba(texts)
    assert proba.shape == (3, 3) and abs(proba.sum() - 3) < 1e-6
    greedy = clf.greedy_answers(texts)
    for text, answer in zip(texts, greedy):
        prompt = torch.as_tensor([clf.prompt_ids(text)])
        out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                             max_new_tokens=max(len(a) for a in clf.answers), pad_token_id=tok.eos_token_id,
                             eos_token_id=None)[0, prompt.shape[1]:].tolist()
        spelled = [j for j, a in enumerate(clf.answers) if out[:len(a)] == a]
        assert (spelled[0] if spelled else -1) == answer
    assert (greedy == 1).all() and (proba.argmax(axis=1) == 1).all()


def test_restricted_answer_is_the_greedy_one_whenever_that_is_a_label():
    """One-token labels: where the next-token argmax is a label, restricted scoring picks it too; elsewhere the
    unrestricted answer is wrong and the restricted one may be right. So restricted >= unrestricted, always."""
    import torch
    from transformers.modeling_outputs import CausalLMOutput

    from nlpexp.inputs.hub import train_byte_bpe
    from nlpexp.tasks.classify.gpt2_prompt import PromptClassifier, answer_ids

    texts = [f"text number {i} says {w}" for i, w in enumerate(["yes", "no", "maybe", "later", "never"] * 8)]
    tok = train_byte_bpe(texts + [" joy fear surprise"] * 20, 300)
    labels = ["joy", "fear", "surprise"]
    assert all(len(a) == 1 for a in answer_ids(tok, labels))

    class PrefixLM(torch.nn.Module):  # next-token logits: a running sum of random token vectors, labels boosted
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.emb = torch.nn.Embedding(len(tok), len(tok))
            self.boost = torch.zeros(len(tok))
            self.boost[[a[0] for a in answer_ids(tok, labels)]] = 9.0

        def forward(self, input_ids, attention_mask=None):
            return CausalLMOutput(logits=self.emb(input_ids).cumsum(dim=1) + self.boost)

    clf = PromptClassifier(tok, PrefixLM(), labels, "Q: joy, fear, surprise?\n", "\nA:", "cpu", 48)
    restricted, greedy = clf.predict_proba(texts).argmax(axis=1), clf.greedy_answers(texts)
    assert (greedy < 0).any() and (greedy >= 0).any(), greedy  # both kinds of answer occur
    assert all(r == g for r, g in zip(restricted, greedy) if g >= 0)


def test_answers_end_with_end_of_text_only_when_one_label_begins_another():
    from nlpexp.inputs.hub import train_byte_bpe
    from nlpexp.tasks.classify.gpt2_prompt import answer_ids

    tok = train_byte_bpe(["joy fear love it"] * 20, 300)
    eos = tok.eos_token_id
    assert all(a[-1] != eos for a in answer_ids(tok, ["joy", "fear"]))
    assert all(a[-1] == eos for a in answer_ids(tok, ["love", "love it"]))  # " love" begins " love it"


def test_keyword_preserving_tokenizer():
    from transformers import BertConfig, BertForSequenceClassification

    from nlpexp.inputs.hub import train_wordpiece
    from nlpexp.tasks.classify.trainer import keep_whole_words

    tok = train_wordpiece(["the cat sat on a mat"] * 3 + ["surprising news"], 60)
    model = BertForSequenceClassification(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32))
    assert len(tok.tokenize("surprise")) > 1
    added = keep_whole_words(tok, model, ["surprise", "cat", "surprise"])
    assert added == ["surprise"]  # cat is one token already
    assert tok.tokenize("what a Surprise") == ["what", "a", "surprise"] or "surprise" in tok.tokenize("a Surprise")
    assert "surprise" not in tok.tokenize("surprised")  # whole words only
    assert model.get_input_embeddings().num_embeddings == len(tok)


def test_run_records_the_words_it_kept_whole(nlpexp, tmp_path):
    on = nlpexp("+smoke=true", "task=emotion", "model=bert", "model.small.vocab_size=120",
                f"hydra.run.dir={tmp_path}/on")
    off = nlpexp("+smoke=true", "task=emotion", "model=bert", "model.small.vocab_size=120", "tokenizer.keep_whole=[]",
                 f"hydra.run.dir={tmp_path}/off")
    assert on.code == off.code == 0, on.err[-2000:]
    added = json.loads((tmp_path / "on" / "metrics.json").read_text())["tokenizer_added_words"]
    assert added and set(added) <= set(SIX)
    assert "tokenizer_added_words" not in json.loads((tmp_path / "off" / "metrics.json").read_text())


def test_cross_dataset_matrix_from_a_multirun_and_the_report(nlpexp, tmp_path):
    from nlpexp.report.tables import write_report

    res = nlpexp("-m", "+smoke=true", "task=emotion", "model=doc2vec", "data.embedded=emotion.csv,emotion_alt.csv",
                 "eval_on=[emotion.csv,emotion_alt.csv]", f"hydra.sweep.dir={tmp_path}/sweep")
    assert res.code == 0, res.err[-3000:]
    row = pd.read_csv(tmp_path / "sweep" / "0" / "cross_eval.csv", index_col=0)
    assert list(row.index) == ["emotion.csv"] and list(row.columns) == ["emotion.csv", "emotion_alt.csv"]
    assert (tmp_path / "sweep" / "0" / "cross_eval.png").exists()
    write_report(tmp_path / "sweep")
    matrix = pd.read_csv(tmp_path / "sweep" / "cross_eval_matrix.csv", index_col=0)
    assert matrix.shape == (2, 2) and set(matrix.index) == set(matrix.columns)
    assert matrix.notna().all().all() and (tmp_path / "sweep" / "cross_eval_matrix.png").exists()


def test_generation_augmented_training(nlpexp, tmp_path):
    res = nlpexp("+smoke=true", "task=emotion", "model=doc2vec", "augment.generated_per_label=4",
                 f"hydra.run.dir={tmp_path}/run")
    assert res.code == 0, res.err[-3000:]
    generated = pd.read_csv(tmp_path / "run" / "generated.csv", keep_default_na=False)  # a generated "NA" is text
    assert generated["label"].value_counts().to_dict() == {name: 4 for name in SIX}
    metrics = res.metrics()["metrics"]
    test = pd.read_csv(tmp_path / "run" / "predictions.csv")

    def accuracy_of(folder, frame, gold):  # recomputed in the run's process: gensim seeds inference with str hash
        clf = registry.adapter("doc2vec", "classify").load(tmp_path / "run" / folder / "checkpoints" / "best", "cpu")
        predicted = [clf.labels[i] for i in clf.predict_proba(frame["text"]).argmax(axis=1)]
        return sum(p == g for p, g in zip(predicted, gold)) / len(gold)

    assert metrics["test_accuracy"] == pytest.approx((test["predicted"] == test["gold"]).mean(), abs=1e-6)
    assert metrics["noaug_test_accuracy"] == pytest.approx(accuracy_of("without_augment", test, test["gold"]), abs=1e-6)
    assert metrics["real_on_generated_accuracy"] == pytest.approx(
        accuracy_of("without_augment", generated, generated["label"]), abs=1e-6)
    assert metrics["generated_on_test_accuracy"] == pytest.approx(
        accuracy_of("generated_only", test, test["gold"]), abs=1e-6)
    assert res.metrics()["samples"]["train"] == 64 + 24
    assert (tmp_path / "run" / "without_augment" / "checkpoints").exists()


@pytest.mark.parametrize("args, message", [
    (["task.label_set=7"], "task.label_set must be one of 6, 13"),
    (["data.per_label=0"], "data.per_label must be an integer > 0"),
    (["data.other_labels=keep"], "data.other_labels must be drop or error"),
    (["tokenizer.keep_whole=joy"], "tokenizer.keep_whole=joy: Invalid value assigned: str is not a ListConfig"),
    (["tokenizer.keep_whole=[joy,' ']"], "tokenizer.keep_whole must be a list of words"),
    (["augment.generated_per_label=3", "augment.min_tokens=20"], "augment.min_tokens (20) must not exceed"),
    (["eval_on=[missing.csv]"], "eval_on: missing.csv is neither a file nor an embedded sample"),
    (["model=gpt2_prompt", "model.question=no_placeholder"], "model.question must contain {labels}"),
    (["model=gpt2_prompt", "model.loss_on=label"], "model.loss_on must be all or answer"),
])
def test_bad_emotion_options_are_one_line_errors(nlpexp, args, message):
    res = nlpexp("task=emotion", *args)
    assert res.code == 2 and message in res.err and "Traceback" not in res.err
    assert len(res.err.strip().splitlines()) == 1 and not res.run_dirs()
