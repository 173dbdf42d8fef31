"""hydra-submitit-launcher's SLURM launcher, fitted to the partition before anything is submitted
(conf/hydra/launcher/submitit_slurm.yaml names it as `_target_`):

- GPUs are asked only for a run that uses them: `gpus_per_node: null` is trainer.nproc with device=cuda, none
  otherwise (a GPU request on a partition without GPUs is refused by sbatch with a traceback per job);
- `cpus_per_task: null` is the partition's CPUs per node, up to 8; a request no node of the partition can hold
  (CPUs, memory, GPUs) is refused in one line before the sweep starts (SLURM would leave it PENDING forever,
  reason PartitionConfig), read from `sinfo`.
"""
import subprocess
import sys

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as _PluginLauncher
except ImportError:  # the `launchers` extra is not installed: cli.PLUGINS says so before any run
    _PluginLauncher = None

DEFAULT_CPUS = 8


def partition_node(partition: str | None) -> dict:
    """{"name", "cpus", "mem_mb", "gpus", "nodes"}: the partition's largest node and its node count (`partition`
    None: the default one), from sinfo. Raises ValueError with the reason."""
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P|%c|%m|%G|%D"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ValueError(f"sinfo did not run ({err})") from None
    if out.returncode:
        raise ValueError(f"sinfo failed: {(out.stderr.strip().splitlines() or ['no message'])[-1]}")
    rows = [line.split("|") for line in out.stdout.split() if line.count("|") == 4]
    nodes = [r for r in rows if (r[0].rstrip("*") == partition if partition else r[0].endswith("*"))]
    if not nodes:
        have = ", ".join(sorted({r[0].rstrip("*") for r in rows})) or "none"
        missing = f"no partition {partition}" if partition else "no default partition"
        raise ValueError(f"{missing} (sinfo lists: {have})")

    def gpus(gres: str) -> int:  # "gpu:4", "gpu:a100:8(S:0-1)", "(null)"
        total = 0
        for item in gres.split(","):
            parts = item.split("(")[0].split(":")
            if parts[0] == "gpu":
                total += int(parts[-1]) if parts[-1].isdigit() else 1
        return total

    def number(text: str) -> int:  # "2", "64+", "24105"
        return int("".join(c for c in text if c.isdigit()) or 0)

    name = nodes[0][0].rstrip("*")
    return {"name": name, "cpus": max(number(r[1]) for r in nodes), "mem_mb": max(number(r[2]) for r in nodes),
            "gpus": max(gpus(r[3]) for r in nodes), "nodes": sum(number(r[4]) for r in nodes)}


def fit(params: dict, config, node: dict) -> str | None:
    """Fill the null CPU and GPU requests in `params` (the launcher's) for `node`; why it cannot run there, or
    None."""
    device = str(config.get("device", {}).get("name", "cpu"))
    nproc = int(config.get("trainer", {}).get("nproc", 1) or 1)
    if params.get("gpus_per_node") is None:
        params["gpus_per_node"] = nproc if device == "cuda" else None
    if params.get("cpus_per_task") is None:
        params["cpus_per_task"] = min(DEFAULT_CPUS, node["cpus"]) // max(1, params.get("tasks_per_node") or 1) or 1
    where = f"partition {node['name']}'s nodes have"
    gpus, cpus = params["gpus_per_node"] or 0, params["cpus_per_task"] * (params.get("tasks_per_node") or 1)
    if gpus > node["gpus"]:
        return (f"hydra.launcher.gpus_per_node={gpus} (device={device}, trainer.nproc={nproc}): {where} "
                f"{node['gpus'] or 'no'} GPUs; choose a GPU partition (hydra.launcher.partition=...) or device=cpu")
    if cpus > node["cpus"]:
        return (f"hydra.launcher.cpus_per_task={params['cpus_per_task']} x tasks_per_node="
                f"{params.get('tasks_per_node') or 1}: {where} {node['cpus']} CPUs")
    if (params.get("nodes") or 1) > node["nodes"]:
        return (f"hydra.launcher.nodes={params['nodes']} (trainer.nnodes): partition {node['name']} has "
                f"{node['nodes']} node{'s' * (node['nodes'] != 1)}")
    if params.get("mem_gb") and params["mem_gb"] * 1024 > node["mem_mb"]:
        return f"hydra.launcher.mem_gb={params['mem_gb']}: {where} {node['mem_mb'] // 1024} GB"
    return None


if _PluginLauncher is not None:
    class SlurmLauncher(_PluginLauncher):
        def setup(self, *, hydra_context, task_function, config) -> None:
            super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
            try:  # in the sweep's process, before any trial is asked or job submitted
                node = partition_node(self.params.get("partition"))
                problem = fit(self.params, config, node)
            except ValueError as err:
                problem = f"hydra/launcher=submitit_slurm: {err}"
            if problem:
                print(f"nlpexp: error: {problem}", file=sys.stderr)
                sys.exit(2)
