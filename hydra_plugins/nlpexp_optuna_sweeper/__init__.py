"""hydra-optuna-sweeper's sweeper with the two things a persistent, shared study needs (hparams_search configs
name it as `hydra.sweeper._target_`):

- the study is created once, before any trial is launched, and a race with another sweeper process creating it
  at the same moment never fails (the loser loads what the winner made);
- a sweep continued in its own folder numbers its jobs after the ones already there (hydra#3328: a resumed
  study's jobs started again at 0 and wrote into the earlier trials' folders);
- every trial draws from its own seed, (sampler seed, trial number): with one `seed` for the whole sampler, K
  sweeper processes on one study (and every re-run) proposed the same trials, since TPE's start-up trials come
  from a RandomSampler(seed) that never looks at the study. Trial numbers are unique within a study, so trials
  differ and a study run again the same way still proposes the same trials;
- a trial whose sweeper died is finished by that sweeper run again (same command, same folder): each trial
  records its owner (host, pid, sweep folder, job number, overrides) in its user attrs; a RUNNING trial of this
  folder whose owner is gone is waited for while its job still runs (a SLURM job outlives its sweeper), then
  told its job's result, resumed in its own folder if the job did not finish. Otherwise it stayed RUNNING in the
  study for ever and its folder said running.

Everything else (sampling, asking and telling trials, optimization_results.yaml) is the plugin's.
"""
import json
import os
import socket
import time
from pathlib import Path

# optuna<3 uses SQLAlchemy 1.4 APIs that 2.0 removed: the `sweep` extra pins sqlalchemy<2 for exactly that
os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")

try:
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper as _PluginSweeper
except ImportError:  # the `sweep` extra is not installed: hparams_search says so before any run (cli.PLUGINS)
    _PluginSweeper = None


def create_study_once(study_name, storage, directions, attempts: int = 20):
    """optuna.create_study(load_if_exists=True), retried while another process is creating the same study or
    the storage's tables (a new SQLite file: 'table already exists', 'database is locked')."""
    import optuna

    for attempt in range(attempts):
        try:
            return optuna.create_study(study_name=study_name, storage=storage, directions=directions,
                                       load_if_exists=True)
        except Exception:  # noqa: BLE001 -- IntegrityError, OperationalError, DuplicatedStudyError: retry
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 + 0.1 * attempt)


def next_job_number(sweep_dir) -> int:
    """One past the highest numbered job folder in `sweep_dir` (0 in a new sweep)."""
    folder = Path(str(sweep_dir))
    numbers = [int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()] if folder.is_dir() else []
    return max(numbers, default=-1) + 1


class TrialSeeded:
    """Wraps a seeded sampler (TPE, Random): before it samples for a trial it reseeds its random state (and TPE's
    inner RandomSampler's) from (seed, trial.number). optuna<3 has no before_trial hook: the first call that names
    a new trial does it (the plugin asks and fills trials one after another)."""

    def __init__(self, sampler, seed: int):
        self._sampler, self._seed, self._trial = sampler, seed, None

    def _for(self, trial) -> None:
        import numpy as np

        if trial.number == self._trial:
            return
        self._trial = trial.number
        state = np.random.SeedSequence([self._seed, trial.number]).generate_state(1)[0]
        for sampler in (self._sampler, getattr(self._sampler, "_random_sampler", None)):
            if sampler is not None and hasattr(sampler, "_rng"):
                sampler._rng = np.random.RandomState(state)

    def infer_relative_search_space(self, study, trial):
        self._for(trial)
        return self._sampler.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        self._for(trial)
        return self._sampler.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        self._for(trial)
        return self._sampler.sample_independent(study, trial, param_name, param_distribution)

    def __getattr__(self, name):  # after_trial, reseed_rng ...: the wrapped sampler's
        return getattr(self._sampler, name)


def seed_per_trial(sampler, seed):
    """`sampler` drawing per trial (TrialSeeded); as it is without a seed, or when it is no seeded sampler
    instance (the grid sampler arrives as a partial)."""
    return TrialSeeded(sampler, int(seed)) if seed is not None and hasattr(sampler, "_rng") else sampler


OWNER = "nlpexp_owner"  # the user attr naming a trial's sweeper and job


def record_owners(impl) -> None:
    """Wrap the plugin's _configure_trials (it turns asked trials into job overrides, just before the launch) so
    every trial records who runs it."""
    configure = impl._configure_trials

    def configure_and_record(trials, *args):
        overrides = configure(trials, *args)
        sweep_dir = str(Path(str(impl.sweep_dir)).resolve())
        for i, (trial, job) in enumerate(zip(trials, overrides)):
            trial.set_user_attr(OWNER, {"host": socket.gethostname(), "pid": os.getpid(), "sweep_dir": sweep_dir,
                                        "job": impl.job_idx + i, "overrides": list(job)})
        return overrides

    impl._configure_trials = configure_and_record


def owner_alive(owner: dict) -> bool:
    """The sweeper process that asked a trial still runs (this host only: a folder has one sweeper at a time)."""
    if owner["host"] != socket.gethostname() or owner["pid"] == os.getpid():
        return False
    try:
        return b"nlpexp" in Path(f"/proc/{owner['pid']}/cmdline").read_bytes()
    except OSError:
        return False


def finish_orphans(impl, study, every_s: float = 5.0) -> None:
    """Tell the study the result of every RUNNING trial of this sweep folder whose sweeper is gone."""
    import optuna

    from nlpexp import runs

    here = str(Path(str(impl.sweep_dir)).resolve())
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = trial.user_attrs.get(OWNER)
        if not owner or owner.get("sweep_dir") != here or owner_alive(owner):
            continue
        folder = Path(here) / str(owner["job"])
        print(f"nlpexp: trial {trial.number} (job {owner['job']}) lost its sweeper (pid {owner['pid']}): "
              f"finishing it in {folder}")
        while runs.folder_state(folder)[0] == "running":  # its job still runs (SLURM): its result is coming
            time.sleep(every_s)
        value = None
        try:
            if runs.folder_state(folder)[0] == "complete":
                found = json.loads((folder / "metrics.json").read_text())
                value = found["metrics"][found["objective"]]
            else:  # killed with its sweeper, or never started: run again in its folder, resuming what it saved
                value = impl.launcher.launch([owner["overrides"]], initial_job_idx=owner["job"])[0].return_value
            study.tell(trial.number, float(value))
        except Exception as err:  # noqa: BLE001 -- a failed job, no objective: the trial failed, as in the plugin
            print(f"nlpexp: trial {trial.number} failed: {err!r}")
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


if _PluginSweeper is not None:
    class OptunaSweeper(_PluginSweeper):
        def sweep(self, arguments):
            impl = self.sweeper
            if impl.storage:
                study = create_study_once(impl.study_name, impl.storage, impl._get_directions())
                finish_orphans(impl, study)
            record_owners(impl)
            impl.sampler = seed_per_trial(impl.sampler, impl.config.hydra.sweeper.sampler.get("seed"))
            impl.job_idx = next_job_number(impl.sweep_dir)
            if impl.job_idx:
                print(f"nlpexp: {impl.sweep_dir} holds jobs 0-{impl.job_idx - 1}: new trials start at "
                      f"{impl.job_idx}")
            return impl.sweep(arguments)
