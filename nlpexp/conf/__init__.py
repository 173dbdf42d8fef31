"""The shipped configs (package data). Importing this package puts their schemas into Hydra's ConfigStore as
schema/<group>/<name>, which every YAML here names in its defaults list: wherever these configs are composed (the
CLI, the compose API in tests, launcher workers), the schemas are there. Each wing's checks.py lists its own
(SCHEMAS); wings are found by scanning nlpexp/tasks/. A model's schema is the union of the dataclasses of its
adapters (their Adapter records), each of which a run of that adapter then reads its part of. Cheap: no torch."""
import importlib

from hydra.core.config_store import ConfigStore

from nlpexp.config import registry, schema


def store() -> None:
    cs = ConfigStore.instance()
    for name, model in registry.MODELS.items():
        cs.store(group="schema/model", name=name,
                 node=schema.union(f"model={name}", [a.config for a in model.adapters.values()]))
    cs.store(group="schema", name="trainer", node=schema.Trainer)
    cs.store(group="schema", name="device", node=schema.Device)
    cs.store(group="schema", name="eval", node=schema.Eval)
    for name, node in (("csv", schema.CsvLogger), ("tensorboard", schema.TensorboardLogger),
                       ("mlflow", schema.MlflowLogger), ("wandb", schema.WandbLogger)):
        cs.store(group="schema/logger", name=name, node=node)
    for wing in registry.wings():
        for group, name, node in importlib.import_module(f"nlpexp.tasks.{wing}.checks").SCHEMAS:
            cs.store(group=f"schema/{group}", name=name, node=node)


store()
