"""The one training loop of every hand-written path: story, novel, gpt2_prompt (and its augmentation generator),
the embedding projection matrix and the sentence-transformers fine-tune. Classification's torch models train in
transformers' Trainer (training/hf_trainer.py), which reads the same trainer.* keys with the same meaning.

A path hands `fit` a Job (its model, the micro-batches of an epoch, the summed loss of a batch) and Settings (the
trainer.* keys READS names). The loop owns the rest: AdamW (or the job's optimizer) with linear warm-up and decay,
gradient clipping, gradient accumulation weighted by loss units (so k micro-batches give the large batch's
gradient), precision (autocast; a GradScaler for fp16), device placement, max_steps / epochs / a minutes deadline,
early stopping (`trainer.patience` evaluations without a new best, as the evaluator judges it), a progress bar
with loss and throughput, per-epoch history rows, evaluation hooks, logger hooks, step checkpoints
(`trainer.save_steps`) and resume.

Resume: a checkpoint holds the weights, the optimizer, scheduler and scaler state, the torch RNG, the position in
the epoch and the evaluator's state, in safetensors + JSON (nothing pickled), written to a temporary folder and
renamed when whole, with saved_files.json (each file's size and sha256: runtime.latest_checkpoint checks it before
resume picks a checkpoint). An epoch's batches depend only on (seed, epoch), so a run killed mid-epoch and
resumed sees the rest of that epoch's batches, with the same dropout draws: on CPU it ends with the uninterrupted
run's weights and metrics.
"""
import json
import math
import shutil
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Protocol, Sequence

READS = ("epochs", "batch_size", "lr", "weight_decay", "warmup_ratio", "grad_accum", "max_steps", "max_minutes",
         "save_steps", "precision", "patience")
STATE = "loop_state.json"


@dataclass
class Settings:
    """What the loop reads of trainer.* (precision as resolved for the device)."""
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    grad_accum: int = 1
    max_steps: int = -1
    max_minutes: float | None = None
    save_steps: int = 0
    precision: str = "fp32"
    patience: int = 0          # >0: stop after this many evaluations without a new best (the evaluator's "best")
    clip: float = 1.0          # gradient-norm clipping (0: none)
    schedule: str = "linear"   # linear warm-up and decay | constant (the embedding matrix's plain SGD)

    @classmethod
    def of(cls, trainer, device: str, **overrides) -> "Settings":
        """From a trainer node (keys it lacks keep their defaults); `overrides` win (e.g. a job's own epochs)."""
        from nlpexp.training.precision import resolve

        known = {f.name for f in fields(cls)}
        values = {k: trainer.get(k) for k in READS if k in known and trainer.get(k) is not None}
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["precision"] = resolve(values.get("precision", "auto"), device)
        return cls(**values)


class Job(Protocol):
    """What a path gives the loop."""

    model: "torch.nn.Module"  # noqa: F821 -- its trainable parameters are optimised
    unit: str                 # what loss_sum sums over: "tokens", "windows", "pairs", ... (the progress bar's rate)

    def batches(self, epoch: int) -> Sequence:
        """The epoch's micro-batches in order; the same for the same epoch in any process (seeded by seed + epoch)."""

    def units(self, batch) -> int:
        """How many loss terms the batch holds (tokens with a label, windows, pairs)."""

    def loss_sum(self, batch):
        """The batch's loss summed over its units (a 0-dim tensor on the model's device)."""


class Evaluator(Protocol):
    """Called after each epoch (and every `eval_steps` steps): validation numbers for the history row, and the
    choice of the best weights. Its state is saved with step checkpoints."""

    def __call__(self, epoch: float, step: int) -> dict:
        """The row's validation values; "best": True in it when these weights are the best so far (kept by the
        evaluator: trainer.patience counts the evaluations since), "stop": True ends training at once."""

    def state(self) -> dict:
        """JSON values and tensors that resume needs (e.g. the best score so far)."""

    def load_state(self, state: dict) -> None:
        ...


def to_device(batch, device: str):
    """Tensors (in dicts, lists and tuples) moved to `device`; anything else as it is."""
    import torch

    if torch.is_tensor(batch):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def adamw(params, s: Settings):
    import torch

    return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)


def scaled_adamw(model, lr_scales: dict) -> Callable:
    """An `optimizer` for fit: AdamW with the named parameters at trainer.lr x their scale (one group per scale,
    the schedule scales each), the rest at trainer.lr in the first group (the lr the progress line shows)."""
    import torch

    scale_of = {id(p): float(lr_scales[n]) for n, p in model.named_parameters() if n in lr_scales}

    def make(params, s: Settings):
        groups: dict = {1.0: []}
        for p in params:
            groups.setdefault(scale_of.get(id(p), 1.0), []).append(p)
        return torch.optim.AdamW([{"params": ps, "lr": s.lr * k} for k, ps in groups.items() if ps],
                                 lr=s.lr, weight_decay=s.weight_decay)
    return make


def fit(job: Job, s: Settings, device: str, *, run_dir: Path | None = None, evaluate: Evaluator | None = None,
        eval_steps: int = 0, resume_from=None, optimizer: Callable = adamw, on_log: Callable | None = None,
        desc: str = "train") -> tuple[list[dict], dict]:
    """Train job.model; returns (history rows, info for metrics.json). Step checkpoints go to
    run_dir/checkpoints/checkpoint-<step> (the last two are kept while training, removed at the end)."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    from nlpexp.report import console
    from nlpexp.training.precision import autocast, grad_scaler

    model = job.model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = optimizer(params, s)
    first = job.batches(0)
    per_epoch = math.ceil(len(first) / s.grad_accum)
    total = per_epoch * s.epochs if s.max_steps <= 0 else min(per_epoch * s.epochs, s.max_steps)
    sched = get_linear_schedule_with_warmup(opt, int(s.warmup_ratio * total), max(total, 1)) \
        if s.schedule == "linear" else torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    scaler = grad_scaler(s.precision)
    at = {"epoch": 0, "position": 0, "step": 0, "elapsed": 0.0, "units": 0, "history": [], "losses": [],
          "stale": 0}
    if resume_from:
        at = load_checkpoint(Path(resume_from), model, opt, sched, scaler, evaluate)
        console.say(f"resumed at step {at['step']} (epoch {at['epoch'] + 1}, micro-batch {at['position']})")
    info = {"train_steps": at["step"], "train_minutes": 0.0, "precision": s.precision, "grad_accum": s.grad_accum}
    if s.epochs == 0 or total == 0:
        return at["history"], info
    ckpt_dir = Path(run_dir) / "checkpoints" if run_dir else None
    history, step, losses, stale = at["history"], at["step"], at["losses"], at.get("stale", 0)
    started, units_done = time.time() - at["elapsed"], at["units"]
    cpu_started = time.process_time() - at.get("cpu", 0.0)  # CPU time: a shared machine moves it less than wall time
    deadline = started + 60 * s.max_minutes if s.max_minutes else None
    bar, epochs = console.Progress(total, desc, initial=step, unit="step"), console.Epochs(s.epochs)

    def row(epoch: float) -> bool:
        """The history row at `epoch`; True when the evaluator or the patience ends training."""
        nonlocal stale
        out = {"epoch": round(epoch, 3), "step": step,
               "train_loss": round(sum(losses) / len(losses), 5) if losses else None}
        if evaluate is not None:
            out.update(evaluate(epoch, step))
            model.train()
            if "best" in out:  # an evaluator without a choice of weights (no validation data) counts nothing
                stale = 0 if out.pop("best") else stale + 1
            if s.patience and stale >= s.patience and not out.get("stop"):
                out["stop"] = out["early_stop"] = True
                info["early_stop"] = {"epoch": out["epoch"], "step": step, "evaluations_without_gain": stale}
                console.say(f"early stop at epoch {out['epoch']:g} (step {step}): {stale} evaluations without a "
                          "gain on validation; the best weights are kept")
        losses.clear()
        halt = bool(out.pop("stop", False))
        history.append(out)
        epochs(out)
        return halt

    def save(epoch: int, position: int) -> None:
        if ckpt_dir is not None:
            save_checkpoint(ckpt_dir, step, model, opt, sched, scaler, evaluate, epoch=epoch, position=position,
                            elapsed=time.time() - started, cpu=time.process_time() - cpu_started, units=units_done,
                            history=history, losses=losses, stale=stale)

    try:  # the bar is closed before any error is reported: the error is the last line
        model.train()
        stop, epoch = False, at["epoch"]
        for epoch in range(at["epoch"], s.epochs):
            micro = first if epoch == 0 else job.batches(epoch)
            if s.epochs > 1:
                bar.describe(f"{desc} epoch {epoch + 1}/{s.epochs}")
            start = at["position"] if epoch == at["epoch"] else 0
            position = start
            for position in range(start, len(micro), s.grad_accum):
                group = micro[position:position + s.grad_accum]
                loss = _step(job, group, opt, sched, scaler, params, s, device, autocast)
                step += 1
                units_done += sum(job.units(b) for b in group)
                losses.append(loss)
                rate = units_done / max(time.time() - started, 1e-9)
                bar.update(1, loss=loss, lr=sched.get_last_lr()[0], **{f"{job.unit}/s": round(rate)})
                if on_log is not None:
                    on_log(step, {"train/loss": loss, "train/lr": sched.get_last_lr()[0]})
                done = position + s.grad_accum >= len(micro)
                stop = step >= total or (deadline is not None and time.time() > deadline)
                if stop or done:
                    break
                if eval_steps and step % eval_steps == 0:
                    if row(epoch + (position + s.grad_accum) / len(micro)):
                        stop = True
                        break
                if s.save_steps and step % s.save_steps == 0:
                    save(epoch, position + s.grad_accum)
            finished = stop and position + s.grad_accum < len(micro)
            stop = row(epoch + ((position + s.grad_accum) / len(micro) if finished else 1)) or stop
            if s.save_steps and step % s.save_steps == 0 and not stop:  # an epoch's last step: saved after its row
                save(epoch + 1, 0)
            if stop:
                break
    finally:
        bar.close()
    model.eval()
    if ckpt_dir is not None:
        for old in ckpt_dir.glob("checkpoint-*"):  # complete ones, and what a killed save left (.tmp-<pid>, .old-)
            if (old / STATE).exists() or _step_of(old) is None:
                shutil.rmtree(old, ignore_errors=True)
    seconds = time.time() - started
    info.update(train_steps=step, train_minutes=round(seconds / 60, 2),
                train_cpu_minutes=round((time.process_time() - cpu_started) / 60, 2),
                **{f"train_{job.unit}_per_s": round(units_done / max(seconds, 1e-9), 2)})
    return history, info


def _step(job, group, opt, sched, scaler, params, s: Settings, device: str, autocast) -> float:
    """One optimiser step over the micro-batches: each batch's summed loss over the group's total units."""
    import torch

    total = max(sum(job.units(b) for b in group), 1)
    value = 0.0
    for batch in group:
        with autocast(s.precision, device):
            loss = job.loss_sum(to_device(batch, device)) / total
        (scaler.scale(loss) if scaler else loss).backward()
        value += float(loss.detach())
    if scaler:
        scaler.unscale_(opt)
    if s.clip:
        torch.nn.utils.clip_grad_norm_(params, s.clip)
    if scaler:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return value


# -- checkpoints: safetensors + JSON -------------------------------------------------------------------------
def _split(state: dict) -> tuple[dict, dict]:
    """(tensors, JSON values) of a flat dict."""
    import torch

    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items() if torch.is_tensor(v)}
    return tensors, {k: v for k, v in state.items() if k not in tensors}


def save_checkpoint(ckpt_dir: Path, step: int, model, opt, sched, scaler, evaluate, **position) -> Path:
    """checkpoint-<step> in ckpt_dir, written whole or not at all (saved.write_dir: a temporary sibling holding
    every file and saved_files.json with their sha256, renamed into place); the newest two are kept."""
    from nlpexp.runs import write_dir

    folder = ckpt_dir / f"checkpoint-{step}"
    with write_dir(folder) as tmp:  # checkpoint-<step>.tmp-<pid>, sealed (saved_files.json) and renamed when whole
        _write_checkpoint(tmp, step, model, opt, sched, scaler, evaluate, position)
    older = sorted((p for p in ckpt_dir.glob("checkpoint-*")
                    if _step_of(p) is not None and (p / STATE).exists() and p != folder), key=_step_of)
    for old in older[:-1]:  # the newest two stay: a crash while writing one leaves the other
        shutil.rmtree(old, ignore_errors=True)
    return folder


def _step_of(folder: Path) -> int | None:
    """N of a complete-named checkpoint-N folder (None: a temporary name of a save in progress or killed)."""
    tail = folder.name.split("-", 1)[-1]
    return int(tail) if folder.name.startswith("checkpoint-") and tail.isdigit() else None


def _write_checkpoint(tmp: Path, step: int, model, opt, sched, scaler, evaluate, position: dict) -> None:
    import torch
    from safetensors.torch import save_file, save_model

    save_model(model, str(tmp / "model.safetensors"))
    optim = opt.state_dict()
    tensors, plain = {}, {}
    for pid, entry in optim["state"].items():
        t, p = _split(entry)
        tensors.update({f"state.{pid}.{k}": v for k, v in t.items()})
        plain[str(pid)] = p
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    ev_tensors, ev_plain = _split(evaluate.state()) if evaluate is not None else ({}, {})
    tensors.update({f"evaluator.{k}": v for k, v in ev_tensors.items()})
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    state = {"step": step, **position, "optimizer": {"param_groups": optim["param_groups"], "state": plain},
             "scheduler": sched.state_dict(), "scaler": scaler.state_dict() if scaler else None,
             "evaluator": ev_plain}
    (tmp / STATE).write_text(json.dumps(state, default=float))


def load_checkpoint(folder: Path, model, opt, sched, scaler, evaluate) -> dict:
    import torch
    from safetensors.torch import load_file, load_model

    from nlpexp.errors import UserError

    from nlpexp.runs import loading

    if not (folder / STATE).exists():
        raise UserError(f"{folder} is not a checkpoint of this loop (no {STATE}): resume needs one")
    with loading(folder, check=False):  # its saved_files.json was checked when resume chose it: damage is one line
        state = json.loads((folder / STATE).read_text())
        load_model(model, str(folder / "model.safetensors"), device=str(next(model.parameters()).device))
        tensors = load_file(str(folder / "optimizer.safetensors"))
    optim = {"param_groups": state["optimizer"]["param_groups"], "state": {}}
    for pid, plain in state["optimizer"]["state"].items():
        entry = dict(plain)
        entry.update({k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"state.{pid}.")})
        optim["state"][int(pid)] = entry
    opt.load_state_dict(optim)
    sched.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    if evaluate is not None:
        evaluate.load_state({**state["evaluator"], **{k.split(".", 1)[1]: v for k, v in tensors.items()
                                                      if k.startswith("evaluator.")}})
    torch.set_rng_state(tensors["rng.cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    return state


def seeded_order(n: int, seed: int, epoch: int) -> list[int]:
    """A permutation of range(n) that depends only on (seed, epoch): resumable mid-epoch."""
    import torch

    return torch.randperm(n, generator=torch.Generator().manual_seed(int(seed) * 1000 + epoch)).tolist()
