"""The classification wing's checks: what a run of each mode reads (the dataclasses of config.py and its
Adapter record), and the rules that span several nodes. Imported before any run: no torch here."""
from omegaconf import OmegaConf

from nlpexp.config.schema import (DistributedHFTrainerLoop, HFTrainerLoop, Predict, SavedRun, data_errors,
                                  input_errors, run_folder_errors)
from nlpexp.tasks.classify.config import (SCHEMAS, ClassifyData, PredictColumns, PrepareLoop,  # noqa: F401
                                          PromptLoop)  # SCHEMAS: the wing's

SAVED = "the saved run's settings (its .hydra/config.yaml) are used"


def consumes(cfg, adapter, model) -> dict:
    """What this task x model x mode reads, by group ('' = the top-level keys): the dataclasses whose fields are
    read, or a string saying why nothing of it is. Groups not named are not checked."""
    if cfg.mode == "prepare":  # the data read and split as training does, tokenized with the model's tokenizer
        return {"trainer": (PrepareLoop,), "model": (adapter.config,),
                "tokenizer": model.reads().get("tokenizer", ()) if hasattr(model, "reads") else (),
                "data": (ClassifyData,), "augment": "mode=prepare tokenizes the data as read; augment.* generates "
                "texts when training", "": ()}
    if cfg.mode != "train":
        saved = {"trainer": SAVED, "model": SAVED, "tokenizer": SAVED, "augment": SAVED,
                 "": (Predict,) if cfg.mode == "predict" else (SavedRun,)}
        if cfg.mode == "predict":
            return {**saved, "data": (PredictColumns,)}
        return {**saved, "data": (ClassifyData,)} if cfg.mode == "eval" else saved
    loop = DistributedHFTrainerLoop if adapter.trainer is HFTrainerLoop and adapter.data_parallel else adapter.trainer
    # augment.generated_per_label > 0: gpt2_prompt's loop trains the generator, at augment.generator_epochs and
    # augment.generator_lr, with the rest of its trainer.*
    trainer = tuple(c for c in (loop, PromptLoop if (cfg.get("augment") or {}).get("generated_per_label") else None)
                    if c)
    return {"trainer": trainer or model.WITHOUT_TRAINER, "model": (adapter.config,),
            "tokenizer": model.reads().get("tokenizer", ()) if hasattr(model, "reads") else (),
            "data": (ClassifyData,), "": ()}


def check(cfg, adapter, model) -> list[str]:
    errors = []
    data, mode = cfg.data, cfg.mode
    errors += data_errors(data)
    if mode == "train":
        errors += _train_errors(cfg, adapter, model)
    if mode == "soup":
        runs = cfg.get("ckpt")
        if not OmegaConf.is_list(runs) or len(runs) < 2:
            errors.append("mode=soup needs ckpt=[<run folder>,<run folder>,...] (two or more)")
        else:
            errors += run_folder_errors(cfg)
        if adapter.trainer is not HFTrainerLoop:
            errors.append(f"mode=soup averages torch weights: model={cfg.model.name} has none")
    if mode == "prepare" and not getattr(model, "PREPARE", False):
        errors.append(f"mode=prepare caches tokenized data, and model={cfg.model.name} reads raw text (it tokenizes "
                      "as it trains, or not at all): nothing to prepare")
    if mode in ("eval", "predict"):
        errors += run_folder_errors(cfg)
        if mode == "predict" and not (cfg.get("text") or cfg.get("input")):
            errors.append('mode=predict needs text="..." or input=<file>')
        errors += input_errors(cfg)
    task = cfg.task
    if not task.labels and task.label_sets and str(task.label_set) not in task.label_sets:
        errors.append(f"task.label_set must be one of {', '.join(map(str, task.label_sets))} (got {task.label_set!r})")
    return errors


def _one_process(model: str) -> str:
    from nlpexp.config import registry

    return (f"model {model} trains in one process (data parallel: "
            + ", ".join(m.name for m in registry.MODELS.values() if m.data_parallel) + ")")


def _train_errors(cfg, adapter, typed) -> list[str]:
    errors, tr, model = [], cfg.trainer, cfg.model
    if cfg.task.get("multi_label"):
        errors += _multi_label_errors(cfg, typed)
    if tr.epochs == 0:
        errors += _zero_shot_errors(cfg, typed)
    if tr.nproc > 1 and not adapter.data_parallel:
        errors.append(f"trainer.nproc={tr.nproc}: {_one_process(model.name)}")
    if tr.node_rank is not None and tr.node_rank >= tr.nnodes:
        errors.append(f"trainer.node_rank={tr.node_rank} must be below trainer.nnodes={tr.nnodes}")
    if tr.soup > 1:
        if adapter.trainer is not HFTrainerLoop:
            errors.append(f"trainer.soup={tr.soup}: only classifiers trained by the transformers Trainer make soups "
                          f"(not task={cfg.task.name} model={model.name})")
        clashes = [(tr.nproc != 1, "trainer.nproc=1"), (tr.nnodes != 1, "trainer.nnodes=1"),
                   (bool(tr.average_last), "trainer.average_last=0"),
                   (cfg.get("resume_from") is not None, "no resume_from")]
        errors += [f"trainer.soup={tr.soup} trains its ingredients one after another: use {fix}"
                   for clash, fix in clashes if clash]
    errors += _lora_errors(cfg)
    eval_on = cfg.get("eval_on")
    if eval_on:
        from pathlib import Path

        from nlpexp.inputs.readers import resource_path, special_file_error

        if isinstance(eval_on, str):
            errors.append(f"eval_on must be a list, e.g. eval_on=[emotion_alt.csv] (got {eval_on!r})")
        else:
            errors += [f"eval_on: {special_file_error(spec) or f'{spec} is neither a file nor an embedded sample'}"
                       for spec in eval_on
                       if not (resource_path(str(spec)).is_file() or Path(str(spec)).expanduser().is_file())]
            errors += _not_text(spec for spec in eval_on if Path(str(spec)).expanduser().is_file())
    return errors


def multi_label_models() -> list[str]:
    """The models whose classify adapter runs task.multi_label=true (their dataclass has MULTI_LABEL)."""
    from nlpexp.config import registry

    return [m.name for m in registry.MODELS.values()
            if "classify" in m.adapters and getattr(m.adapters["classify"].config, "MULTI_LABEL", False)]


def _multi_label_errors(cfg, typed) -> list[str]:
    """task.multi_label=true trains one sigmoid per label: a model (or an option) that gives one label per text
    cannot run it."""
    tr, model = cfg.trainer, cfg.model.name
    if not getattr(typed, "MULTI_LABEL", False):
        return [f"task.multi_label=true: model={model} predicts one label per text (multi-label: "
                f"{', '.join(multi_label_models())})"]
    clashes = [(tr.get("epochs") == 0, "trainer.epochs=0 (zero-shot) scores a pretrained head that gives one label "
                "per text: use trainer.epochs >= 1"),
               ((tr.get("soup") or 1) > 1, f"trainer.soup={tr.get('soup')} picks its ingredients by single-label "
                "accuracy: use trainer.soup=1"),
               (bool(tr.get("label_smoothing")), f"trainer.label_smoothing={tr.get('label_smoothing')} smooths one "
                "class per text, not one yes/no per label: use trainer.label_smoothing=0"),
               (bool((cfg.get("augment") or {}).get("generated_per_label")), "augment.generated_per_label writes "
                "texts of one label each: use augment.generated_per_label=0")]
    return [f"task.multi_label=true: {why}" for clash, why in clashes if clash]


def _lora_errors(cfg) -> list[str]:
    """model.lora.r > 0: peft installed, and nothing that needs full checkpoints."""
    import importlib.util

    lora, tr = cfg.model.get("lora"), cfg.trainer
    if not lora or not int(lora.get("r") or 0):
        return []
    errors = [] if importlib.util.find_spec("peft") else [
        f"model.lora.r={lora.r} trains LoRA adapters with peft, which is not installed: pip install 'nlpexp[peft]'"]
    clashes = [(tr.epochs == 0, "trainer.epochs=0 (zero-shot) trains nothing: use trainer.epochs >= 1"),
               (bool(tr.average_last), "trainer.average_last averages whole-model checkpoints, and a LoRA run's "
                "hold only the adapter: use trainer.average_last=0")]
    return errors + [f"model.lora.r={lora.r}: {why}" for clash, why in clashes if clash]


def _zero_shot_errors(cfg, typed) -> list[str]:
    """trainer.epochs=0 scores a pretrained model as it is: its own head (hf, gpt2: mapped by label name) or its
    language-model head prompted (mlm_prompt, gpt2_prompt); the model's dataclass says why it cannot (UNTRAINED)."""
    from nlpexp.inputs.hub import builds_small

    model, tr = cfg.model, cfg.trainer
    if typed.UNTRAINED:
        return [f"trainer.epochs=0 (zero-shot) scores a pretrained model as it is; model={model.name} starts "
                f"untrained ({typed.UNTRAINED}): use trainer.epochs >= 1"]
    if builds_small(model):  # a smoke run's hub id is null by now (its wing's smoke file)
        return ["trainer.epochs=0 (zero-shot) scores a pretrained model as it is, but " + (
            "+smoke=true builds hub models small and untrained" if cfg.get("smoke") else
            "model.pretrained=null builds an untrained model") + ": give model.pretrained=<hub id or local folder>"]
    clashes = [(tr.nproc > 1, "trainer.nproc"), (tr.nnodes > 1, "trainer.nnodes"), (tr.soup > 1, "trainer.soup"),
               (bool(tr.average_last), "trainer.average_last")]
    return [f"trainer.epochs=0 (zero-shot) trains nothing: {key} has nothing to do" for clash, key in clashes if clash]


def _not_text(paths) -> list[str]:
    """Files that cannot be text data (empty, binary, a folder), said before any model is built or loaded."""
    from pathlib import Path

    from nlpexp.inputs.readers import text_file_error

    return [problem for path in paths if (problem := text_file_error(Path(str(path)).expanduser()))]
