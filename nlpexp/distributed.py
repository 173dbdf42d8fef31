"""Data-parallel runs: `trainer.nproc=N` re-launches the same job as N processes with torch.distributed.run.

The process Hydra started owns the run folder (it wrote `.hydra/`); the N workers get the same folder as an
explicit `hydra.run.dir` (so every rank agrees on it) and do not write `.hydra/` again. Rank 0 does the
bookkeeping of a normal run (metrics.json, predictions, plots, checkpoints); other ranks only train.
Backend: gloo on CPU, nccl on CUDA (set in tasks/classify/trainer.py from the device).
"""
import os
import subprocess
import sys
from pathlib import Path

# what a worker adds to the job's overrides: the parent's run folder, no second .hydra/, no second log file, one
# run (a sweep's job, e.g. an Optuna trial, is one run on every rank: hparams_search and experiments set MULTIRUN)
WORKER_OVERRIDES = ("hydra.output_subdir=null", "hydra/job_logging=stdout", "hydra/hydra_logging=none",
                    "hydra.mode=RUN")


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_worker() -> bool:
    """True inside a process started by torchrun / torch.distributed.run."""
    return "LOCAL_RANK" in os.environ and world_size() > 1


def is_main_process() -> bool:
    return rank() == 0


def worker_command(overrides: list[str], run_dir: Path, nproc: int) -> list[str]:
    keep = [o for o in overrides if not o.startswith(("hydra.run.dir=", "hydra.output_subdir="))]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
            f"--nproc_per_node={nproc}", "-m", "nlpexp", *keep, f"hydra.run.dir={Path(run_dir).resolve()}",
            *WORKER_OVERRIDES]


def check_devices(device: str, nproc: int) -> None:
    """On CUDA every process needs its own GPU (NCCL refuses two ranks on one device)."""
    if device not in ("cuda", "auto"):
        return
    import torch

    from nlpexp.errors import UserError

    if torch.cuda.is_available() and nproc > torch.cuda.device_count():
        raise UserError(f"trainer.nproc={nproc} but only {torch.cuda.device_count()} GPU(s) are visible "
                        "(use trainer.nproc<=GPUs, or device=cpu for gloo processes)")


def launch(overrides: list[str], run_dir: Path, nproc: int) -> int:
    """Run the job as nproc processes; returns their exit code (0 when every rank finished)."""
    cmd = worker_command(overrides, run_dir, nproc)
    print(f"data parallel: {nproc} processes ({' '.join(cmd[1:6])} ...)", flush=True)
    # torchrun gives each process one thread when OMP_NUM_THREADS is unset, and prints a banner saying so
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    if "verbose=true" not in overrides:  # the C++ side's advice (e.g. DDP's find_unused_parameters notice)
        env.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    return subprocess.run(cmd, check=False, env=env).returncode
