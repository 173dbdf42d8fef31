"""Kill -9 a training run mid-epoch from outside, resume it, and compare with the same run uninterrupted.

    .venv/bin/python bench/kill_resume.py [--kill-at 30] [overrides ...]
    .venv/bin/python bench/kill_resume.py --tiny   # seconds (the test suite runs this): 48 training texts, a
        # checkpoint every 2 steps, killed at checkpoint-2 of 9 steps, the uninterrupted run alongside
Default run: finsent, BERT built small offline (model.pretrained=null), the full embedded sample, 3 epochs,
a checkpoint every 5 steps. The run is killed (SIGKILL to its process) as soon as checkpoint-<kill-at> appears,
i.e. somewhere after that step; the resume continues from the newest complete checkpoint.
Prints the three wall times and whether the final metrics and best weights are identical; ends with
`ratio X.XX`: the killed run's and its resume's wall time together over the uninterrupted run's.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

DEFAULT = ["model=bert", "model.pretrained=null", "device=cpu", "trainer.epochs=3", "trainer.batch_size=16",
           "trainer.lr=5e-4", "trainer.save_steps=5"]
TINY = ["data.max_train_samples=48", "data.max_eval_samples=16", "trainer.save_steps=2"]  # 3 steps an epoch


def merged(*lists: list[str]) -> list[str]:
    """key=value overrides, a later value of a key replacing the earlier one (nlpexp refuses a key given twice)."""
    out: dict[str, str] = {}
    for item in (item for items in lists for item in items):
        out[item.split("=", 1)[0].lstrip("+~")] = item
    return list(out.values())


def nlpexp(*args, cwd):
    return [sys.executable, "-m", "nlpexp", *args]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kill-at", type=int, default=30, help="kill once checkpoint-<N> exists")
    parser.add_argument("--tiny", action="store_true",
                        help="seconds: 48 training texts, checkpoints every 2 steps, killed at checkpoint-2 of 9 "
                             "steps (mid-epoch); the uninterrupted run alongside the killed one (one thread each)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.tiny:
        args.kill_at = 2
    run = merged(DEFAULT, TINY if args.tiny else [], args.overrides)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **({"OMP_NUM_THREADS": "1"} if args.tiny else {})}
    work = Path(tempfile.mkdtemp(prefix="kill_resume_"))
    killed, ref = work / "killed", work / "reference"

    def reference():
        """Start the uninterrupted run (its stderr in a file); returns a function that waits for it and gives
        its wall time (its own end, however late it is asked)."""
        began, ended = time.time(), []
        with open(work / "reference.err", "w") as err:
            proc = subprocess.Popen(nlpexp(*run, f"hydra.run.dir={ref}", cwd=work), cwd=work, env=env,
                                    stdout=subprocess.DEVNULL, stderr=err)
        waiter = threading.Thread(target=lambda: ended.append((proc.wait(), time.time())))
        waiter.start()

        def finish() -> float:
            waiter.join()
            if ended[0][0] != 0:
                sys.exit(f"the uninterrupted run failed (exit {ended[0][0]}): "
                         f"{(work / 'reference.err').read_text().strip()[-2000:]}")
            return ended[0][1] - began

        return finish

    if args.tiny:  # the uninterrupted run starts with the one to kill: both see the same load
        reference_s = reference()
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
    if proc.returncode != -signal.SIGKILL:
        sys.exit(f"the run ended (code {proc.returncode}) before it was killed at checkpoint-{args.kill_at}: "
                 "raise epochs")
    saved = sorted(int(p.name.split("-")[1]) for p in (killed / "checkpoints").glob("checkpoint-*"))
    state = json.loads(target.read_text())
    print(f"killed (SIGKILL, exit {proc.returncode}) after {killed_after:.1f}s; checkpoints on disk: {saved}; "
          f"checkpoint-{args.kill_at} is epoch {state['epoch']:.2f} of {state['num_train_epochs']}")

    started = time.time()
    code = subprocess.run(nlpexp(f"resume={killed}", cwd=work), cwd=work, env=env, check=False,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    resume_s = time.time() - started
    if code.returncode != 0:
        sys.exit(f"the resume failed (exit {code.returncode}): {code.stderr.strip()[-2000:]}")
    if not args.tiny:
        reference_s = reference()
    ref_s = reference_s()

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
    print(f"killed run + resume / uninterrupted run, wall time ({killed_after:.1f}s + {resume_s:.1f}s vs "
          f"{ref_s:.1f}s):")
    print(f"ratio {(killed_after + resume_s) / ref_s:.2f}")


if __name__ == "__main__":
    main()
