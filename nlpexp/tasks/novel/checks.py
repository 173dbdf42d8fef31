"""The novel wing's checks: what a run of each mode reads (the dataclasses of config.py and its Adapter
record), and the rules that span several nodes. Imported before any run: no torch here."""
from nlpexp.config.schema import TOKENS, GenerateLength, data_errors, run_folder_errors
from nlpexp.tasks.novel.config import RENAMED, SCHEMAS, NovelGenerate  # noqa: F401 (the wing's)


def consumes(cfg, adapter, model) -> dict:
    """What this task x model x mode reads, by group ('' = the top-level keys)."""
    if cfg.mode == "generate":
        saved = "the saved run's model is used as trained"
        return {"trainer": saved, "model": saved, "": (GenerateLength,), "data": "mode=generate reads no data",
                "generate": (NovelGenerate,)}
    return {"trainer": (adapter.trainer,), "model": (adapter.config,), "": (), "generate": (NovelGenerate,)}


def check(cfg, adapter, model) -> list[str]:
    errors = data_errors(cfg.data, folders=True)
    if cfg.mode == "generate":
        length = cfg.get("length")
        if not isinstance(length, int) or isinstance(length, bool) or not 0 < length <= TOKENS:
            errors.append(f"length must be an integer in [1, {TOKENS}] (got {length!r})")
        if not cfg.get("prompt"):
            errors.append('mode=generate needs prompt="..."')
        errors += run_folder_errors(cfg)
    return errors
