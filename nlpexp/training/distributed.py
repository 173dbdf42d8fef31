"""Data-parallel runs: `trainer.nproc=N` re-launches the same job as N processes with torch.distributed.run.

The process Hydra started owns the run folder (it wrote `.hydra/`); the N workers get the same folder as an
explicit `hydra.run.dir` (so every rank agrees on it) and do not write `.hydra/` again. Rank 0 does the
bookkeeping of a normal run (metrics.json, predictions, plots, checkpoints); other ranks only train.
Backend: gloo on CPU, nccl on CUDA (set in tasks/classify/trainer.py from the device).

Several machines (`trainer.nnodes=N`): every node runs the same command with the same `hydra.run.dir` on a
filesystem all of them see; each starts its torchrun with a c10d rendezvous on node 0 (from SLURM's job, else
trainer.node_rank / master_addr / master_port). Node 0's launching process owns the folder as above; on the
other nodes it is treated like a torchrun worker of rank > 0 (no lock, no `.hydra/`, no log file, no writes).
"""
import os
import re
import shutil
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


def in_torchrun() -> bool:
    """True inside a process started by torchrun / torch.distributed.run."""
    return "LOCAL_RANK" in os.environ and world_size() > 1


def node_rank() -> int:
    """This node's number in a multi-node run, as its launching process knows it before Hydra composes the config
    (the run folder's lock is taken before): trainer.node_rank=R from the command line (it differs between nodes,
    so no config file holds it), else SLURM's node id in a job step of several nodes; 0 elsewhere."""
    given = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("trainer.node_rank=")]
    if given:
        return int(given[-1]) if given[-1].isdigit() else 0  # null or a bad value: the config check says so
    if slurm_nodes() > 1:
        return int(os.environ.get("SLURM_NODEID", "0"))
    return 0


def slurm_nodes(env=os.environ) -> int:
    """The node count of the SLURM job step this process runs in (0 outside SLURM)."""
    return int(env.get("SLURM_NNODES") or env.get("SLURM_JOB_NUM_NODES") or 0)


def other_node() -> bool:
    """The launching process of a multi-node run's node > 0: it starts its torchrun and owns nothing."""
    return not in_torchrun() and node_rank() > 0


def is_worker() -> bool:
    """True where the run folder belongs to another process: a torchrun worker, or another node's launcher."""
    return in_torchrun() or other_node()


def is_main_process() -> bool:
    return rank() == 0 and not other_node()


def worker_command(overrides: list[str], run_dir: Path, nproc: int, rendezvous: list[str] | None = None) -> list[str]:
    keep = [o for o in overrides if not o.startswith(("hydra.run.dir=", "hydra.output_subdir="))]
    return [sys.executable, "-m", "torch.distributed.run", *(rendezvous or ["--standalone", "--nnodes=1"]),
            f"--nproc_per_node={nproc}", "-m", "nlpexp", *keep, f"hydra.run.dir={Path(run_dir).resolve()}",
            *WORKER_OVERRIDES]


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: `node[01-04],gpu7` -> node01 (`scontrol show hostnames` when the
    cluster's tools are here, else the list's simple forms: host, prefix[a-b,c]suffix, comma-separated)."""
    if shutil.which("scontrol"):
        try:  # a controller that does not answer: the list is parsed here instead
            out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                                 check=False, timeout=30).stdout.split()
        except subprocess.TimeoutExpired:
            out = []
        if out:
            return out[0]
    first = re.split(r",(?![^\[]*\])", nodelist.strip())[0]  # commas inside [...] separate numbers, not hosts
    return re.sub(r"\[([^],-]+)[^]]*\]", r"\1", first)  # each bracket's first number, its zeros kept


def rendezvous(nnodes: int, node: int | None, addr: str | None, port: int, env=os.environ) -> list[str]:
    """torchrun's arguments for this node of an nnodes-node run: a c10d rendezvous on node 0's host.
    trainer.node_rank given (with trainer.master_addr): those, SLURM or not (two "nodes" inside one SLURM job
    too). Else, inside a SLURM job step, the node count, the host (the step's first node) and the id (the job's)
    come from SLURM (this node's rank, SLURM_NODEID, is read in node_rank())."""
    from nlpexp.errors import UserError

    slurm = slurm_nodes(env) if node is None else 0
    if slurm:
        if slurm != nnodes:  # a node count that disagrees waits at the rendezvous until it times out
            raise UserError(f"trainer.nnodes={nnodes} but this SLURM job step has {slurm} nodes (run one task per "
                            "node: srun --ntasks-per-node=1, or sbatch --nodes=N with trainer.nnodes=N)")
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
        addr = addr or (first_host(nodelist) if nodelist else None)
    if not slurm and node is None or not addr:
        raise UserError(f"trainer.nnodes={nnodes} needs trainer.node_rank=<0..{nnodes - 1}> (this machine's number) "
                        "and trainer.master_addr=<node 0's host> on every node (a SLURM job step gives both)")
    # no --node_rank: c10d numbers the nodes itself (torchrun ignores it, with a warning), so global rank 0 may
    # be on any node; which node's launcher owns the run folder is node_rank()'s business
    return [f"--nnodes={nnodes}", "--rdzv_backend=c10d", f"--rdzv_endpoint={addr}:{port}",
            f"--rdzv_id={env.get('SLURM_JOB_ID') or 'nlpexp'}"]


def check_devices(device: str, nproc: int) -> None:
    """On CUDA every process needs its own GPU (NCCL refuses two ranks on one device)."""
    if device not in ("cuda", "auto"):
        return
    import torch

    from nlpexp.errors import UserError

    if torch.cuda.is_available() and nproc > torch.cuda.device_count():
        raise UserError(f"trainer.nproc={nproc} but only {torch.cuda.device_count()} GPU(s) are visible "
                        "(use trainer.nproc<=GPUs, or device=cpu for gloo processes)")


def launch(overrides: list[str], run_dir: Path, nproc: int, rendezvous: list[str] | None = None) -> int:
    """Run the job as nproc processes (on this node); returns their exit code (0 when every rank finished)."""
    cmd = worker_command(overrides, run_dir, nproc, rendezvous)
    print(f"data parallel: {nproc} processes ({' '.join(cmd[1:cmd.index('-m', 3)])} ...)", flush=True)
    # torchrun gives each process one thread when OMP_NUM_THREADS is unset, and prints a banner saying so
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    if "verbose=true" not in overrides:  # the C++ side's advice (e.g. DDP's find_unused_parameters notice)
        env.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    proc = subprocess.Popen(cmd, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM (run.Interrupted): torchrun passes it on to its workers
        import signal

        proc.send_signal(getattr(stop, "signum", signal.SIGINT))
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
