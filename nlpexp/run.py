"""One run's bookkeeping around a task recipe: seed, device, dispatch, metrics.json last, loggers, the summary.

cli.py turns argv into overrides; `start` composes and checks one run's config and hands it to Hydra's job
runner, `check_sweep` checks a sweep's first jobs before Hydra's main launches it; `run_job` is what Hydra calls for
each run (that one, or every job of a sweep). The recipe only computes and writes its own outputs; this module
records the run. Its folder's life (claim, state, resume point, clean-up): nlpexp/runs.py.
"""
import json
import os
import shutil
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from nlpexp import provenance, secrets, watchdog
from nlpexp.errors import UserError, disk_full, permission_message

def _run_dir(task: str, model: str, mode: str, ckpt) -> str:
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    if mode in ("eval", "predict", "generate") and ckpt:
        base = str(Path(str(ckpt)).expanduser() / mode / stamp)
    else:
        base = f"outputs/{task}/{model}/{stamp}"
    path, n = base, 1
    while True:  # made here, atomically: two runs started in the same second never share a folder
        try:
            Path(path).mkdir(parents=True)
            return path
        except FileExistsError:
            path, n = f"{base}_{n}", n + 1


if not OmegaConf.has_resolver("nlpexp_run_dir"):
    OmegaConf.register_new_resolver("nlpexp_run_dir", _run_dir, use_cache=True)


def fail(message: str) -> None:
    print(f"nlpexp: error: {message}", file=sys.stderr)
    sys.exit(2)


def _needs_hub(cfg: DictConfig) -> bool:
    from nlpexp.inputs.hub import is_hub_id

    hub_model = is_hub_id(cfg.model.get("pretrained"))  # a smoke run's hub id is null by now (apply_smoke)
    hub_data = cfg.get("data") is not None and cfg.data.source == "hub" and not cfg.data.get("path")
    return hub_model or hub_data


def start(args: list[str], notes: list[str]) -> None:
    """One run (no -m): its config composed once and checked before Hydra makes a run folder (bad input: one line,
    exit 2, nothing written), its folder claimed, the `notes` said, then Hydra's job over that same config (the
    smoke file applied once: .hydra/config.yaml is the config that runs). A config that sets hydra.mode=MULTIRUN
    (an experiment's sweep) goes on to Hydra's main, as `-m` does."""
    from hydra.types import RunMode

    from nlpexp.config.registry import config_dir_args
    from nlpexp.config.validate import checked_config, hydra_context, without_hydra

    args, config_dir = config_dir_args(args)
    with hydra_context():
        try:
            cfg, _ = checked_config([a for a in args if not a.startswith("-")], config_dir, with_hydra=True)
            _before_run(args, without_hydra(cfg))
        except UserError as err:
            fail(str(err))
        except PermissionError as err:  # a file the check reads (data, a saved run) the user may not read
            fail(permission_message(err))
        for note in notes:
            print(note, file=sys.stderr)
        if cfg.hydra.mode != RunMode.MULTIRUN:
            return _hydra_run(cfg)
    hydra_main()


def _before_run(args: list[str], cfg: DictConfig) -> None:
    """The saved runs and the run folder a checked config names: each is one line when it cannot be used; a
    `dry_run` stops here; a hydra.run.dir= given is claimed (held to the end of the run: Hydra writes .hydra/ into
    a folder we own)."""
    from nlpexp import runs
    from nlpexp.training import distributed

    for saved in runs.ckpt_folders(cfg):  # (ckpt= of the command line was checked before anything of it was read)
        runs.check_run_folder(saved.resolve())
    if cfg.device.name in ("cuda", "mps"):
        from nlpexp.runtime import resolve_device

        resolve_device(cfg.device.name)
    folder = None if distributed.is_worker() else runs.explicit_run_dir(args)  # torchrun: the launcher holds it
    in_run = Path(str(cfg.ckpt).strip("'\"")) if cfg.mode in ("eval", "predict", "generate") and cfg.get("ckpt") \
        and not OmegaConf.is_list(cfg.ckpt) else None
    if folder is not None:
        runs.folder_errors(folder, resuming=bool(cfg.get("resume")), inside=in_run)
    else:
        problem = runs.writable_error(Path(str(cfg.ckpt)) if in_run else Path("outputs"))
        if problem:
            raise UserError(problem)
    if cfg.get("dry_run"):
        print(f"nlpexp: config OK: task={cfg.task.name} model={cfg.model.name} mode={cfg.mode}, every key checked; "
              "nothing built, no run folder (drop dry_run=true to run it)")
        sys.exit(0)
    if folder is not None:
        runs.claim(folder)


def _hydra_run(cfg: DictConfig):
    """What Hydra's main does for one run, over the config composed here (hydra.main would compose it twice
    again): its logging, callbacks, the job in its folder (.hydra/ saved), a failure reported as Hydra reports it."""
    from hydra._internal.callbacks import Callbacks
    from hydra._internal.utils import run_and_report
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import configure_log
    from hydra.core.utils import run_job as hydra_job
    from hydra.types import HydraContext, RunMode

    with open_dict(cfg.hydra):
        cfg.hydra.mode = RunMode.RUN
    configure_log(cfg.hydra.hydra_logging, cfg.hydra.verbose)
    callbacks = Callbacks(cfg)
    callbacks.on_run_start(config=cfg, config_name="config")
    ret = hydra_job(hydra_context=HydraContext(config_loader=GlobalHydra.instance().config_loader(),
                                               callbacks=callbacks),
                    task_function=lambda job_cfg: run_job(job_cfg, checked=True), config=cfg,
                    job_dir_key="hydra.run.dir", job_subdir_key=None)
    callbacks.on_run_end(config=cfg, config_name="config", job_return=ret)
    return run_and_report(lambda: ret.return_value)


def hydra_main():
    """Hydra's main over run_job: sweeps (each job composed by Hydra and checked when it runs), Hydra's own
    flags (--cfg, --info, ...)."""
    import hydra

    return hydra.main(version_base="1.3", config_path="conf", config_name="config")(run_job)()


def share_out_sweep() -> None:
    """A sweep's jobs stop when its process is gone, and share out the GPUs it sees."""
    from nlpexp import watchdog
    from nlpexp.runtime import visible_gpus

    os.environ[watchdog.ENV] = str(os.getpid())  # this sweep's workers stop when it is gone
    os.environ.setdefault("NLPEXP_SWEEP_GPUS", ",".join(visible_gpus()))  # the GPUs its jobs share out
    watchdog.start_reaper()


SWEEP_CHECKS = 64  # a sweep's first jobs checked before it starts (each job is checked again when it runs)


def check_sweep(args: list[str], notes: list[str]) -> None:
    """`-m`: the jobs of the sweep (its first SWEEP_CHECKS combinations of `key=a,b` lists) composed and checked
    before the launcher starts any: a bad key or value is one line, exit 2, not a sweep of failed jobs. Ranges
    (`interval(...)`) and an hparams_search's own space are left to the sweeper: each job is checked when it runs."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from nlpexp.runs import earlier_jobs, place_errors
    from nlpexp.config.registry import config_dir_args
    from nlpexp.config.validate import CompositionError, checked_config, composition_error, search_overlap

    args, config_dir = config_dir_args(args)
    given = [a for a in args if not a.startswith("-") and not a.lstrip("+~").startswith("hydra")]
    try:
        parsed = OverridesParser.create().parse_overrides(given)
    except Exception as err:  # noqa: BLE001 -- Hydra's grammar error: one line
        raise UserError(composition_error(err)) from None
    choices = []
    for item, override in zip(given, parsed):
        prefix = item[:len(item) - len(item.lstrip("+~"))]
        key = f"{prefix}{override.get_key_element()}"
        if not override.is_sweep_override():
            choices.append([item])
        elif override.is_discrete_sweep():
            choices.append([f"{key}={v}" for v in override.sweep_string_iterator()])
            if not choices[-1]:
                raise UserError(f"{item} sweeps no values: nothing would run (e.g. range(0,3) is 0,1,2)")
    for item in args:
        if item.startswith("hydra.sweep.dir="):
            place_errors(Path(item.split("=", 1)[1].strip("'\"")), "hydra.sweep.dir")
    searchpath = [a for a in args if a.startswith("hydra.searchpath=")]
    jobs = list(itertools.islice(itertools.product(*choices), SWEEP_CHECKS))
    refused, cfg = [], None
    for combination in jobs:
        try:
            cfg, _ = checked_config([*combination, *searchpath], config_dir)
        except UserError as err:
            swept = [c for c, options in zip(combination, choices) if len(options) > 1]
            message = f"{err}" + (f" (sweep job {' '.join(swept)})" if swept else "")
            if isinstance(err, CompositionError):  # Hydra composes every job before it launches one
                raise UserError(message) from None
            refused.append(message)
    if len(refused) == len(jobs):  # nothing of it would run
        raise UserError(refused[0])
    earlier_jobs(args, jobs, notes)
    search_overlap(given, parsed, [*jobs[0], *searchpath, *(a for a in args if a.lstrip("+~").startswith("hydra"))],
                   config_dir)
    if refused:  # e.g. a model sweep where one model does not read a key: that job is recorded as refused
        notes.append(f"nlpexp: warning: {len(refused)} of {len(jobs)} sweep jobs will be refused, e.g. {refused[0]}")
    if cfg.get("dry_run"):  # nothing launched: a sweeper (optuna) would wait for objectives that never come
        for note in notes:
            print(note, file=sys.stderr)
        print(f"nlpexp: config OK: {len(jobs)} sweep job{'s' * (len(jobs) > 1)} checked; nothing launched (drop "
              "dry_run=true to run it)")
        sys.exit(0)


def run_job(cfg: DictConfig, checked: bool = False):
    """Bookkeeping around one run: the task runner only computes and writes its own outputs. `checked`: composed
    and checked by `start` (sweep jobs and Hydra's flags' runs: composed by Hydra, so each checks itself here)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from nlpexp import runs
    from nlpexp.training import distributed

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    if not distributed.is_worker():  # sweep jobs (single runs: checked before Hydra made anything, checked again)
        problem = next(filter(None, (runs.run_folder_error(f) for f in [run_dir, *runs.ckpt_folders(cfg)])),
                       None)
        if multirun and run_dir.is_symlink():  # a job folder is the sweep's own, never a link out of it
            problem = f"{run_dir} is a symbolic link: a run folder holds no links; remove it"
        if problem:  # a link in the folder: nothing of this job is written (the folder is not ours to mark)
            if multirun:
                print(f"nlpexp: error: {problem}: this job is not run", file=sys.stderr)
                return None
            fail(problem)
    if multirun and not distributed.is_worker():  # a sweep run again into its folder: what this job's folder holds
        earlier, found = runs.earlier_job(run_dir, _overrides())
        if earlier == "complete":  # reused as it is: nothing written, its objective returned to the sweeper
            print(f"nlpexp: {run_dir}: complete with the same overrides, reused (metrics.json untouched)")
            return found.get("metrics", {}).get(found.get("objective", ""))
        if earlier == "other":
            print(f"nlpexp: error: {found}: this job is not run (a sweep runs again only into its own folder, with "
                  "the same command)", file=sys.stderr)
            return None
        if earlier == "resume":
            print(f"nlpexp: {run_dir}: this job stopped before it finished: resuming it in its folder")
            with open_dict(cfg):
                cfg.resume = str(run_dir)
    if multirun and distributed.other_node():  # node > 0 of a sweep job (submitit nodes=N): node 0's choice above,
        # made from the same shared folder: a finished job is not run again, a requeued one resumes (node 0 always
        # waits for every node at the rendezvous, so this folder is as node 0 found it)
        if runs.folder_state(run_dir)[0] == "complete":
            return None
        if runs.latest_checkpoint(run_dir):
            with open_dict(cfg):
                cfg.resume = str(run_dir)
    # what bad input found during the run takes away: the folder Hydra just made, else the status it wrote
    cleanup = "folder" if _is_fresh(run_dir) else None if (run_dir / "metrics.json").exists() else "status"
    main_rank = distributed.is_main_process()  # only rank 0 of a data-parallel run writes the run folder
    started = time.time()
    if main_rank:
        secrets.redact_hydra_files(run_dir)
    if not distributed.is_worker():  # torchrun workers: the launching process holds the folder
        try:
            runs.claim(run_dir)
        except UserError as err:  # another live run's folder: report, touch nothing of it
            if multirun:
                print(f"nlpexp: error: {err}", file=sys.stderr)
                return None
            fail(str(err))
    previous = _on_sigterm_interrupt()
    try:
        return _run(cfg, hc, run_dir, multirun, cleanup, main_rank, started, checked)
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (a scheduler's, kill): recorded, one line, exit 130/143
        _interrupted(stop, run_dir, cfg, main_rank, hc.sweep.dir if multirun else None)
    finally:
        _restore_sigterm(previous)
        watchdog.job_done()
        runs.release(run_dir)


class Interrupted(KeyboardInterrupt):
    """SIGTERM raised in the main thread as Ctrl-C's KeyboardInterrupt is: the run stops the same way."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


def _on_sigterm_interrupt():
    """SIGTERM -> Interrupted in the main thread while a run runs (only where SIGTERM had its default action, in
    the main thread: a launcher's own handler is kept); returns what to restore."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None
    return signal.signal(signal.SIGTERM, _raise_interrupted)


def _restore_sigterm(previous) -> None:
    import signal

    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def _interrupted(stop: KeyboardInterrupt, run_dir: Path, cfg: DictConfig, main_rank: bool, sweep_dir=None):
    """A run stopped by SIGINT/SIGTERM: metrics.json says interrupted (a run already complete stays so), one line
    says where and how to continue, exit 128 + the signal (130, 143); a sweep stops there too (run again into
    its folder, it reuses its finished jobs and resumes this one)."""
    import signal

    from nlpexp import runs
    from nlpexp.training import distributed

    signum = getattr(stop, "signum", signal.SIGINT)
    name = signal.Signals(signum).name
    path = run_dir / "metrics.json"
    done = (runs.read_metrics(run_dir) or {}).get("status") == "complete"
    latest = runs.latest_checkpoint(run_dir) if run_dir.is_dir() else None
    where = f"after {latest.name}" if latest else "before its first checkpoint"
    if main_rank and not done and run_dir.is_dir():
        _try_write_json(path, {"status": "interrupted", "signal": name, "overrides": _overrides(),
                               "last_checkpoint": str(latest) if latest else None,
                               "stopped": datetime.now().isoformat(timespec="seconds")})
    if main_rank and not distributed.is_worker():  # a torchrun rank: its launcher says it
        if done:
            line = f"nlpexp: interrupted ({name}) after the run completed: {run_dir}"
        elif sweep_dir is not None:  # the sweep stops; run again into its folder, it reuses and resumes its jobs
            line = (f"nlpexp: interrupted ({name}) {where} in sweep job {run_dir}: the same command with "
                    f"hydra.sweep.dir={sweep_dir} continues the sweep")
        elif cfg.get("mode", "train") == "train":
            line = f"nlpexp: interrupted ({name}) {where}: resume={run_dir} continues it"
        else:
            line = f"nlpexp: interrupted ({name}): {run_dir} is unfinished"
        print(line, file=sys.stderr, flush=True)
    sys.exit(128 + int(signum))


def _run(cfg: DictConfig, hc, run_dir: Path, multirun: bool, cleanup, main_rank: bool, started: float,
         checked: bool = False):
    from nlpexp.report import console
    from nlpexp.inputs import hub
    from nlpexp.config import registry
    from nlpexp import runs, runtime
    from nlpexp.training import distributed
    from nlpexp.config.validate import as_consumed, check_config

    if distributed.is_worker() and not main_rank:  # data parallel: one console, rank 0's (errors still show)
        sys.stdout = open(os.devnull, "w", encoding="utf-8")
    try:
        if not checked:  # composed by Hydra (a sweep's job): its smoke file and the check here, once
            if cfg.get("smoke"):
                cfg = runtime.apply_smoke(cfg, list(hc.overrides.task))
                if (run_dir / ".hydra").is_dir() and main_rank:  # the saved config is the one that ran
                    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
                    secrets.redact_hydra_files(run_dir)
            check_config(cfg, list(hc.overrides.task))
        if cfg.get("dry_run"):  # a sweep's job (single runs stop in the pre-run check): checked, nothing built
            print(f"nlpexp: config OK: {' '.join(hc.overrides.task)}; nothing built")
            if cleanup == "folder" and main_rank:
                shutil.rmtree(run_dir, ignore_errors=True)
            return None
        if main_rank and not distributed.is_worker() and cfg.mode == "train":  # other modes print their answer
            console.print_config(cfg)
        nproc = int(cfg.get("trainer", {}).get("nproc", 1) or 1)
        nnodes = int(cfg.get("trainer", {}).get("nnodes", 1) or 1)
        gpus = runtime.share_gpus(hc, cfg.device.name, nproc) if multirun else None  # before torch sees CUDA
        if gpus is not None:
            print(f"nlpexp: this job's GPUs: CUDA_VISIBLE_DEVICES={gpus}")
        if distributed.other_node() and nnodes == 1:  # it would train alone and write nothing
            raise UserError(f"this is node {distributed.node_rank()} of a SLURM job step of several nodes, but "
                            "trainer.nnodes=1: give trainer.nnodes=<the step's nodes>, or run on one node (srun -N1)")
        if (nproc > 1 or nnodes > 1) and not distributed.in_torchrun():
            distributed.check_devices(cfg.device.name, nproc)
            rendezvous = _rendezvous(cfg.trainer, hc, multirun) if nnodes > 1 else None
            overrides = list(hc.overrides.task)
            if cfg.get("resume") and not any(o.startswith("resume=") for o in overrides):  # a sweep job resumed
                overrides.append(f"resume={run_dir}")
            return _launch_data_parallel(cfg, overrides, run_dir, nproc, multirun, rendezvous)
        code = provenance.code_state() if main_rank else None  # the code that runs, read at its start
        if main_rank and cfg.mode == "train":  # visibly unfinished until metrics.json says complete
            _write_json(run_dir / "metrics.json", {"status": "running", "pid": os.getpid(), "overrides": _overrides(),
                                                   "started": datetime.now().isoformat(timespec="seconds"),
                                                   "git_commit": provenance.commit_label(code)})
        watchdog.start_if_sweep_worker(run_dir, str(hc.launcher.get("_target_", "")) if multirun else "")
        if _needs_hub(cfg):
            hub.settle_hub_mode()
        for loaded in hub.LOADED.values():  # what this job loads from the hub (a sweep worker runs several jobs)
            loaded.clear()
        provenance.clear()  # and the data it reads
        console.quiet(bool(cfg.get("verbose")))
        device = runtime.resolve_device(cfg.device.name)
        runtime.limit_threads(hc)
        runtime.seed_everything(cfg.seed)
        if cfg.get("resume"):
            cfg = runs.resume_point(cfg, run_dir)
        result = registry.runner(cfg.task.name).run(as_consumed(cfg), run_dir, device)
    except UserError as err:
        return _refused(str(err), run_dir, multirun, main_rank, cleanup)
    except PermissionError as err:  # a data file or saved model the user may not read: bad input, one line
        return _refused(permission_message(err), run_dir, multirun, main_rank, cleanup)
    except Exception as err:
        if disk_full(err):  # no traceback: the folder is marked failed (what was written stays, visibly failed)
            return _refused(disk_full_message(err, run_dir), run_dir, multirun, main_rank, None)
        if main_rank:
            _try_write_json(run_dir / "metrics.json", _failed(repr(err)))
        if multirun:  # a crash in one job is recorded; the rest of the sweep still runs
            traceback.print_exc()
            print(f"nlpexp: job {run_dir} failed: {err!r}", file=sys.stderr)
            return None
        raise
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM: run_job records it as interrupted
        raise
    except BaseException as err:  # SystemExit: recorded, then stop
        if main_rank:
            _try_write_json(run_dir / "metrics.json", _failed(repr(err)))
        raise

    if result is None or not main_rank:  # predict mode prints its own answer; ranks > 0 write nothing
        return None
    items = result.pop("items", None)
    summary = {
        "status": "complete",
        "task": cfg.task.name,
        "model": cfg.model.name,
        "mode": cfg.mode,
        "metrics": result["metrics"],
        **{k: v for k, v in result.items() if k not in ("metrics", "dataset")},
        "wall_time_s": round(time.time() - started, 3),
        "device": device,
        "seed": cfg.seed,
        "tags": list(cfg.get("tags") or []),
        "overrides": _overrides(),
        # the data read, the code, the environment, the hub models: nlpexp/provenance.py
        "provenance": provenance.collect(run_dir, code, result.get("dataset"), hub.LOADED["models"]),
        "run_dir": str(run_dir),
    }
    if items:  # the test items' statistics: the metrics' intervals now, paired comparisons later
        summary.update(uncertainty(items, run_dir, cfg))
    if cfg.get("resume"):
        summary["resumed_from"] = cfg.get("resume_from")
    if distributed.world_size() > 1:
        summary["processes"] = distributed.world_size()
    if int(os.environ.get("GROUP_WORLD_SIZE", "1")) > 1:  # torchrun's node count
        summary["nodes"] = int(os.environ["GROUP_WORLD_SIZE"])
    if os.environ.get("NLPEXP_JOB_GPUS"):  # a sweep job given its own GPUs (runtime.share_gpus)
        summary["cuda_visible_devices"] = os.environ["NLPEXP_JOB_GPUS"]
    from nlpexp.report.baselines import gaps

    published = gaps(summary)  # the data is a public dataset: its published scores, and the run's gap to them
    if published:
        summary["baselines"] = published
    summary = secrets.redact(summary)
    _write_json(run_dir / "metrics.json", summary)
    from nlpexp.report import loggers

    try:
        loggers.log_run(cfg, run_dir, summary)
    except Exception as err:  # noqa: BLE001 -- the run is complete and recorded: a logger failure does not undo it
        print(f"nlpexp: warning: logger={loggers.name(cfg)} failed: {err!r}", file=sys.stderr)
    print_summary(summary)
    objective = result["metrics"].get(result.get("objective", ""))
    return objective


def uncertainty(items: dict, run_dir: Path, cfg: DictConfig) -> dict:
    """test_items.json in the run folder (what `nlpexp-report --compare` pairs) and the metrics.json keys: the items'
    hash and each test metric's percentile bootstrap interval over eval.bootstrap resamples (seeded by the run)."""
    from nlpexp.report import stats

    stats.save(run_dir, items["sha256"], items["blocks"])
    resamples = int((cfg.get("eval") or {}).get("bootstrap", 0) or 0)
    found = {"test_items_sha256": items["sha256"]}
    if resamples:
        found["intervals"] = {**stats.intervals(items["blocks"], resamples, int(cfg.seed)), "resamples": resamples,
                              "level": stats.LEVEL}
    return found


def _refused(message: str, run_dir: Path, multirun: bool, main_rank: bool, cleanup: str | None):
    """Bad input found during the run: one line. A single run takes away what it made (cleanup: "folder" the
    folder Hydra just made, "status" the metrics.json it wrote into a folder the user gave); a sweep job, a resumed
    run or a full disk (cleanup None) leave the folder marked failed."""
    from nlpexp import runs
    from nlpexp.training import distributed

    if distributed.other_node():  # another node's launcher: one line, node 0's folder left alone
        fail(message)
    if not main_rank:
        raise UserError(message)
    if multirun or cleanup is None:
        _try_write_json(run_dir / "metrics.json", _failed(message))
    if multirun:
        print(f"nlpexp: error: {message}", file=sys.stderr)
        return None
    if cleanup == "status":
        (run_dir / "metrics.json").unlink(missing_ok=True)
    elif cleanup == "folder":
        runs.release(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)
        _remove_empty_parents(run_dir)
    fail(message)


def _remove_empty_parents(run_dir: Path) -> None:
    """The folders made only to hold the removed run (outputs/<task>/<model>/, <ckpt>/eval/): gone too, if empty."""
    outputs = (Path.cwd() / "outputs").resolve()
    for parent in Path(run_dir).resolve().parents:
        inside = parent == outputs or outputs in parent.parents or parent.name in ("eval", "predict", "generate")
        if not inside or any(parent.iterdir()):
            return
        parent.rmdir()


def disk_full_message(err: BaseException, run_dir: Path) -> str:
    """`no space left on device while writing <file>`: the file the error names, else the newest in the folder
    (the one being written when the disk filled)."""
    name = getattr(err, "filename", None)
    if not name:
        files = [p for p in run_dir.rglob("*") if p.is_file()] if run_dir.is_dir() else []
        name = max(files, key=lambda p: p.stat().st_mtime, default=run_dir)
    return f"no space left on device while writing {name}"


def _try_write_json(path: Path, obj) -> None:
    """_write_json when the disk may be full: a status that cannot be written is reported, not raised."""
    try:
        _write_json(path, obj)
    except OSError as err:
        print(f"nlpexp: warning: could not write {path}: {err.strerror or err}", file=sys.stderr)


def _is_fresh(run_dir: Path) -> bool:
    """True when the folder holds nothing but what Hydra just made (safe to remove on bad input)."""
    from nlpexp.runs import LOCK

    if not run_dir.is_dir():
        return True
    return all(p.name in (".hydra", LOCK) or p.suffix == ".log" for p in run_dir.iterdir())


def _rendezvous(trainer: DictConfig, hc, multirun: bool) -> list[str]:
    """torchrun's multi-node arguments for this node; every node must write into one folder, so it is named."""
    from nlpexp.training import distributed

    node = trainer.get("node_rank")
    if node is not None and node != distributed.node_rank():  # the folder's owner was decided from the command line
        raise UserError("trainer.node_rank differs between the nodes: give it on the command line, not in a file")
    if not multirun and not any(o.startswith("hydra.run.dir=") for o in hc.overrides.hydra):
        raise UserError(f"trainer.nnodes={trainer.nnodes}: every node writes into one run folder: give the same "
                        "hydra.run.dir=<folder> on every node, on a filesystem they all see (under SLURM e.g. "
                        "outputs/<name>-$SLURM_JOB_ID)")
    return distributed.rendezvous(trainer.nnodes, node, trainer.get("master_addr"), trainer.get("master_port", 29500))


def _launch_data_parallel(cfg: DictConfig, overrides: list[str], run_dir: Path, nproc: int, multirun: bool,
                          rendezvous: list[str] | None = None):
    """This process only starts the workers; rank 0 of them writes metrics.json as any run does."""
    from nlpexp import runs
    from nlpexp.training import distributed

    code = distributed.launch(overrides, run_dir, nproc, rendezvous)
    if distributed.other_node():  # node 0's launcher records how the run ended
        if code != 0 and not multirun:
            sys.exit(code)
        return None
    path = run_dir / "metrics.json"
    summary = runs.read_metrics(run_dir) or {}
    if code != 0 or summary.get("status") != "complete":
        if summary.get("status") != "failed" and run_dir.exists():
            _write_json(path, _failed(f"data-parallel workers exited with code {code}"))
        if multirun:
            return None
        sys.exit(code or 1)
    return summary["metrics"].get(summary.get("objective", ""))


def _overrides() -> list[str]:
    """This job's task overrides: recorded in every metrics.json, so that a sweep run again into its folder knows
    its own jobs (Hydra rewrites .hydra/ before a job starts)."""
    from hydra.core.hydra_config import HydraConfig

    return [o for o in HydraConfig.get().overrides.task if not o.lstrip("+~").startswith("resume=")]


def _failed(error: str) -> dict:
    return {"status": "failed", "error": error, "overrides": _overrides()}


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(secrets.redact(obj), indent=2, default=str))
    tmp.replace(path)


def print_summary(summary: dict) -> None:
    """The end table: one row per metric, one column per split; a value with its bootstrap interval reads
    `0.8278 [0.804, 0.851]`."""
    metrics, ci = summary["metrics"], summary.get("intervals") or {}
    splits = list(dict.fromkeys(k.split("_", 1)[0] for k in metrics if "_" in k))
    names = list(dict.fromkeys(k.split("_", 1)[1] for k in metrics if "_" in k))

    def cell(key: str) -> str:
        v = metrics.get(key)
        if not isinstance(v, (int, float)):
            return ""
        lo_hi = ci.get(f"{key}_ci")
        if not lo_hi:
            return f"{v:.4f}"
        size = max(abs(lo_hi[0]), abs(lo_hi[1]))
        digits = 2 if size >= 10 else 3 if size >= 0.05 else 4  # BLEU near 0 keeps the value's four decimals
        return f"{v:.4f} [{lo_hi[0]:.{digits}f}, {lo_hi[1]:.{digits}f}]"

    cells = {name: [cell(f"{s}_{name}") for s in splits] for name in names}
    widths = [max([len(s), *(len(row[i]) for row in cells.values())]) + 2 for i, s in enumerate(splits)]
    lines = [f"\n{summary['task']} / {summary['model']} ({summary['mode']}) on {summary['device']}, "
             f"{summary['wall_time_s']:.1f}s"]
    lines.append(f"{'metric':<22}" + "".join(f"{s:>{w}}" for s, w in zip(splits, widths)))
    for name, row in cells.items():
        lines.append(f"{name:<22}" + "".join(f"{c:>{w}}" for c, w in zip(row, widths)))
    if ci:
        lines.append(f"[lo, hi]: {ci['level']:.0%} bootstrap interval over the test items ({ci['resamples']} "
                     "resamples, eval.bootstrap)")
    if summary.get("verdict"):  # the model against the task's baselines
        lines.append(summary["verdict"])
    lines += [f"published: {row['line']}" for row in summary.get("baselines", [])]
    lines.append(f"run folder: {summary['run_dir']}")
    print("\n".join(lines))
