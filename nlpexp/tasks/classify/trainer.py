"""How every torch classifier of this wing (hf, bert_heads, gpt2, mlm_prompt, transformer) trains in the transformers
Trainer (made resumable and given the run's console in nlpexp/training/hf_trainer.py): dynamic padding, the best
epoch by validation, LP-FT head start, whole-word tokens, weight averages of the last epochs and model soups.

An adapter hands `fit` its model.* dataclass, the run's FitRun (contract.py) and a builder
`(model_cfg, labels, train_texts, max_length) -> (tokenizer, model)` (model_cfg: that dataclass) whose model's
forward takes input_ids, attention_mask, token_type_ids, labels and returns .loss and .logits (batch, labels),
with config.num_labels and save_pretrained(folder). `fit` returns a `TorchClassifier`.
"""
import json
import shutil
from pathlib import Path

import numpy as np

from nlpexp.inputs import hub
from nlpexp.inputs.hub import builds_small
from nlpexp.runs import STAGING
from nlpexp.runs import check_files, write_dir
from nlpexp.config.schema import Lora
from nlpexp.tasks.classify import lora, tokenized
from nlpexp.tasks.classify.config import Tokenizer
from nlpexp.tasks.classify.contract import FitRun
from nlpexp.tasks.classify.data import inputs, vocabulary_texts
from nlpexp.tasks.classify.head_map import fit_head
from nlpexp.training.hf_trainer import (history as _history, average_last_epochs, average_weights, early_stop,
                                        resumable_trainer, save_every, show_progress, stop_after, stop_early,
                                        stream_logs)


MULTI_LABEL = "multi_label_classification"  # HF's config.problem_type for independent labels (BCEWithLogitsLoss)


def set_multi_label(model) -> None:
    """Mark the model multi-label in its config: HF's sequence classifiers then train with BCEWithLogitsLoss, and
    the setting is saved with the model (config.json; bert_heads' classifier.json), so a loaded run is scored with
    sigmoids as it was trained."""
    model.config.problem_type = MULTI_LABEL


def is_multi_label(model) -> bool:
    return getattr(model.config, "problem_type", None) == MULTI_LABEL


def train_labels(frame, n_labels: int, multi_label: bool) -> list:
    """The label column of a training Dataset: the label ids, or with task.multi_label each text's multi-hot
    float vector (a float label is what makes the models use binary cross-entropy)."""
    if not multi_label:
        return list(frame["label"])
    from nlpexp.report.metrics import multi_hot

    return multi_hot(list(frame["label"]), n_labels).tolist()


def tokenize(tokenizer, texts: list, **kwargs):
    """The tokenizer on strings, or on (text, text_pair) tuples as pairs (its own separator and segment ids)."""
    if texts and isinstance(texts[0], tuple):
        return tokenizer([t[0] for t in texts], [t[1] for t in texts], **kwargs)
    return tokenizer(texts, **kwargs)


class TorchClassifier:
    """A trained or loaded torch classifier with its tokenizer: scores texts in length-sorted batches."""

    def __init__(self, tokenizer, model, device: str, max_length: int, precision: str = "fp32",
                 lora_base: dict | None = None):
        self.tokenizer, self.device, self.max_length, self.precision = tokenizer, device, max_length, precision
        self.model = model.to(device).eval()
        self.lora_base = lora_base  # a LoRA model (not merged): saved as its adapter, loaded on this base

    def predict_proba(self, texts, batch_size: int = 64) -> np.ndarray:
        import torch

        from nlpexp.training.precision import autocast

        texts = [tuple(t) if isinstance(t, (tuple, list)) else t for t in texts]
        lengths = [sum(map(len, t)) if isinstance(t, tuple) else len(t) for t in texts]
        order = np.argsort(lengths, kind="stable")  # similar lengths batch together: less padding
        out = np.zeros((len(texts), self.model.config.num_labels), dtype=np.float64)
        # as the saved model was trained: one sigmoid per label (multi-label) or a softmax over them
        squash = torch.sigmoid if self.multi_label else (lambda logits: torch.softmax(logits, dim=-1))
        with torch.inference_mode(), autocast(self.precision, self.device):
            for start in range(0, len(texts), batch_size):
                idx = order[start:start + batch_size]
                enc = tokenize(self.tokenizer, [texts[i] for i in idx], truncation=True, max_length=self.max_length,
                               padding=True, return_tensors="pt").to(self.device)
                out[idx] = squash(self.model(**enc).logits.float()).cpu().numpy()
        return out

    @property
    def multi_label(self) -> bool:
        return is_multi_label(self.model)

    def extra_metrics(self, frame, labels, prefix: str) -> dict:
        return {}

    def weights(self) -> dict:
        return self.model.state_dict()

    def load_weights(self, state: dict) -> None:
        self.model.load_state_dict(state)

    def save(self, folder: Path) -> None:
        """The model, its tokenizer and scoring.json, written whole or not at all (saved.write_dir)."""
        with write_dir(folder) as tmp:
            if self.lora_base is not None:
                lora.save(self.model, tmp, self.lora_base)
            else:
                self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            (tmp / "scoring.json").write_text(json.dumps({"max_length": int(self.max_length),
                                                          "precision": self.precision,
                                                          "multi_label": self.multi_label}))


def saved_max_length(folder: Path) -> int:
    """The truncation length a saved classifier was trained with (scoring.json, written by TorchClassifier.save)."""
    return int(json.loads((Path(folder) / "scoring.json").read_text())["max_length"])


def saved_precision(folder: Path, device: str) -> str:
    """The precision a saved classifier was trained and scored in, as it can run on `device` (fp16 off CUDA: fp32)."""
    from nlpexp.training.precision import of_saved

    return of_saved(json.loads((Path(folder) / "scoring.json").read_text()), device)


def init_head_from_probe(model, tokenizer, texts, gold, max_length: int, seed: int) -> None:
    """Linear probe, then fine-tune (LP-FT): fit a logistic regression on the frozen encoder's pooled features and
    start the classifier from it, so early updates do not wreck the pretrained features with a random head.
    `texts`: strings or (text, text_pair) tuples; `gold`: label ids, or tuples of them (a multi-label model: one
    binary regression per label, so the head's sigmoid starts as each probe's probability)."""
    import torch
    from sklearn.linear_model import LogisticRegression

    base = getattr(model, model.base_model_prefix)
    features, texts = [], [tuple(t) if isinstance(t, (tuple, list)) else t for t in texts]
    model.eval()
    with torch.no_grad():
        for start in range(0, len(texts), 64):
            enc = tokenize(tokenizer, texts[start:start + 64], truncation=True, max_length=max_length, padding=True,
                           return_tensors="pt").to(model.device)
            features.append(base(**enc).pooler_output.float().cpu())
    features = torch.cat(features).numpy()
    if is_multi_label(model):
        _probe_per_label(model, features, gold, seed)
        model.train()
        return
    probe = LogisticRegression(max_iter=2000, C=1.0, random_state=seed).fit(features, list(gold))
    weight = torch.zeros_like(model.classifier.weight)
    bias = torch.full_like(model.classifier.bias, -10.0)
    classes = torch.as_tensor(probe.classes_)
    if len(probe.classes_) > 2:
        weight[classes] = torch.as_tensor(probe.coef_, dtype=weight.dtype)
        bias[classes] = torch.as_tensor(probe.intercept_, dtype=bias.dtype)
    else:
        weight[classes[1]] = torch.as_tensor(probe.coef_[0], dtype=weight.dtype)
        bias[classes[0]], bias[classes[1]] = 0.0, float(probe.intercept_[0])
    model.classifier.weight.data.copy_(weight)
    model.classifier.bias.data.copy_(bias)
    model.train()


def _probe_per_label(model, features, gold, seed: int) -> None:
    """The multi-label probe: one logistic regression per label on the pooled features, its coefficients that
    label's head row. A label every training text has (or none has) starts as that constant (bias +-10)."""
    import torch
    from sklearn.linear_model import LogisticRegression

    from nlpexp.report.metrics import multi_hot

    targets = multi_hot(list(gold), model.classifier.weight.shape[0])
    weight, bias = torch.zeros_like(model.classifier.weight), torch.zeros_like(model.classifier.bias)
    for j in range(targets.shape[1]):
        if len(np.unique(targets[:, j])) < 2:
            bias[j] = 10.0 if targets[0, j] else -10.0
            continue
        probe = LogisticRegression(max_iter=2000, C=1.0, random_state=seed).fit(features, targets[:, j])
        weight[j] = torch.as_tensor(probe.coef_[0], dtype=weight.dtype)
        bias[j] = float(probe.intercept_[0])
    model.classifier.weight.data.copy_(weight)
    model.classifier.bias.data.copy_(bias)


def keep_whole_words(tokenizer, model, words) -> list[str]:
    """Add every word the tokenizer would split into pieces as one whole token, matched before WordPiece splitting
    (a whole word only), and grow the embedding matrix; returns the words added."""
    from tokenizers import AddedToken

    split = [w for w in dict.fromkeys(str(w) for w in words) if len(tokenizer.tokenize(w)) > 1]
    if split:
        tokenizer.add_tokens([AddedToken(w, single_word=True, normalized=True) for w in split])
        model.resize_token_embeddings(len(tokenizer))
    return split


def keep_whole_list(tokenizer: Tokenizer | None, labels: list[str]) -> list[str]:
    """tokenizer.keep_whole: null means the label words; [] turns it off; tasks without the node keep none."""
    if tokenizer is None:
        return []
    words = tokenizer.keep_whole
    return list(labels) if words is None else [str(w) for w in words]


def run_precision(run: FitRun) -> str:
    """The precision trainer.precision asks for on the run's device (precision.of_run, from the typed loop)."""
    from nlpexp.training.precision import resolve

    return resolve(run.trainer.precision, run.device)


def fit(model_cfg, run: FitRun, labels: list[str], splits, build_model, keep_whole: bool = False,
        pretrained_head: bool = False, probe_head: bool = False, lora_cfg: Lora | None = None):
    """Fine-tune with the Trainer (dynamic padding, length-grouped batches), keep the best epoch by validation.

    Under torchrun (trainer.nproc > 1) every rank trains; only rank 0 gets a classifier back (None elsewhere).
    `model_cfg`: the adapter's model.* dataclass, handed to `build_model`, the adapter's (tokenizer, model) builder
    (see the module docstring). `keep_whole`: the adapter's tokenizer is WordPiece, so tokenizer.keep_whole
    applies (hf encoders). `pretrained_head`: a loaded model comes with its own classification head (or a fresh
    one), mapped to the task's labels by name (head_map.fit_head). `probe_head`: the head starts from a linear
    probe (model.head_init=probe). `lora_cfg`: model.lora of the adapters that read it (hf, gpt2).
    `trainer.epochs=0` (zero-shot): the model is scored as it is built or loaded. `trainer.soup=N` (N > 1): N
    fine-tunes from the same start (seeds seed..seed+N-1: data order and dropout differ), then one model with the
    mean of their weights (a uniform "model soup").
    """
    import time

    from transformers import DataCollatorWithPadding

    from nlpexp.report.metrics import accuracy

    tr, run_dir, device = run.trainer, run.run_dir, run.device
    precision = run_precision(run)
    train = splits["train"]
    tokenizer, model = build_model(model_cfg, labels, vocabulary_texts(train), tr.max_length)
    head = None
    if pretrained_head and not builds_small(model_cfg):
        head = fit_head(model, labels, run.label_map, str(model_cfg.pretrained))
    if run.multi_label:  # after fit_head, which makes the mapped head single-label
        set_multi_label(model)
    if int(tr.epochs) == 0:
        return zero_shot(run, tokenizer, model, labels, head)
    with_lora = lora.wanted(lora_cfg)
    whole = keep_whole_list(run.tokenizer, labels) if keep_whole and not with_lora else []
    added = keep_whole_words(tokenizer, model, whole)
    if whole:
        print(f"tokenizer: added as whole tokens: {', '.join(added) or 'none (every word is one token already)'}")
    if probe_head:
        init_head_from_probe(model, tokenizer, inputs(train), train["label"], tr.max_length,
                             run.seed)
    if with_lora:
        if builds_small(model_cfg):  # no pretrained base to load it onto: keep this one
            lora.keep_base(model, run_dir / "checkpoints" / lora.BASE)
        model = lora.wrap(model, lora_cfg)

    def encode(frame, split: str):  # cached by content (tokenized.py): mode=prepare may have done it already
        return tokenized.encode(frame, tokenizer, tr.max_length, train_labels(frame, len(labels), run.multi_label),
                                split)

    data = {"train": encode(splits["train"], "train"), "validation": encode(splits["validation"], "validation"),
            "collator": DataCollatorWithPadding(tokenizer)}
    ckpt_dir = run_dir / "checkpoints"
    n_soup = int(tr.soup)
    if n_soup < 2:
        trainer, out = _train(run, model, tokenizer, data, labels, ckpt_dir, run.seed)
        if not trainer.is_world_process_zero():
            return None, [], {}
        averaged = average_last_epochs(trainer, ckpt_dir, int(tr.average_last), tr.best_metric)
        history, samples_per_s = _history(trainer.state.log_history), out.metrics["train_samples_per_second"]
        chosen = Path(trainer.state.best_model_checkpoint or "").name  # checkpoint-<step>: removed below
        extra = {"best_checkpoint": str(ckpt_dir / "best"), "best_step": int(chosen.split("-")[-1])
                 if chosen.split("-")[-1].isdigit() else None, "weight_average": averaged, **early_stop(trainer)}
        if "early_stop" in extra and history:
            history[-1]["early_stop"] = True
    else:
        start, started = {k: v.detach().clone() for k, v in model.state_dict().items()}, time.time()
        states, scores, history, ingredients = [], [], [], []
        for i in range(n_soup):
            model.load_state_dict(start)
            seed = int(run.seed) + i
            print(f"soup: ingredient {i + 1}/{n_soup} (seed {seed})")
            folder = ckpt_dir / f"ingredient-{i + 1}"
            trainer, _ = _train(run, model, tokenizer, data, labels, folder, seed)
            states.append({k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
            scores.append(float(trainer.state.best_metric))
            history += [{"ingredient": i + 1, **row} for row in _history(trainer.state.log_history)]
            ingredients.append({"seed": seed, f"val_{tr.best_metric}": round(scores[-1], 6),
                                "test_accuracy": accuracy(TorchClassifier(tokenizer, model, device, tr.max_length,
                                                                          precision), splits["test"])})
        # a uniform soup, not a greedy one: validation (776 texts on PhraseBank) cannot tell apart averages whose
        # accuracies differ by less than its own noise, and choosing among them by it cost test accuracy there
        model.load_state_dict(average_weights(states))
        score = float(trainer.evaluate(metric_key_prefix="soup")[f"soup_{tr.best_metric}"])
        print(f"soup: the average of {n_soup} ingredients, validation {tr.best_metric} {score:.4f} "
              f"(ingredients {min(scores):.4f}-{max(scores):.4f})")
        samples_per_s = len(splits["train"]) * float(tr.epochs) * n_soup / (time.time() - started)
        extra = {"soup": {"ingredients": ingredients, f"val_{tr.best_metric}": round(score, 6)}}
    model = trainer.model
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    adapters = lora.describe(model, lora_cfg) if with_lora else None
    base = None
    if adapters and lora_cfg.merge:  # one plain model that from_pretrained loads
        model = model.merge_and_unload()
    elif adapters and builds_small(model_cfg):
        base = {"pretrained": lora.BASE, "folder": str(run_dir / "checkpoints" / lora.BASE)}
    elif adapters:
        pretrained = str(model_cfg.pretrained)
        base = {"pretrained": pretrained, "revision": (hub.LOADED["models"].get(pretrained) or {}).get("commit")
                or model_cfg.revision}
    clf = TorchClassifier(tokenizer, model, device, tr.max_length, precision, lora_base=base)
    clf.save(ckpt_dir / "best")
    if not tr.keep_checkpoints:
        for old in [*ckpt_dir.glob("checkpoint-*"), *ckpt_dir.glob("ingredient-*"), *ckpt_dir.glob(lora.BASE),
                    ckpt_dir / STAGING]:
            shutil.rmtree(old, ignore_errors=True)
    info = {"train_samples_per_s": round(samples_per_s, 2), "precision": precision,
            "grad_accum": int(tr.grad_accum),
            "trainable_params": trainable, "total_params": total,
            **({"lora": {**adapters, "trainable_share": round(trainable / total, 5)}} if adapters else {}),
            **{k: v for k, v in extra.items() if v}}
    if whole:
        info["tokenizer_added_words"] = added
    if head:
        info["head"] = head
    return clf, history, info


def zero_shot(run: FitRun, tokenizer, model, labels: list[str], head: dict | None):
    """trainer.epochs=0: the pretrained model scored as it is (its head mapped by label name), saved as the run's
    best checkpoint. A head that knows none of the task's labels would score noise: refused."""
    from nlpexp.errors import UserError

    if head is not None and not head["mapped"]:
        raise UserError(f"trainer.epochs=0 scores the pretrained head as it is, but {head['from']}'s head has no "
                        f"class named like the task's labels ({', '.join(labels)}): train it (trainer.epochs >= 1), "
                        "or name its classes with data.label_map")
    if head is not None and head["new"]:
        print(f"zero-shot: {head['from']}'s head has no class for {', '.join(head['new'])}: those rows are untrained")
    precision = run_precision(run)
    clf = TorchClassifier(tokenizer, model, run.device, run.trainer.max_length, precision)
    clf.save(run.run_dir / "checkpoints" / "best")
    info = {"zero_shot": True, "precision": precision, "trainable_params": 0,
            "total_params": sum(p.numel() for p in model.parameters())}
    return clf, [], {**info, **({"head": head} if head else {})}


def _train(run: FitRun, model, tokenizer, data: dict, labels: list[str], out_dir: Path, seed: int):
    """One Trainer run from the model's current weights, checkpoints in out_dir; the best epoch by validation is
    loaded at the end. Returns (trainer, the train() output)."""
    from scipy.special import expit
    from transformers import TrainingArguments

    from nlpexp.training import distributed
    from nlpexp.report.metrics import classification_metrics, multilabel_metrics

    from nlpexp.training.precision import trainer_flags

    tr, run_dir, device = run.trainer, run.run_dir, run.device

    def compute_metrics(pred):
        logits, gold = pred
        if run.multi_label:  # each label's sigmoid at 0.5 (the thresholds are chosen after training, on validation)
            return multilabel_metrics(gold, expit(np.asarray(logits, dtype=np.float64)), labels,
                                      np.full(len(labels), 0.5))[0]
        return classification_metrics(gold, logits, labels)[0]

    parallel, verbose = distributed.world_size() > 1, run.verbose
    args = TrainingArguments(
        output_dir=str(out_dir), num_train_epochs=tr.epochs, max_steps=tr.max_steps,
        per_device_train_batch_size=tr.batch_size, per_device_eval_batch_size=tr.eval_batch_size,
        gradient_accumulation_steps=tr.grad_accum, learning_rate=tr.lr, weight_decay=tr.weight_decay,
        warmup_steps=tr.warmup_ratio, label_smoothing_factor=tr.label_smoothing,
        eval_strategy="epoch", save_strategy="epoch", logging_strategy="epoch",
        load_best_model_at_end=True, metric_for_best_model=tr.best_metric, greater_is_better=True,
        save_total_limit=None if tr.keep_checkpoints or tr.average_last else 2,
        seed=seed, data_seed=seed,
        use_cpu=device == "cpu", train_sampling_strategy="group_by_length",
        report_to=run.report_to(run_dir),
        disable_tqdm=not verbose, dataloader_num_workers=0, save_only_model=False, **trainer_flags(run_precision(run)),
        ddp_backend=("nccl" if device == "cuda" else "gloo") if parallel else None)
    trainer_class = resumable_trainer(seed)
    trainer = trainer_class(model=model, args=args, train_dataset=data["train"], eval_dataset=data["validation"],
                            processing_class=tokenizer, data_collator=data["collator"],
                            compute_metrics=compute_metrics,
                            callbacks=[*([save_every(int(tr.save_steps))] if tr.save_steps else []),
                                       *([stop_after(float(tr.max_minutes))] if tr.max_minutes else []),
                                       *([stop_early(int(tr.patience))] if tr.patience else [])])
    if not verbose:
        show_progress(trainer, float(tr.epochs))
    if run.logger == "wandb" and trainer.is_world_process_zero():  # TensorBoard streams through report_to
        trainer.add_callback(stream_logs(run.step_logger(run_dir)))
    if run.resume_from:  # as resume chose it (its hashes are remembered: not read twice)
        check_files(run.resume_from)
    out = trainer.train(resume_from_checkpoint=run.resume_from)
    trainer.accelerator.wait_for_everyone()  # every rank has loaded the best epoch before rank 0 prunes checkpoints
    return trainer, out


def fit_tokenizer(model_cfg, run: FitRun, labels: list[str], train_texts, build_model, keep_whole: bool = False,
                  lora_cfg: Lora | None = None):
    """The tokenizer `fit` encodes the splits with, as `fit` makes it (the adapter's builder, then the whole words
    of tokenizer.keep_whole), and nothing trained: mode=prepare caches the tokenized splits with it, under the key
    the training run computes again. The arguments are `fit`'s."""
    tokenizer, model = build_model(model_cfg, labels, train_texts, run.trainer.max_length)
    whole = keep_whole_list(run.tokenizer, labels) if keep_whole and not lora.wanted(lora_cfg) else []
    keep_whole_words(tokenizer, model, whole)
    return tokenizer
