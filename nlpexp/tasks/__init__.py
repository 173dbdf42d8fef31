"""The task wings: one folder each, `nlpexp/tasks/<wing>/`, found by scanning (nlpexp/config/registry.py).

A wing's `__init__.py` declares, as plain records and without heavy imports, the tasks it runs (`Task`) and the
models it runs them with (`Adapter`: the adapter module in the wing and the dataclasses of what it reads); the
wing's folder holds the rest: `recipe.py` (train() first), its checks and schemas, its adapters, data readers,
its YAML in `conf/` (task, smoke, studies) and its README. Adding a wing edits no file outside its folder.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    name: str
    models: tuple[str, ...]     # the task x model matrix: every pair runs, offline in smoke form
    modes: tuple[str, ...]
    summary: str = ""
    wing: str = ""              # the folder it is declared in (filled in by the registry)


@dataclass(frozen=True)
class Adapter:
    """A model in a wing: `module` under nlpexp/tasks/<wing>/ builds it from its `config` (the dataclass of the
    model.* keys it reads), and the loop whose dataclass is `trainer` trains it (None: no trainer.* is read)."""
    model: str
    module: str
    config: type
    trainer: type | None = None
    data_parallel: bool = False   # trainer.nproc > 1 runs it under torchrun
    needs_key: str | None = None  # a paid web API: smoke sweeps run it only when this variable is set
