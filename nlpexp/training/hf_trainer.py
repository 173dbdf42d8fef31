"""The transformers Trainer, made to behave like our loop (training/loop.py) for any wing that trains in it:
resumable checkpoints written whole and a length-grouped shuffle seeded per epoch (`resumable_trainer`), the run's
console and step loggers on its events, a deadline (trainer.max_minutes), early stopping (trainer.patience), step
checkpoints (trainer.save_steps), and weight averages of the last epochs."""
import shutil
from pathlib import Path

def history(log_history: list[dict]) -> list[dict]:
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

    from nlpexp.report import console

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

    from nlpexp.report import console

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

    from nlpexp.report import console

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

    from nlpexp.runs import STAGING
    from nlpexp.runs import place, seal

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
