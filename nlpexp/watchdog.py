"""A sweep's jobs stop with the sweep. joblib's workers are processes of the sweep's own process (the one that
ran `nlpexp -m`); when it is killed they would go on and start the queued jobs. cli.main records its pid in
NLPEXP_SWEEP_PID; a job in a worker refuses to start once that process is gone, and a running one stops
(its folder marked failed) within a second or two of it. A SLURM job is no child of the sweep: sbatch copies
the sweep's environment (NLPEXP_SWEEP_PID too) into the job, but the job outlives a dead sweep, and its restarted
sweep picks it up."""
import os
import threading
from pathlib import Path

ENV = "NLPEXP_SWEEP_PID"
# the job this worker runs now, its watching thread (workers run job after job), the reaper started here
_WATCH: dict = {}


def start_reaper() -> None:
    """In the sweep's process: a small process that outlives it and, once it is gone (however it ended), stops
    every process the sweep left behind (a worker still starting up, loky's resource trackers): the processes
    whose environment carries this sweep's NLPEXP_SWEEP_PID (Linux: read from /proc)."""
    import subprocess
    import sys

    if _WATCH.get("reaper") == os.getpid():  # one per sweep process (in-process sweeps, e.g. tests, run many)
        return
    _WATCH["reaper"] = os.getpid()
    env = {k: v for k, v in os.environ.items() if k != ENV}
    subprocess.Popen([sys.executable, "-m", "nlpexp.watchdog", str(os.getpid())], env=env, stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def reap(pid: int, every_s: float = 1.0, grace_s: float = 3.0) -> None:
    import signal
    import time

    while os.getppid() == pid:
        time.sleep(every_s)
    time.sleep(grace_s)  # a running job's watchdog first marks its folder failed
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for child in left_behind(pid):
            try:
                os.kill(child, sig)
            except OSError:
                pass
        time.sleep(grace_s)


def left_behind(pid: int) -> list[int]:
    """Live processes started under sweep `pid` (its NLPEXP_SWEEP_PID in their environment), leaving out the
    processes of SLURM jobs other than the one the sweep itself runs in (sbatch exported the variable to them)."""
    found, mark = [], f"{ENV}={pid}".encode()
    own_job = f"SLURM_JOB_ID={os.environ.get('SLURM_JOB_ID', '')}".encode()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            other_job = any(v.startswith(b"SLURM_JOB_ID=") and v != own_job for v in environ)
            if mark in environ and not other_job and \
                    (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(int(proc.name))
        except (OSError, IndexError):
            continue
    return found


def sweep_pid() -> int | None:
    value = os.environ.get(ENV, "")
    return int(value) if value.isdigit() else None


def parent_gone() -> bool:
    """This process is a worker of a sweep process that has died (it was re-parented, e.g. to init)."""
    pid = sweep_pid()
    return pid is not None and pid != os.getpid() and os.getppid() != pid



def start_if_sweep_worker(run_dir: Path, launcher_target: str, every_s: float = 1.0) -> None:
    """In a joblib worker of a sweep: refuse to start when the sweep is gone, else watch it from a thread."""
    from nlpexp.errors import UserError

    pid = sweep_pid()
    if pid is None or pid == os.getpid() or "joblib" not in launcher_target:
        return
    if parent_gone():
        raise UserError(f"the sweep process (pid {pid}) is gone: this job does not start")
    _WATCH["run_dir"] = Path(run_dir)
    if "thread" not in _WATCH:
        _WATCH["thread"] = threading.Thread(target=_watch, args=(pid, every_s), daemon=True,
                                            name="nlpexp-sweep-watchdog")
        _WATCH["thread"].start()


def _watch(pid: int, every_s: float) -> None:
    import json
    import sys
    import time

    while not parent_gone():
        time.sleep(every_s)
    run_dir = _WATCH.get("run_dir")
    if run_dir is not None:  # a job was running: its folder says why it stopped
        try:
            (run_dir / "metrics.json").write_text(json.dumps(
                {"status": "failed", "error": f"stopped: the sweep process (pid {pid}) is gone"}))
        finally:
            print(f"nlpexp: job {run_dir} stopped: the sweep process (pid {pid}) is gone", file=sys.stderr)
    os._exit(1)


def job_done() -> None:
    _WATCH.pop("run_dir", None)


if __name__ == "__main__":  # the reaper: python -m nlpexp.watchdog <sweep pid>
    import sys

    reap(int(sys.argv[1]))
