"""`make smoke`: every task's smoke config, all its supported models, as one joblib sweep per task, then one
report over all of them. Tasks and models come from the registry, so a new task is covered when registered.

    python -m nlpexp.smoke [--n-jobs 2] [--out outputs/smoke/<date>_<time>] [--tasks finsent,...] [KEY=VALUE ...]
KEY=VALUE overrides go to every cell (e.g. trainer.precision=bf16 trainer.grad_accum=2): a cell that does not
read one refuses it in one line and counts as refused, not failed. Exit code 1 when any cell failed (the report
lists it).
"""
import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from nlpexp.config import registry


def sweep_command(task: str, models, out: Path, n_jobs: int, extra=()) -> list[str]:
    return [sys.executable, "-m", "nlpexp", "-m", "+smoke=true", f"task={task}", f"model={','.join(models)}",
            *extra, "hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}", f"hydra.sweep.dir={out / task}",
            "hydra.sweep.subdir=${hydra.job.num}_${model.name}"]


def refused(error) -> bool:
    """A cell's one-line refusal of a key it does not read (not a failure)."""
    return isinstance(error, str) and " is not read by " in error


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nlpexp.smoke", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-jobs", type=int, default=2, help="jobs at a time (joblib launcher)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--tasks", default=None, help="comma-separated subset of the registry's tasks")
    parser.add_argument("extra", nargs="*", help="KEY=VALUE overrides for every cell")
    args = parser.parse_args(argv)
    out = args.out or Path("outputs/smoke") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    tasks = args.tasks.split(",") if args.tasks else list(registry.TASKS)
    started = time.time()
    cells = {}
    for task in tasks:
        cells[task] = [m for m in registry.TASKS[task].models
                       if not registry.MODELS[m].needs_key or os.environ.get(registry.MODELS[m].needs_key)]
        for model in sorted(set(registry.TASKS[task].models) - set(cells[task])):
            print(f"smoke: skipping {task} x {model} (needs {registry.MODELS[model].needs_key} and a network)")
    for task, models in cells.items():
        print(f"smoke: {task} x {', '.join(models)} ({args.n_jobs} jobs at a time)", flush=True)
        proc = subprocess.run(sweep_command(task, models, out, args.n_jobs, args.extra), check=False,
                              stderr=subprocess.PIPE, text=True)
        sys.stderr.write(proc.stderr)
        if proc.returncode != 0:
            print(f"smoke: the {task} sweep exited with code {proc.returncode}", file=sys.stderr)
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
        if proc.returncode == 2 and refused(last) and not (out / task).exists():
            # every job refused the extra keys before the sweep started: one record per cell, as a job would write
            for num, model in enumerate(models):
                cell = out / task / f"{num}_{model}"
                cell.mkdir(parents=True)
                (cell / "metrics.json").write_text(json.dumps({"status": "failed", "task": task, "model": model,
                                                               "error": last.removeprefix("nlpexp: error: ")}))
    from nlpexp.report.tables import write_report

    result = write_report(out)
    print(result["markdown"].replace("![report](report.png)", ""))
    table = result["table"]
    expected = sum(len(models) for models in cells.values())
    no = table["error"].map(refused) if "error" in table else table["status"].map(lambda _: False)
    bad = table[(table["status"] != "complete") & ~no]
    print(f"smoke: {int((table['status'] == 'complete').sum())}/{expected} cells complete, {int(no.sum())} refused "
          f"{' '.join(args.extra)} in one line, in {time.time() - started:.0f}s; report: {out / 'report.md'}")
    sys.exit(1 if len(bad) or len(table) < expected else 0)


if __name__ == "__main__":
    main()
