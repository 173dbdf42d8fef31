"""Numeric precision of training and evaluation: `trainer.precision=auto|fp32|bf16|fp16`.

auto: bf16 on CUDA GPUs that have it, fp16 with a GradScaler on older ones, fp32 on MPS, and on CPU bf16 where
the CPU computes bf16 natively (AVX-512 BF16 or AMX), else fp32. The CPU choice comes from a measurement on this
project's machines (AVX-512 BF16, `experiment=finsent_minilm` on Financial PhraseBank 50Agree, seed 1, split
seed 42, one core each, side by side): bf16 trained 1.20x the samples/s of fp32 (9.45 vs 7.87) at the same
validation accuracy (0.8338 both) and test accuracy within noise (0.8258 vs 0.8278, 2 of 970 texts). Without
native bf16 the CPU emulates it, slower than fp32: hence the flag check.
The Trainer path turns the choice into TrainingArguments(bf16=, fp16=); our loop (nlpexp/loop.py) into autocast
and, for fp16, a GradScaler; evaluation paths run under `autocast` with the same choice.
"""
import contextlib
from pathlib import Path

from nlpexp.errors import UserError

CHOICES = ("auto", "fp32", "bf16", "fp16")


def cpu_has_native_bf16() -> bool:
    """The CPU flags say bf16 arithmetic runs in hardware (Linux /proc/cpuinfo; elsewhere: assume not)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve(name, device: str, strict: bool = True) -> str:
    """The precision `name` means on `device`. strict=False (scoring a saved run on another device): what cannot
    run here falls back to fp32 instead of failing."""
    import torch

    name = str(name or "auto")
    if name == "auto":
        if device == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if device == "cpu" and cpu_has_native_bf16() else "fp32"
    problem = None
    if name == "fp16" and device != "cuda":
        problem = f"trainer.precision=fp16 needs a CUDA GPU (device is {device}): use bf16 or fp32"
    elif name == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported():
        problem = "trainer.precision=bf16: this GPU has no bf16 support: use fp16 or fp32"
    if problem:
        if strict:
            raise UserError(problem)
        return "fp32"
    return name


def of_saved(settings: dict, device: str) -> str:
    """The precision a saved model's settings record (older saves: fp32), as it can run on `device`."""
    return resolve(settings.get("precision", "fp32"), device, strict=False)


def autocast(precision: str, device: str):
    """A context in which forward passes run in `precision` (fp32: no autocast)."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16 if precision == "bf16"
                          else torch.float16)


def grad_scaler(precision: str):
    """fp16 gradients need loss scaling (bf16 has fp32's range and does not)."""
    import torch

    return torch.amp.GradScaler("cuda") if precision == "fp16" else None


def trainer_flags(precision: str) -> dict:
    """TrainingArguments' spelling of the choice."""
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def of_run(cfg, device: str, strict: bool = True) -> str:
    """The precision a config asks for on `device` (configs without trainer.precision: auto)."""
    trainer = cfg.get("trainer") or {}
    return resolve(trainer.get("precision", "auto"), device, strict)
