"""The embedding wing's checks: what a run of each mode reads (the dataclasses of config.py and its Adapter
record), and the rules that span several nodes. Imported before any run: no torch here."""
from nlpexp.config.schema import Inputs, data_errors, input_errors, run_folder_errors
from nlpexp.tasks.embedding.config import METHOD_LOOPS, RENAMED, SCHEMAS  # noqa: F401 (the wing's)


def consumes(cfg, adapter, model) -> dict:
    """What this task x model x mode reads, by group ('' = the top-level keys): trainer.* is read by the
    task.method's loop and by an encoder that can be fine-tuned."""
    if cfg.mode == "apply":
        saved = "the saved run's embedder is used"
        return {"trainer": saved, "model": saved, "": (Inputs,),
                "data": "mode=apply embeds input= with the saved run"}
    method = cfg.task.method
    trainer = tuple(c for c in (METHOD_LOOPS.get(method), model.encodes) if c)
    if not trainer:
        trainer = "task.method=none trains nothing"
    return {"trainer": trainer, "model": (adapter.config,), "": ()}


def check(cfg, adapter, model) -> list[str]:
    from nlpexp.inputs.readers import special_file_error

    errors = data_errors(cfg.data)
    cache = cfg.task.get("cache")
    if cache and (problem := special_file_error(cache)):  # an SQLite file of its own
        errors.append(f"task.cache={problem}")
    if cfg.mode == "apply":
        errors += run_folder_errors(cfg, "a task=embedding run folder")
        if not cfg.get("input"):
            errors.append("mode=apply needs input=<texts .txt/.csv/.jsonl or embeddings .npy>")
        errors += input_errors(cfg)
        return errors
    if cfg.task.method == "finetune" and model.encodes is None:
        errors.append(f"task.method=finetune trains a transformer encoder; model={cfg.model.name} is not one "
                      "(use sentence_transformers, minilm, bert or finbert)")
    return errors
