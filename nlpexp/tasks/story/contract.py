"""What the story recipe asks of a model adapter (transformer, transformer_encdec, gpt2, bert2bert).

An adapter module provides (its config: the dataclass its Adapter record names, in config.py)
  build(config, task, train_texts) -> Built          the tokenizer, the model and its optional extras; task: the
                                                     task.* dataclass config.task() names
  load(folder, device) -> (StoryModel, tokenizer)    a checkpoints/final folder written by StoryModel.save
  pretrained(model, device) -> (StoryModel, tokenizer)  mode=generate without ckpt (model: config.PretrainedModel;
                                                     UserError when it has none)
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class StoryModel(Protocol):
    """A torch module that trains on (prompt ids, target ids) pairs and continues prompts."""

    objective: str   # next_token | causal_lm | encdec | gpt2: recorded in metrics.json
    max_len: int     # positions the model holds

    def examples(self, pairs: list[tuple[list[int], list[int]]], train: bool) -> list[dict]:
        """Training/scoring items; in training every target token is scored, else only the continuation's."""

    def collate(self, items: list[dict]) -> dict:
        """A batch of tensors with `labels` (-100 where nothing is scored)."""

    def scores(self, batch: dict) -> tuple:
        """(logits (..., vocab), labels (...), -100 where nothing is scored): the recipe takes the loss of them."""

    def prompt_groups(self, prompts: list[list[int]], batch_size: int) -> list[list[int]]:
        """Indices of the prompts decoded together."""

    def fit_positions(self, rows: list[list[int]], max_new: int) -> tuple[list[list[int]], int]:
        """The prompts and a generation length cut to fit the model's positions."""

    def continue_ids(self, rows: list[list[int]], max_new: int, settings: dict, *, sentence_ids, words, eos_id: int,
                     seed: int, generator) -> list[list[int]]:
        """New token ids per prompt under the decoding settings (generate.*)."""

    def save(self, folder: Path, tokenizer) -> None:
        """Weights, tokenizer and story_model.json (which adapter loads it back)."""


@dataclass
class Built:
    """What `build` gives the recipe: the tokenizer and the model, and what only some models have, each with a
    default (a model that gains a capability sets one more field; its siblings do not change)."""
    tokenizer: object
    model: StoryModel
    lr_scales: dict = field(default_factory=dict)  # parameter name -> multiple of trainer.lr (a warm start's new
                                                   # weights); the rest train at trainer.lr


class StoryAdapter(Protocol):
    """An adapter module (see the module docstring)."""

    def build(self, config, task, train_texts: list[str]) -> Built:
        """The tokenizer and the model, untrained or warm-started."""

    def load(self, folder: Path, device: str) -> tuple:
        """(StoryModel on `device`, tokenizer) from a folder StoryModel.save wrote."""

    def pretrained(self, model, device: str) -> tuple:
        """(StoryModel, tokenizer) as configured, untrained; UserError when the model has no pretrained weights."""


def batches_in_order(prompts, batch_size: int) -> list[list[int]]:
    """Consecutive prompts, padded together (encoder-decoder, GPT-2 with an attention mask)."""
    return [list(range(i, min(i + batch_size, len(prompts)))) for i in range(0, len(prompts), batch_size)]


def batches_by_length(prompts, batch_size: int) -> list[list[int]]:
    """Prompts of one length together: no padding, positions line up (our decoder-only models' cache)."""
    by_len: dict = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    return [g[j:j + batch_size] for g in by_len.values() for j in range(0, len(g), batch_size)]


def fit_decoder_positions(rows, max_new: int, max_len: int):
    """Decoder-only models keep the last prompt tokens (at most half the positions) and write into the room left."""
    keep = max(1, min(len(rows[0]), max_len // 2))
    rows = [r[-keep:] for r in rows]
    return rows, max(1, min(max_new, max_len - 1 - max(len(r) for r in rows)))


def write_spec(folder: Path, model: str, spec: dict) -> None:
    import json

    (Path(folder) / "story_model.json").write_text(json.dumps({"model": model, "spec": spec}, indent=1))


def read_spec(folder: Path) -> dict:
    import json

    from nlpexp.errors import UserError

    path = Path(folder) / "story_model.json"
    if not path.exists():
        raise UserError(f"{folder} holds no story checkpoint (story_model.json missing; did that run finish?)")
    return json.loads(path.read_text())
