"""Numeric precision of training and evaluation: `trainer.precision=auto|fp32|bf16|fp16`.

auto: bf16 on CUDA GPUs that have it, fp16 with a GradScaler on older ones, fp32 on MPS, and on CPU bf16 only
where the CPU computes bf16 natively (AVX-512 BF16 or AMX, and oneDNN not capped below it by ONEDNN_MAX_CPU_ISA),
else fp32. Both halves of that rule were measured on this project's machines, fp32 and bf16 side by side:
- Intel Xeon with AVX-512 BF16, `experiment=finsent_minilm` on Financial PhraseBank 50Agree, seed 1, split seed
  42, one core each: bf16 trained 1.20x the samples/s of fp32 (9.45 vs 7.87) at the same validation accuracy
  (0.8338 both) and test accuracy within noise (0.8258 vs 0.8278, 2 of 970 texts).
- AMD EPYC without AVX-512: emulated bf16 trained MiniLM-sized bert2bert at 8 tokens/s against fp32's 168.
An explicit `bf16` on a CPU without it still runs (emulated, and said once: it is slow), except the one op oneDNN
cannot build there, the LSTM, which runs in fp32 (`lstm`, also said once).
The Trainer path turns the choice into TrainingArguments(bf16=, fp16=); our loop (nlpexp/training/loop.py) into autocast
and, for fp16, a GradScaler; evaluation paths run under `autocast` with the same choice.
"""
import contextlib
import functools
import os
import sys
from pathlib import Path

from nlpexp.errors import UserError

CHOICES = ("auto", "fp32", "bf16", "fp16")
# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) below the first one with bf16 instructions: a cap there means emulated bf16
_BELOW_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}
_SAID: set = set()


@functools.cache
def _cpuinfo() -> str:
    """/proc/cpuinfo, read once (run_lstm asks on every forward pass); empty where there is none."""
    try:
        return Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return ""


def cpu_has_native_bf16() -> bool:
    """The CPU computes bf16 in hardware (Linux /proc/cpuinfo flags; elsewhere: assume not) and oneDNN may use it."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in _BELOW_BF16:
        return False
    return "avx512_bf16" in _cpuinfo() or "amx_bf16" in _cpuinfo()


def cpu_name() -> str | None:
    """The CPU's model name (Linux), for metrics.json: precision and speed figures depend on it."""
    line = next((li for li in _cpuinfo().splitlines() if li.startswith("model name")), None)
    return line.split(":", 1)[1].strip() if line else None


def say_once(key: str, message: str) -> None:
    if key not in _SAID:
        _SAID.add(key)
        print(f"nlpexp: {message}", file=sys.stderr, flush=True)


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
    if name == "bf16" and device == "cpu" and not cpu_has_native_bf16():
        say_once("emulated", "trainer.precision=bf16: this CPU has no native bf16 (AVX-512 BF16 or AMX), so PyTorch "
                 "emulates it, up to ~20x slower than fp32 (trainer.precision=auto runs fp32 here)")
    return name


def run_lstm(lstm, inputs, state=None):
    """`lstm(inputs, state)`, in fp32 where bf16 autocast is on and the CPU lacks native bf16: oneDNN cannot build
    a bf16 LSTM there ('could not create a primitive descriptor for the LSTM forward propagation primitive')."""
    import torch

    if inputs.device.type != "cpu" or not torch.is_autocast_enabled("cpu") or \
            torch.get_autocast_dtype("cpu") != torch.bfloat16 or cpu_has_native_bf16():
        return lstm(inputs, state)
    say_once("lstm", "trainer.precision=bf16: the LSTM runs in fp32 (this CPU has no native bf16, and oneDNN builds "
             "no bf16 LSTM without it); the rest of the model in bf16")
    with torch.autocast("cpu", enabled=False):
        return lstm(inputs.float(), None if state is None else tuple(s.float() for s in state))


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
