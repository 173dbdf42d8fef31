"""The transformers Trainer loop every torch classifier of this wing trains in (hf, bert_heads, gpt2, mlm_prompt,
transformer): dynamic padding, length-grouped batches seeded per epoch (resumable mid-epoch), the best epoch by
validation, LP-FT head start, whole-word tokens, weight averages of the last epochs and model soups.

An adapter hands `fit` a builder `(model_cfg, labels, train_texts, max_length, smoke) -> (tokenizer, model)`
whose model's forward takes input_ids, attention_mask, token_type_ids, labels and returns .loss and .logits
(batch, labels), with config.num_labels and save_pretrained(folder). `fit` returns a `TorchClassifier`.
"""
import json
import shutil
from pathlib import Path

import numpy as np

from nlpexp import hub
from nlpexp.hub import builds_small
from nlpexp.runtime import STAGING
from nlpexp.saved import check_files, write_dir
from nlpexp.tasks.classify import lora
from nlpexp.tasks.classify.head_map import fit_head


class TorchClassifier:
    """A trained or loaded torch classifier with its tokenizer: scores texts in length-sorted batches."""

    def __init__(self, tokenizer, model, device: str, max_length: int, precision: str = "fp32",
                 lora_base: dict | None = None):
        self.tokenizer, self.device, self.max_length, self.precision = tokenizer, device, max_length, precision
        self.model = model.to(device).eval()
        self.lora_base = lora_base  # a LoRA model (not merged): saved as its adapter, loaded on this base

    def predict_proba(self, texts, batch_size: int = 64) -> np.ndarray:
        import torch

        from nlpexp.precision import autocast

        texts = list(texts)
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths batch together: less padding
        out = np.zeros((len(texts), self.model.config.num_labels), dtype=np.float64)
        with torch.inference_mode(), autocast(self.precision, self.device):
            for start in range(0, len(texts), batch_size):
                idx = order[start:start + batch_size]
                enc = self.tokenizer([texts[i] for i in idx], truncation=True, max_length=self.max_length,
                                     padding=True, return_tensors="pt").to(self.device)
                out[idx] = torch.softmax(self.model(**enc).logits.float(), dim=-1).cpu().numpy()
        return out

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
                                                          "precision": self.precision}))


def saved_max_length(folder: Path) -> int:
    """The truncation length a saved classifier was trained with (scoring.json, written by TorchClassifier.save)."""
    return int(json.loads((Path(folder) / "scoring.json").read_text())["max_length"])


def saved_precision(folder: Path, device: str) -> str:
    """The precision a saved classifier was trained and scored in, as it can run on `device` (fp16 off CUDA: fp32)."""
    from nlpexp.precision import of_saved

    return of_saved(json.loads((Path(folder) / "scoring.json").read_text()), device)


def init_head_from_probe(model, tokenizer, texts, gold, max_length: int, seed: int) -> None:
    """Linear probe, then fine-tune (LP-FT): fit a logistic regression on the frozen encoder's pooled features and
    start the classifier from it, so early updates do not wreck the pretrained features with a random head."""
    import torch
    from sklearn.linear_model import LogisticRegression

    base = getattr(model, model.base_model_prefix)
    features, texts = [], list(texts)
    model.eval()
    with torch.no_grad():
        for start in range(0, len(texts), 64):
            enc = tokenizer(texts[start:start + 64], truncation=True, max_length=max_length, padding=True,
                            return_tensors="pt").to(model.device)
            features.append(base(**enc).pooler_output.float().cpu())
    probe = LogisticRegression(max_iter=2000, C=1.0, random_state=seed).fit(torch.cat(features).numpy(), list(gold))
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


def _history(log_history: list[dict]) -> list[dict]:
    rows: dict[float, dict] = {}
    for entry in log_history:
        epoch = round(entry.get("epoch", 0), 3)
        row = rows.setdefault(epoch, {"epoch": epoch})
        if "loss" in entry:
            row["train_loss"] = entry["loss"]
        for key, value in entry.items():
            if key.startswith("eval_") and not key.endswith(("runtime", "per_second")):
                row["val_" + key[5:]] = value
    return [rows[k] for k in sorted(rows)]


def stop_after(minutes: float):
    """A callback that ends training once `minutes` have passed (trainer.max_minutes, as in our loop): the epoch's
    evaluation and the best-checkpoint choice still run."""
    import time

    from transformers import TrainerCallback

    from nlpexp import console

    class StopAfter(TrainerCallback):
        deadline = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.deadline = time.time() + 60 * minutes

        def on_step_end(self, args, state, control, **kwargs):
            if time.time() > self.deadline:
                console.say(f"trainer.max_minutes={minutes:g} reached at step {state.global_step}: stopping")
                control.should_training_stop = True
                control.should_evaluate = control.should_save = True
            return control

    return StopAfter()


def show_progress(trainer, epochs: float):
    """The run's console on the Trainer, as on our loop: one bar for training (loss, lr, samples/s) and one for
    each evaluation, a line per epoch with the validation metrics. Replaces the Trainer's bars and raw dicts."""
    import time

    from transformers import PrinterCallback, ProgressCallback, TrainerCallback

    from nlpexp import console

    class Show(TrainerCallback):
        bar = evaluating = None

        def __init__(self):
            self.table, self.shown, self.loss = console.Epochs(epochs), 0.0, None

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = console.Progress(state.max_steps, "train", initial=state.global_step, unit="step")
            self.first, self.started = state.global_step, time.time()
            self.samples = args.train_batch_size * args.gradient_accumulation_steps * args.world_size

        def on_epoch_begin(self, args, state, control, **kwargs):
            if epochs > 1:
                self.bar.describe(f"train epoch {int(state.epoch or 0) + 1}/{epochs:g}")

        def on_step_end(self, args, state, control, lr_scheduler=None, **kwargs):
            now, post = time.time(), {}
            due = now - self.shown > 0.5 or self.bar.due(state.global_step) or state.global_step >= state.max_steps
            if trainer.step_loss is not None and due:  # a float() syncs the GPU: not at each step
                self.loss, self.shown = float(trainer.step_loss), now
                post = {"loss": self.loss, "lr": lr_scheduler.get_last_lr()[0] if lr_scheduler else args.learning_rate,
                        "samples/s": round((state.global_step - self.first) * self.samples
                                           / max(now - self.started, 1e-9))}
            trainer.step_loss = None
            self.bar.update(state.global_step - self.bar.n, **post)

        def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
            if self.evaluating is None:
                self.evaluating = console.Progress(len(eval_dataloader), "evaluate", unit="batch", every=None,
                                                   leave=False)
            self.evaluating.update(1)

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if self.evaluating is not None:
                self.evaluating.close()
                self.evaluating = None
            losses = [e["loss"] for e in state.log_history if "loss" in e]
            self.table({"epoch": round(float(state.epoch or 0), 3), "step": state.global_step,
                        "train_loss": losses[-1] if losses else self.loss,
                        **{"val_" + k[5:]: v for k, v in (metrics or {}).items()
                           if k.startswith("eval_") and not k.endswith(("runtime", "per_second"))}})

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if trainer.is_world_process_zero():  # data parallel: one console, rank 0's
        trainer.add_callback(Show())


def stream_logs(log):
    """The Trainer's log entries (per epoch: loss, learning rate, validation) to a step logger as train/*."""
    from transformers import TrainerCallback

    names = {"loss": "loss", "learning_rate": "lr", "grad_norm": "grad_norm"}

    class Stream(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            values = {f"train/{names.get(k) or 'val_' + k[5:]}": float(v) for k, v in (logs or {}).items()
                      if (k in names or k.startswith("eval_")) and isinstance(v, (int, float))}
            if values:
                log(state.global_step, values)

    return Stream()


def stop_early(patience: int):
    """transformers' EarlyStoppingCallback on trainer.best_metric (`patience` epochs without a gain; the best epoch
    is loaded at the end as always), remembering where it stopped for metrics.json and the console."""
    from transformers import EarlyStoppingCallback

    from nlpexp import console

    class StopEarly(EarlyStoppingCallback):
        stopped = None

        def on_evaluate(self, args, state, control, metrics, **kwargs):
            super().on_evaluate(args, state, control, metrics, **kwargs)
            if control.should_training_stop and self.early_stopping_patience_counter >= patience:
                self.stopped = {"epoch": round(float(state.epoch), 3), "step": state.global_step,
                                "evaluations_without_gain": self.early_stopping_patience_counter}
                console.say(f"early stop at epoch {state.epoch:g} (step {state.global_step}): {patience} evaluations "
                      f"without a gain in validation {args.metric_for_best_model}; the best epoch is kept")

    return StopEarly(early_stopping_patience=patience)


def early_stop(trainer) -> dict:
    """{"early_stop": where} when trainer.patience stopped the run, else {}."""
    from transformers import EarlyStoppingCallback

    stopped = [c.stopped for c in trainer.callback_handler.callbacks
               if isinstance(c, EarlyStoppingCallback) and c.stopped]
    return {"early_stop": stopped[0]} if stopped else {}


def save_every(steps: int):
    """A callback that also checkpoints every `steps` optimiser steps (evaluation and best-epoch choice stay per
    epoch), so a run killed mid-epoch resumes close to where it stopped."""
    from transformers import TrainerCallback

    class SaveEvery(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % steps == 0:
                control.should_save = True
            return control

    return SaveEvery()


def resumable_trainer(seed: int):
    """The Trainer with a length-grouped shuffle that depends only on (seed, epoch), and checkpoints written whole.

    Stock LengthGroupedSampler draws its permutation from the global torch RNG when the epoch starts; a run
    resumed mid-epoch starts that epoch in a new process with another RNG state, so the rest of the epoch would
    see other batches. Seeding the shuffle per epoch gives the resumed run the uninterrupted run's batches (and
    every data-parallel rank the same permutation).

    transformers writes checkpoint-N file by file under its final name: a run killed (or out of disk) in the middle
    left a folder resume took for complete. _save_checkpoint lets it write into a staging folder, seals it
    (saved_files.json) and renames it into place (runtime.latest_checkpoint checks the seal before resuming)."""
    import math

    import torch
    from transformers import Trainer
    from transformers.trainer_pt_utils import LengthGroupedSampler
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, SaveStrategy, rotate_checkpoints

    from nlpexp.runtime import STAGING
    from nlpexp.saved import place, seal

    TRAINER_STATE_NAME = "trainer_state.json"

    class EpochSeededSampler(LengthGroupedSampler):
        trainer = None

        def __iter__(self):
            epoch = math.floor((self.trainer.state.epoch or 0) + 1e-6)  # 1.5 when resumed mid-epoch 2 -> 1
            self.generator = torch.Generator().manual_seed(seed + epoch)
            return super().__iter__()

    class ResumableTrainer(Trainer):
        step_loss = None  # this optimiser step's loss so far (a tensor: read by the console, no sync per step)
        staging = None    # while a checkpoint is written: the folder transformers writes checkpoint-N into

        def training_step(self, *args, **kwargs):
            loss = super().training_step(*args, **kwargs)  # already divided by the accumulation steps
            self.step_loss = loss if self.step_loss is None else self.step_loss + loss
            return loss

        def _get_output_dir(self, trial):
            return self.staging or super()._get_output_dir(trial)

        def _save_checkpoint(self, model, trial):
            """transformers' checkpoint-N, written whole or not at all: into <output_dir>/.staging/checkpoint-N,
            sealed (saved_files.json: each file's size and sha256), then renamed into place; the best checkpoint's
            path and the rotation (save_total_limit) are then those of the final folders."""
            run_dir = Path(super()._get_output_dir(trial))
            name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            staging, final = run_dir / STAGING, run_dir / name
            if self.args.should_save:  # what a killed save left of this step
                shutil.rmtree(staging / name, ignore_errors=True)
            self.accelerator.wait_for_everyone()  # data parallel: every rank writes its rng state into the same folder
            self.staging = str(staging)
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self.staging = None
            self.accelerator.wait_for_everyone()
            best = self.state.best_global_step
            if best and self.args.save_strategy in (SaveStrategy.STEPS, SaveStrategy.EPOCH, SaveStrategy.BEST) \
                    and (best == self.state.global_step or (run_dir / f"{PREFIX_CHECKPOINT_DIR}-{best}").is_dir()):
                self.state.best_model_checkpoint = str(run_dir / f"{PREFIX_CHECKPOINT_DIR}-{best}")
            elif str(self.state.best_model_checkpoint or "").startswith(str(staging)):
                self.state.best_model_checkpoint = None
            if self.args.should_save:
                self.state.save_to_json(str(staging / name / TRAINER_STATE_NAME))  # the final best path in it
                seal(staging / name)
                place(staging / name, final)
                shutil.rmtree(staging, ignore_errors=True)
                rotate_checkpoints(output_dir=str(run_dir), save_total_limit=self.args.save_total_limit,
                                   best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)
            self.accelerator.wait_for_everyone()  # every rank sees checkpoint-N before training goes on

        def _get_train_sampler(self, train_dataset=None):
            sampler = super()._get_train_sampler(train_dataset)
            if type(sampler) is LengthGroupedSampler:
                sampler = EpochSeededSampler(sampler.batch_size, lengths=sampler.lengths)
                sampler.trainer = self
            return sampler

    return ResumableTrainer


def average_weights(states: list[dict]) -> dict:
    """The element-wise mean of state dicts with the same keys (float32 mean, cast back to each tensor's dtype)."""
    import torch

    return {k: torch.stack([s[k].float() for s in states]).mean(0).to(states[0][k].dtype) for k in states[0]}


def average_last_epochs(trainer, ckpt_dir: Path, n: int, metric: str) -> dict | None:
    """Average the weights of the last `n` epoch checkpoints (a uniform "soup" of one run); keep the average
    only when its validation `metric` beats the best single epoch's (the choice is made on validation only)."""
    from safetensors.torch import load_file

    ckpts = sorted(ckpt_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[-n:]
    if n < 2 or len(ckpts) < 2:
        return None
    best_state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    states = [load_file(str(c / "model.safetensors")) for c in ckpts]
    soup = {**best_state, **average_weights([{k: s[k] for k in states[0]} for s in states])}
    trainer.model.load_state_dict(soup)
    soup_score = trainer.evaluate(metric_key_prefix="soup")[f"soup_{metric}"]
    best_score = trainer.state.best_metric
    used = soup_score > best_score
    if not used:
        trainer.model.load_state_dict(best_state)
    print(f"weight average of {len(ckpts)} epochs: validation {metric} {soup_score:.4f} vs best epoch "
          f"{best_score:.4f} -> {'average' if used else 'best epoch'} kept")
    return {"checkpoints": [c.name for c in ckpts], f"val_{metric}": round(float(soup_score), 6),
            f"best_epoch_val_{metric}": round(float(best_score), 6), "used": bool(used)}


def keep_whole_words(tokenizer, model, words) -> list[str]:
    """Add every word the tokenizer would split into pieces as one whole token, matched before WordPiece splitting
    (a whole word only), and grow the embedding matrix; returns the words added."""
    from tokenizers import AddedToken

    split = [w for w in dict.fromkeys(str(w) for w in words) if len(tokenizer.tokenize(w)) > 1]
    if split:
        tokenizer.add_tokens([AddedToken(w, single_word=True, normalized=True) for w in split])
        model.resize_token_embeddings(len(tokenizer))
    return split


def keep_whole_list(cfg, labels: list[str]) -> list[str]:
    """tokenizer.keep_whole: null means the label words; [] turns it off; tasks without the key keep none."""
    if cfg.get("tokenizer") is None:
        return []
    words = cfg.tokenizer.get("keep_whole")
    return list(labels) if words is None else [str(w) for w in words]


def fit(cfg, labels: list[str], splits, run_dir: Path, device: str, build_model, keep_whole: bool = False,
        pretrained_head: bool = False):
    """Fine-tune with the Trainer (dynamic padding, length-grouped batches), keep the best epoch by validation.

    Under torchrun (trainer.nproc > 1) every rank trains; only rank 0 gets a classifier back (None elsewhere).
    `build_model`: the adapter's (tokenizer, model) builder (see the module docstring). `keep_whole`: the
    adapter's tokenizer is WordPiece, so tokenizer.keep_whole applies (hf encoders). `pretrained_head`: a loaded
    model comes with its own classification head (or a fresh one), mapped to the task's labels by name
    (head_map.fit_head). `trainer.epochs=0` (zero-shot): the model is scored as it is built or loaded.
    `trainer.soup=N` (N > 1): N fine-tunes from the same start (seeds seed..seed+N-1: data order and dropout
    differ), then one model with the mean of their weights (a uniform "model soup").
    """
    import time

    from datasets import Dataset
    from transformers import DataCollatorWithPadding

    from nlpexp.metrics import accuracy

    from nlpexp.precision import of_run

    tr = cfg.trainer
    precision = of_run(cfg, device)
    tokenizer, model = build_model(cfg.model, labels, splits["train"]["text"], tr.max_length, bool(cfg.get("smoke")))
    head = None
    if pretrained_head and not builds_small(cfg.model, bool(cfg.get("smoke"))):
        head = fit_head(model, labels, cfg.data.get("label_map"), str(cfg.model.pretrained))
    if int(tr.epochs) == 0:
        return zero_shot(cfg, tokenizer, model, labels, run_dir, device, head)
    whole = keep_whole_list(cfg, labels) if keep_whole and not lora.wanted(cfg.model) else []
    added = keep_whole_words(tokenizer, model, whole)
    if whole:
        print(f"tokenizer: added as whole tokens: {', '.join(added) or 'none (every word is one token already)'}")
    if cfg.model.get("head_init") == "probe":
        init_head_from_probe(model, tokenizer, splits["train"]["text"], splits["train"]["label"], tr.max_length,
                             cfg.seed)
    if lora.wanted(cfg.model):
        if builds_small(cfg.model, bool(cfg.get("smoke"))):  # no pretrained base to load it onto: keep this one
            lora.keep_base(model, run_dir / "checkpoints" / lora.BASE)
        model = lora.wrap(model, cfg.model.lora)

    def encode(frame):
        ds = Dataset.from_dict({"text": list(frame["text"]), "label": list(frame["label"])})
        return ds.map(lambda b: tokenizer(b["text"], truncation=True, max_length=tr.max_length), batched=True,
                      remove_columns=["text"])

    data = {"train": encode(splits["train"]), "validation": encode(splits["validation"]),
            "collator": DataCollatorWithPadding(tokenizer)}
    ckpt_dir = run_dir / "checkpoints"
    n_soup = int(tr.get("soup") or 1)
    if n_soup < 2:
        trainer, out = _train(cfg, model, tokenizer, data, labels, run_dir, ckpt_dir, device, cfg.seed)
        if not trainer.is_world_process_zero():
            return None, [], {}
        averaged = average_last_epochs(trainer, ckpt_dir, int(tr.get("average_last") or 0), tr.best_metric)
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
            seed = int(cfg.seed) + i
            print(f"soup: ingredient {i + 1}/{n_soup} (seed {seed})")
            folder = ckpt_dir / f"ingredient-{i + 1}"
            trainer, _ = _train(cfg, model, tokenizer, data, labels, run_dir, folder, device, seed)
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
    adapters = lora.describe(model, cfg.model.lora) if lora.wanted(cfg.model) else None
    base = None
    if adapters and cfg.model.lora.merge:  # one plain model that from_pretrained loads
        model = model.merge_and_unload()
    elif adapters and builds_small(cfg.model, bool(cfg.get("smoke"))):
        base = {"pretrained": lora.BASE, "folder": str(run_dir / "checkpoints" / lora.BASE)}
    elif adapters:
        pretrained = str(cfg.model.pretrained)
        base = {"pretrained": pretrained, "revision": (hub.LOADED["models"].get(pretrained) or {}).get("commit")
                or cfg.model.get("revision")}
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


def zero_shot(cfg, tokenizer, model, labels: list[str], run_dir: Path, device: str, head: dict | None):
    """trainer.epochs=0: the pretrained model scored as it is (its head mapped by label name), saved as the run's
    best checkpoint. A head that knows none of the task's labels would score noise: refused."""
    from nlpexp.errors import UserError
    from nlpexp.precision import of_run

    if head is not None and not head["mapped"]:
        raise UserError(f"trainer.epochs=0 scores the pretrained head as it is, but {head['from']}'s head has no "
                        f"class named like the task's labels ({', '.join(labels)}): train it (trainer.epochs >= 1), "
                        "or name its classes with data.label_map")
    if head is not None and head["new"]:
        print(f"zero-shot: {head['from']}'s head has no class for {', '.join(head['new'])}: those rows are untrained")
    precision = of_run(cfg, device)
    clf = TorchClassifier(tokenizer, model, device, cfg.trainer.max_length, precision)
    clf.save(run_dir / "checkpoints" / "best")
    info = {"zero_shot": True, "precision": precision, "trainable_params": 0,
            "total_params": sum(p.numel() for p in model.parameters())}
    return clf, [], {**info, **({"head": head} if head else {})}


def _train(cfg, model, tokenizer, data: dict, labels: list[str], run_dir: Path, out_dir: Path, device: str,
           seed: int):
    """One Trainer run from the model's current weights, checkpoints in out_dir; the best epoch by validation is
    loaded at the end. Returns (trainer, the train() output)."""
    from transformers import TrainingArguments

    from nlpexp import distributed, loggers
    from nlpexp.metrics import classification_metrics

    from nlpexp.precision import of_run, trainer_flags

    tr = cfg.trainer

    def compute_metrics(pred):
        logits, gold = pred
        return classification_metrics(gold, logits, labels)[0]

    parallel, verbose = distributed.world_size() > 1, bool(cfg.get("verbose"))
    args = TrainingArguments(
        output_dir=str(out_dir), num_train_epochs=tr.epochs, max_steps=tr.max_steps,
        per_device_train_batch_size=tr.batch_size, per_device_eval_batch_size=tr.eval_batch_size,
        gradient_accumulation_steps=tr.grad_accum, learning_rate=tr.lr, weight_decay=tr.weight_decay,
        warmup_steps=tr.warmup_ratio, label_smoothing_factor=tr.get("label_smoothing", 0.0),
        eval_strategy="epoch", save_strategy="epoch", logging_strategy="epoch",
        load_best_model_at_end=True, metric_for_best_model=tr.best_metric, greater_is_better=True,
        save_total_limit=None if tr.keep_checkpoints or tr.get("average_last") else 2,
        seed=seed, data_seed=seed,
        use_cpu=device == "cpu", train_sampling_strategy="group_by_length",
        report_to=loggers.hf_report_to(cfg, run_dir),
        disable_tqdm=not verbose, dataloader_num_workers=0, save_only_model=False, **trainer_flags(of_run(cfg, device)),
        ddp_backend=("nccl" if device == "cuda" else "gloo") if parallel else None)
    trainer_class = resumable_trainer(seed)
    trainer = trainer_class(model=model, args=args, train_dataset=data["train"], eval_dataset=data["validation"],
                            processing_class=tokenizer, data_collator=data["collator"],
                            compute_metrics=compute_metrics,
                            callbacks=[*([save_every(int(tr.save_steps))] if tr.save_steps else []),
                                       *([stop_after(float(tr.max_minutes))] if tr.max_minutes else []),
                                       *([stop_early(int(tr.patience))] if tr.get("patience") else [])])
    if not verbose:
        show_progress(trainer, float(tr.epochs))
    if loggers.name(cfg) == "wandb" and trainer.is_world_process_zero():  # TensorBoard streams through report_to
        trainer.add_callback(stream_logs(loggers.step_logger(cfg, run_dir)))
    if cfg.get("resume_from"):  # as resume chose it (its hashes are remembered: not read twice)
        check_files(cfg.resume_from)
    out = trainer.train(resume_from_checkpoint=cfg.get("resume_from"))
    trainer.accelerator.wait_for_everyone()  # every rank has loaded the best epoch before rank 0 prunes checkpoints
    return trainer, out
