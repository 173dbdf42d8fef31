"""trainer.nnodes: two "nodes" on localhost (two nlpexp commands, one torchrun each, a c10d rendezvous on 127.0.0.1)
train as trainer.nproc=2 does on one machine, kill -9 of both + resume= ends the same; SLURM's environment becomes
torchrun's arguments."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nlpexp.training import distributed
from nlpexp.errors import UserError

# 2 epochs of 4 steps (64 smoke texts, 8 a process, 2 processes), a checkpoint every 2 steps
RUN = ["+smoke=true", "model=bert", "device=cpu", "trainer.epochs=2", "trainer.max_steps=-1", "trainer.lr=1e-3",
       "trainer.batch_size=8", "trainer.save_steps=2"]

# in the torchrun workers only (PYTHONPATH): after checkpoint-6 is on disk on every rank, say so and wait for the kill
STOP_AFTER_CHECKPOINT_6 = """
import importlib.abc, importlib.util, os, sys, time
from pathlib import Path

def patch(module):  # nlpexp's Trainer subclass: its _save_checkpoint renames checkpoint-N into place
    make = module.resumable_trainer
    def resumable_trainer(seed):
        trainer_class = make(seed)
        save = trainer_class._save_checkpoint
        def save_then_wait(self, *args, **kwargs):
            save(self, *args, **kwargs)
            if self.state.global_step == 6:
                import torch.distributed as dist
                dist.barrier()
                Path(os.environ["MN_MARKS"], os.environ["RANK"]).write_text(str(os.getpid()))
                time.sleep(600)
        trainer_class._save_checkpoint = save_then_wait
        return trainer_class
    module.resumable_trainer = resumable_trainer

class Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "nlpexp.tasks.classify.trainer":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            patch(module)
        spec.loader.exec_module = exec_module
        return spec

if "LOCAL_RANK" in os.environ:
    sys.meta_path.insert(0, Hook())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nodes(cwd: Path, args: list[str], env: dict | None = None) -> list[subprocess.Popen]:
    """The same command on two "nodes": node_rank 0 and 1, one rendezvous endpoint, one run folder."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    nodes = []
    for node in (0, 1):
        with open(cwd / f"node{node}.log", "w") as log:  # a file, not a pipe nobody reads until the end
            nodes.append(subprocess.Popen([sys.executable, "-m", "nlpexp", *args, "trainer.nnodes=2",
                                           "trainer.nproc=1", f"trainer.node_rank={node}",
                                           "trainer.master_addr=127.0.0.1", f"trainer.master_port={port}"],
                                          cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
    return nodes


def logs(cwd: Path) -> str:
    return "\n".join((cwd / f"node{n}.log").read_text()[-3000:] for n in (0, 1))


def same_run(run: Path, reference: Path) -> None:
    """The same metrics and, bit for bit, the same best weights (a smoke model's metrics alone say little)."""
    assert json.loads((run / "metrics.json").read_text())["metrics"] == \
        json.loads((reference / "metrics.json").read_text())["metrics"]
    weights, expected = (load_file(r / "checkpoints" / "best" / "model.safetensors") for r in (run, reference))
    assert weights.keys() == expected.keys() and all(torch.equal(weights[k], expected[k]) for k in weights)


def finish(cwd: Path, nodes: list[subprocess.Popen]) -> None:
    codes = [node.wait(timeout=300) for node in nodes]
    assert codes == [0, 0], logs(cwd)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Started side by side (most of each is imports; 2 cores): the reference, trainer.nproc=2 on one machine; two
    nodes run through; two nodes that stop after checkpoint-6, to be killed."""
    ref, whole, killed = (tmp_path_factory.mktemp(name) for name in ("one_machine", "two_nodes", "killed"))
    with open(ref / "ref.log", "w") as log:
        reference = subprocess.Popen([sys.executable, "-m", "nlpexp", *RUN, "trainer.nproc=2", "hydra.run.dir=run"],
                                     cwd=ref, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
    (killed / "hook").mkdir()
    (killed / "hook" / "sitecustomize.py").write_text(STOP_AFTER_CHECKPOINT_6)
    (killed / "marks").mkdir()
    started = {"whole": (whole, start_nodes(whole, [*RUN, f"hydra.run.dir={whole / 'run'}"])),
               "killed": (killed, start_nodes(killed, [*RUN, f"hydra.run.dir={killed / 'run'}"],
                                              {"PYTHONPATH": str(killed / "hook"), "MN_MARKS": str(killed / "marks")}))}
    done: dict = {}

    def reference_run() -> Path:
        if not done:
            assert reference.wait(timeout=300) == 0, (ref / "ref.log").read_text()[-3000:]
            done["run"] = ref / "run"
        return done["run"]
    yield {**started, "reference": reference_run}
    for proc in [reference, *started["whole"][1], *started["killed"][1]]:  # a failed test leaves none behind
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    for mark in (killed / "marks").iterdir():
        try:
            os.kill(int(mark.read_text()), signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow
def test_two_nodes_train_as_two_processes_on_one_machine(runs):
    cwd, nodes = runs["whole"]
    finish(cwd, nodes)
    summary = json.loads((cwd / "run" / "metrics.json").read_text())
    assert summary["status"] == "complete" and summary["processes"] == 2 and summary["nodes"] == 2
    same_run(cwd / "run", runs["reference"]())
    assert [p.parent for p in cwd.rglob(".hydra")] == [cwd / "run"]  # one folder, one .hydra/, one metrics.json
    assert list(cwd.rglob("metrics.json")) == [cwd / "run" / "metrics.json"]


@pytest.mark.slow
def test_kill_9_of_both_nodes_then_resume_ends_the_same(runs):
    cwd, nodes = runs["killed"]
    run, marks = cwd / "run", cwd / "marks"
    deadline = time.time() + 300
    while len(list(marks.iterdir())) < 2:  # both ranks hold checkpoint-6
        assert time.time() < deadline and all(n.poll() is None for n in nodes), logs(cwd)
        time.sleep(0.5)
    for node in nodes:  # a node lost: its launcher and torchrun (one session), and its worker (torchrun's own)
        os.killpg(node.pid, signal.SIGKILL)
    for mark in marks.iterdir():
        os.kill(int(mark.read_text()), signal.SIGKILL)
    for node in nodes:
        node.wait(timeout=60)
    assert json.loads((run / "metrics.json").read_text())["status"] == "running"  # visibly unfinished
    assert (run / "checkpoints" / "checkpoint-6").is_dir()

    # every node runs the same command again, with resume=
    finish(cwd, start_nodes(cwd, [*RUN, f"hydra.run.dir={run}", f"resume={run}"]))
    resumed = json.loads((run / "metrics.json").read_text())
    assert resumed["status"] == "complete" and resumed["resumed_from"].endswith("checkpoint-6")
    same_run(run, runs["reference"]())
    assert [p.parent for p in cwd.rglob(".hydra")] == [run]


@pytest.mark.slow
def test_node_0_without_a_run_folder_is_refused_in_one_line(nlpexp):
    res = nlpexp("+smoke=true", "model=bert", "device=cpu", "trainer.nnodes=2", "trainer.node_rank=0",
                 "trainer.master_addr=127.0.0.1")
    assert res.code == 2 and "give the same hydra.run.dir=<folder> on every node" in res.err
    assert not (res.cwd / "outputs").exists()  # the folder Hydra made is taken away
    res = nlpexp("+smoke=true", "model=bert", "device=cpu", "trainer.nnodes=2", "trainer.node_rank=1",
                 "trainer.master_addr=127.0.0.1")
    assert res.code == 2 and "give the same hydra.run.dir=<folder> on every node" in res.err, res.err
    assert not (res.cwd / "outputs").exists()


@pytest.mark.slow
def test_another_node_of_a_slurm_step_without_nnodes_is_refused(nlpexp, monkeypatch):
    """srun on 2 nodes with trainer.nnodes left at 1: node 1 would train alone and write nothing."""
    monkeypatch.setenv("SLURM_NNODES", "2")
    monkeypatch.setenv("SLURM_NODEID", "1")
    res = nlpexp("+smoke=true", "model=bert", "device=cpu", "hydra.run.dir=run")
    assert res.code == 2 and "trainer.nnodes=1: give trainer.nnodes=<the step's nodes>" in res.err
    assert not (res.cwd / "run" / ".hydra").exists()


def test_slurm_environment_becomes_torchrun_arguments(monkeypatch):
    monkeypatch.setattr(distributed.shutil, "which", lambda name: None)  # no scontrol: the list is parsed here
    env = {"SLURM_JOB_ID": "4242", "SLURM_NNODES": "4", "SLURM_NODEID": "2",
           "SLURM_JOB_NODELIST": "gpu[07-10],cpu1"}
    assert distributed.rendezvous(4, None, None, 29500, env) == [
        "--nnodes=4", "--rdzv_backend=c10d", "--rdzv_endpoint=gpu07:29500", "--rdzv_id=4242"]
    # the step's node list (srun) before the job's; an address given on the command line wins
    step = {**env, "SLURM_STEP_NODELIST": "gpu[09-10,12]"}
    assert "--rdzv_endpoint=gpu09:29500" in distributed.rendezvous(4, None, None, 29500, step)
    assert "--rdzv_endpoint=10.0.0.1:6000" in distributed.rendezvous(4, None, "10.0.0.1", 6000, step)
    with pytest.raises(UserError, match="this SLURM job step has 4 nodes"):
        distributed.rendezvous(2, None, None, 29500, env)
    with pytest.raises(UserError, match="needs trainer.node_rank=<0..1> .* and trainer.master_addr"):
        distributed.rendezvous(2, None, None, 29500, {})
    assert distributed.rendezvous(2, 1, "h", 1234, {})[-2:] == ["--rdzv_endpoint=h:1234", "--rdzv_id=nlpexp"]
    # trainer.node_rank given: the command line's settings, even inside a SLURM job (of another node count)
    assert distributed.rendezvous(2, 0, "127.0.0.1", 1234, env)[0] == "--nnodes=2"
    with pytest.raises(UserError, match="trainer.master_addr=<node 0's host>"):
        distributed.rendezvous(2, 0, None, 1234, env)

    for nodelist, first in [("node[01-04],gpu7", "node01"), ("n7", "n7"), ("a1,a2", "a1"), ("gpu-[3,5-6]", "gpu-3"),
                            ("rack[2-3]-n[08-09]", "rack2-n08"), ("x[001-002]y,z", "x001y")]:
        assert distributed.first_host(nodelist) == first


def test_the_node_number_is_known_before_hydra(monkeypatch):
    """The launching process of node > 0 owns nothing (no lock, no .hydra/): decided from argv or SLURM."""
    for var in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "SLURM_NNODES", "SLURM_JOB_NUM_NODES", "SLURM_NODEID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(sys, "argv", ["nlpexp", "trainer.nnodes=2", "trainer.node_rank=1"])
    assert distributed.other_node() and distributed.is_worker() and not distributed.is_main_process()
    monkeypatch.setattr(sys, "argv", ["nlpexp", "trainer.nnodes=2"])
    assert not distributed.other_node() and distributed.is_main_process()
    monkeypatch.setenv("SLURM_NNODES", "2")
    monkeypatch.setenv("SLURM_NODEID", "1")
    assert distributed.node_rank() == 1 and distributed.other_node()
    monkeypatch.setenv("SLURM_NNODES", "1")  # a one-node job (a submitit sweep's): no other node
    assert not distributed.other_node()
    monkeypatch.setenv("LOCAL_RANK", "0")  # a torchrun worker: its global rank decides
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(sys, "argv", ["nlpexp", "trainer.node_rank=1"])
    assert distributed.is_main_process() and not distributed.other_node()
