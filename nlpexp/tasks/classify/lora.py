"""LoRA (model.lora.r > 0) for the Trainer's HF classifiers (the hf encoders and gpt2), through peft.

The pretrained weights stay frozen; low-rank updates of `target_modules` (null: peft's choice for the
architecture: query/value in BERT, c_attn in GPT-2) and the whole classification head train. The run's best
checkpoint is then the adapter as peft saves it (adapter_config.json, adapter_model.safetensors, the head inside)
with the task's config.json beside it, which plain peft loads:

    config = AutoConfig.from_pretrained(folder)               # the task's labels
    base = AutoModelForSequenceClassification.from_pretrained(<model.pretrained>, config=config)
    model = PeftModel.from_pretrained(base, folder)

or, with model.lora.merge=true, one merged model that plain `from_pretrained(folder)` loads. A model built
small (model.pretrained=null, +smoke=true) has no pretrained base to load: its base is saved beside the adapter,
in <folder>/base, and `from_pretrained(folder / "base")` is the base above.
"""
import json
from pathlib import Path

ADAPTER = "adapter_config.json"
BASE = "base"  # a model built small: its frozen base, saved beside the adapter


def wanted(lora) -> bool:
    """`lora`: model.lora (schema.Lora) of the adapters that read it, None for the others."""
    return lora is not None and lora.r > 0


def wrap(model, lora):
    """The model with LoRA adapters (peft's PeftModelForSequenceClassification): only they and the head train."""
    from peft import LoraConfig, TaskType, get_peft_model

    from nlpexp.errors import UserError

    targets = list(lora.target_modules) if lora.target_modules else None
    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=int(lora.r), lora_alpha=int(lora.alpha),
                        lora_dropout=float(lora.dropout), target_modules=targets)
    try:
        return get_peft_model(model, config)
    except ValueError as err:  # peft: no module matched, or one it cannot adapt (LayerNorm, Embedding ...)
        said = (str(err).strip().splitlines() or [type(err).__name__])[0].split(". ")[0].rstrip(".")
        given = f"[{', '.join(map(str, targets))}]" if targets else "null"
        raise UserError(f"model.lora.target_modules={given}: {said[:160]} (peft); the layers LoRA can adapt in "
                        f"this model: {', '.join(linear_names(model))}") from None


def linear_names(model) -> list[str]:
    """The last name of every Linear (or GPT-2 Conv1D) layer, once each: what model.lora.target_modules takes."""
    import torch

    names = [name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if name and (isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D")]
    return list(dict.fromkeys(names))


def describe(model, lora) -> dict:
    """What metrics.json says of the adapters: the settings, the modules they sit on, whether it was merged."""
    config = model.peft_config["default"]
    return {"r": int(lora.r), "alpha": int(lora.alpha), "dropout": float(lora.dropout),
            "target_modules": sorted(config.target_modules), "merged": bool(lora.merge)}


def keep_base(model, folder: Path) -> None:
    """The weights LoRA will keep frozen, before it wraps them (a model built small exists nowhere else)."""
    model.save_pretrained(folder)


def save(model, folder: Path, base: dict) -> None:
    """The adapter as peft writes it, the task's config.json (labels, sizes) and where the base comes from."""
    import shutil

    model.save_pretrained(folder)
    model.get_base_model().config.save_pretrained(folder)
    if base.get("folder"):  # the base built small, kept by keep_base
        shutil.copytree(base["folder"], folder / BASE)
        base = {"pretrained": BASE}
    (folder / "lora_base.json").write_text(json.dumps(base))


def is_adapter(folder: Path) -> bool:
    return (Path(folder) / ADAPTER).is_file()


def load(folder: Path, model_class):
    """A saved adapter on its base model (loaded as the run loaded it: hub id at its commit, folder or package)."""
    from peft import PeftModel
    from transformers import AutoConfig

    from nlpexp.inputs.hub import pretrained_model

    base = json.loads((Path(folder) / "lora_base.json").read_text())
    config = AutoConfig.from_pretrained(folder)
    if base["pretrained"] == BASE:
        model = model_class.from_pretrained(Path(folder) / BASE, config=config, use_safetensors=True,
                                            trust_remote_code=False)
    else:
        model = pretrained_model(base["pretrained"], model_class, base.get("revision"), config=config)
    return PeftModel.from_pretrained(model, folder)
