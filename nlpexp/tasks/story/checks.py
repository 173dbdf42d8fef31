"""The story wing's checks: what a run of each mode reads (the dataclasses of config.py and its Adapter
record), and the rules that span several nodes. Imported before any run: no torch here."""
from omegaconf import OmegaConf

from nlpexp.config.schema import Generate, SavedRun, data_errors, run_folder_errors
from nlpexp.tasks.story.config import (RENAMED, SCHEMAS, PretrainedModel, SavedModel, StoryGenerate,  # noqa: F401
                                       TaskName, search_errors)


def consumes(cfg, adapter, model) -> dict:
    """What this task x model x mode reads, by group ('' = the top-level keys)."""
    if cfg.mode == "train":
        return {"trainer": (adapter.trainer,), "model": (adapter.config,), "task": (model.task(),),
                "generate": (StoryGenerate,), "": ()}
    model_reads = "the saved run's model is used"
    if cfg.mode == "generate" and not cfg.get("ckpt"):  # the configured pretrained model generates as it is
        model_reads = (PretrainedModel,)
    return {"trainer": (SavedModel,) if cfg.mode == "eval" else "the saved run's model is used as trained",
            "model": model_reads, "task": (TaskName,), "generate": (StoryGenerate,),
            "": (Generate,) if cfg.mode == "generate" else (SavedRun,),
            **({"data": "mode=generate reads no data"} if cfg.mode == "generate" else {})}


def check(cfg, adapter, model) -> list[str]:
    errors = data_errors(cfg.data) + data_errors(OmegaConf.create({"path": cfg.data.get("test_path")}))
    errors += search_errors(cfg)
    if cfg.data.get("test_path") and cfg.data.get("test_size") is not None:
        errors.append("data.test_path holds the test stories and data.test_size cuts them from the end of "
                      "data.path: give one (data.test_size=null)")
    if cfg.mode == "train" and (cfg.trainer.get("patience") or 0) > 0 and not cfg.data.get("val_size"):
        errors.append("trainer.patience stops on validation loss: give validation stories (data.val_size=200)")
    if cfg.mode == "eval":
        errors += run_folder_errors(cfg)
    if cfg.mode == "generate":
        if not cfg.get("prompt"):
            errors.append('mode=generate needs prompt="..."')
        if cfg.get("ckpt"):
            errors += run_folder_errors(cfg)
    return errors
