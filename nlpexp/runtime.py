"""The process a run works in: seeding, device choice, threads and GPUs shared by side-by-side jobs, the smoke
overlay. A run folder's life: runs.py; what every metrics.json records of the code, data and environment:
provenance.py."""
import os
import random
from pathlib import Path

from nlpexp.errors import UserError


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> str:
    import torch

    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA GPU is visible to torch (use device=auto or device=cpu)")
    if name == "mps" and not has_mps:
        raise UserError("device=mps but the Apple MPS backend is not available (use device=auto or device=cpu)")
    return name


def apply_smoke(cfg, overrides: list[str]):
    """cfg with its wing's smoke file (nlpexp/tasks/<wing>/conf/smoke.yaml) applied: only keys the config has, never
    keys the user set on the command line, and a null (model.pretrained: build small) replaces only a hub id where the
    key may be null: packaged weights and local folders load offline and stay. The file's `per_model.<model>` keys
    follow for that model's runs alone, by the same rules except that a null replaces any weights."""
    from omegaconf import OmegaConf, open_dict

    from nlpexp.inputs.hub import is_hub_id
    from nlpexp.config.registry import TASKS, shipped_roots

    # `model=bert`, `task=story` pick a file, they set no value (task/, experiment/: the wings' conf folders)
    groups = {p.name for root in shipped_roots() for p in root.iterdir() if p.is_dir()}
    user_keys = {item.lstrip("+~").split("=", 1)[0] for item in overrides} - groups
    task = TASKS.get(str(cfg.task.name))  # an unknown task: no overlay, the config check names it
    path = Path(__file__).parent / "tasks" / task.wing / "conf" / "smoke.yaml" if task else None
    overlay = (OmegaConf.to_container(OmegaConf.load(path)) or {}) if path and path.is_file() else {}
    per_model = overlay.pop("per_model", None) or {}
    cfg = cfg.copy()

    def replaces(dotted: str, current) -> bool:
        """A null in place of `current`: a hub id (needs the network), where the schema lets the key be null."""
        parent, _, leaf = dotted.rpartition(".")
        node = (OmegaConf.select(cfg, parent) if parent else cfg)._get_node(leaf)
        return isinstance(current, str) and is_hub_id(current) and node._is_optional()

    def walk(node: dict, prefix: str, any_weights: bool):
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            current = OmegaConf.select(cfg, dotted, default="<absent>")
            if dotted in user_keys or isinstance(current, str) and current == "<absent>":
                continue
            if isinstance(value, dict):  # leaf by leaf: a model's `small` may hold only some of the keys
                walk(value, dotted + ".", any_weights)
            elif value is not None or (any_weights and current is not None) or replaces(dotted, current):
                OmegaConf.update(cfg, dotted, value, merge=True)

    walk(overlay, "", False)
    walk(per_model.get(str(cfg.model.name)) or {}, "", True)
    with open_dict(cfg):
        cfg.smoke = True
    return cfg


def limit_threads(hydra_cfg) -> None:
    """Jobs running side by side (joblib launcher) share the cores instead of each taking all of them."""
    launcher = hydra_cfg.launcher
    if "joblib" not in str(launcher.get("_target_", "")):
        return
    import torch

    cores = os.cpu_count() or 1
    n_jobs = int(launcher.get("n_jobs") or 1)
    n_jobs = cores if n_jobs < 1 else n_jobs
    torch.set_num_threads(max(1, cores // n_jobs))


# GPUs for jobs run side by side on one machine (hydra/launcher=joblib, submitit_local): every job would take
# GPU 0 (hydra#1331, #2757). Each job process claims a numbered slot (a lock file in the sweep folder, held for
# the process's life: a joblib worker keeps its GPUs from job to job) and takes trainer.nproc GPUs round-robin
# from the ones visible to the sweep, before torch looks at CUDA.
SIDE_BY_SIDE = ("joblib", "LocalLauncher")
_GPU_SLOT: dict = {}  # sweep folder -> (slot, open lock file) of this process


def visible_gpus() -> list[str]:
    """The GPUs the sweep may use: CUDA_VISIBLE_DEVICES as the sweep was started with (NLPEXP_SWEEP_GPUS, set by
    the sweep's command, keeps it: submitit_local gives every job the same GPUs, and a job narrows its own), else
    every GPU the NVIDIA driver lists (read without starting CUDA)."""
    given = os.environ.get("NLPEXP_SWEEP_GPUS", os.environ.get("CUDA_VISIBLE_DEVICES"))
    if given is not None:
        return [g.strip() for g in given.split(",") if g.strip() and g.strip() != "-1"]
    driver = Path("/proc/driver/nvidia/gpus")
    return [str(i) for i in range(len(list(driver.iterdir())))] if driver.is_dir() else []


def gpu_slot(sweep_dir: Path) -> int:
    """This process's slot among the jobs running side by side in a sweep: the lowest number whose lock it can
    take (a slot of a job that ended, or of a dead process, is free again)."""
    import fcntl

    key = str(Path(sweep_dir).resolve())
    if key not in _GPU_SLOT:
        folder = Path(sweep_dir) / ".gpu_slots"
        folder.mkdir(parents=True, exist_ok=True)
        slot = 0
        while True:
            handle = open(folder / f"{slot}.lock", "a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                handle.close()
                slot += 1
        _GPU_SLOT[key] = (slot, handle)
    return _GPU_SLOT[key][0]


def share_gpus(hydra_cfg, device: str, nproc: int) -> str | None:
    """A job of a sweep whose jobs run side by side, with two or more GPUs visible: CUDA_VISIBLE_DEVICES set to
    its own `nproc` of them (returned); otherwise None and nothing changed."""
    if device not in ("cuda", "auto") or not any(k in str(hydra_cfg.launcher.get("_target_", ""))
                                                 for k in SIDE_BY_SIDE):
        return None
    gpus = visible_gpus()
    if len(gpus) < 2:
        return None
    os.environ.setdefault("NLPEXP_SWEEP_GPUS", ",".join(gpus))
    slot = gpu_slot(Path(hydra_cfg.sweep.dir))
    mine = ",".join(gpus[(slot * nproc + k) % len(gpus)] for k in range(nproc))
    os.environ["CUDA_VISIBLE_DEVICES"] = os.environ["NLPEXP_JOB_GPUS"] = mine  # torchrun workers inherit both
    return mine
