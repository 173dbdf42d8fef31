"""hydra-optuna-sweeper's sweeper with the two things a persistent, shared study needs (hparams_search configs
name it as `hydra.sweeper._target_`):

- the study is created once, before any trial is launched, and a race with another sweeper process creating it
  at the same moment never fails (the loser loads what the winner made);
- a sweep continued in its own folder numbers its jobs after the ones already there (hydra#3328: a resumed
  study's jobs started again at 0 and wrote into the earlier trials' folders).

Everything else (sampling, asking and telling trials, optimization_results.yaml) is the plugin's.
"""
import os
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


if _PluginSweeper is not None:
    class OptunaSweeper(_PluginSweeper):
        def sweep(self, arguments):
            impl = self.sweeper
            if impl.storage:
                create_study_once(impl.study_name, impl.storage, impl._get_directions())
            impl.job_idx = next_job_number(impl.sweep_dir)
            if impl.job_idx:
                print(f"nlpexp: {impl.sweep_dir} holds jobs 0-{impl.job_idx - 1}: new trials start at "
                      f"{impl.job_idx}")
            return impl.sweep(arguments)
