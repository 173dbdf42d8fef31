"""Kill -9 a training run mid-epoch from outside, resume it, and compare with the same run uninterrupted.

    .venv/bin/python bench/kill_resume.py [--kill-at 30] [overrides ...]
Default run: finsent, BERT built small offline (model.pretrained=null), the full embedded sample, 3 epochs,
a checkpoint every 5 steps. The run is killed (SIGKILL to its process) as soon as checkpoint-<kill-at> appears,
i.e. somewhere after that step; the resume continues from the newest complete checkpoint.
Prints the three wall times and whether the final metrics and best weights are identical.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT = ["model=bert", "model.pretrained=null", "device=cpu", "trainer.epochs=3", "trainer.batch_size=16",
           "trainer.lr=5e-4", "trainer.save_steps=5"]


def nlpexp(*args, cwd):
    return [sys.executable, "-m", "nlpexp", *args]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kill-at", type=int, default=30, help="kill once checkpoint-<N> exists")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    run = DEFAULT + args.overrides
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    work = Path(tempfile.mkdtemp(prefix="kill_resume_"))
    killed, ref = work / "killed", work / "reference"

    started = time.time()
    proc = subprocess.Popen(nlpexp(*run, f"hydra.run.dir={killed}", cwd=work), cwd=work, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = killed / "checkpoints" / f"checkpoint-{args.kill_at}" / "trainer_state.json"
    while not target.exists():
        if proc.poll() is not None:
            sys.exit(f"the run ended (code {proc.returncode}) before checkpoint-{args.kill_at}: raise epochs")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_after = time.time() - started
    saved = sorted(int(p.name.split("-")[1]) for p in (killed / "checkpoints").glob("checkpoint-*"))
    state = json.loads(target.read_text())
    print(f"killed (SIGKILL, exit {proc.returncode}) after {killed_after:.1f}s; checkpoints on disk: {saved}; "
          f"checkpoint-{args.kill_at} is epoch {state['epoch']:.2f} of {state['num_train_epochs']}")

    started = time.time()
    code = subprocess.run(nlpexp(f"resume={killed}", cwd=work), cwd=work, env=env, check=False,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    resume_s = time.time() - started
    started = time.time()
    subprocess.run(nlpexp(*run, f"hydra.run.dir={ref}", cwd=work), cwd=work, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ref_s = time.time() - started

    a = json.loads((killed / "metrics.json").read_text())
    b = json.loads((ref / "metrics.json").read_text())
    from safetensors.torch import load_file
    import torch

    wa = load_file(killed / "checkpoints" / "best" / "model.safetensors")
    wb = load_file(ref / "checkpoints" / "best" / "model.safetensors")
    same_weights = wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    print(f"resume exit {code.returncode} in {resume_s:.1f}s from {a.get('resumed_from')}; "
          f"uninterrupted run {ref_s:.1f}s")
    print(f"{'metric':<26}{'resumed':>12}{'uninterrupted':>15}")
    for key in b["metrics"]:
        print(f"{key:<26}{a['metrics'].get(key, float('nan')):>12.6f}{b['metrics'][key]:>15.6f}")
    print(f"metrics identical: {a['metrics'] == b['metrics']}; best weights bit-identical: {same_weights}")
    print(f"folders: {work}")


if __name__ == "__main__":
    main()
