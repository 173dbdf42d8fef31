"""task=posenc's config: the encoding's width and the positions drawn. Imported before any run: no torch here."""
from dataclasses import dataclass
from typing import List

from omegaconf import MISSING

from nlpexp.config.schema import setting


@dataclass
class PosencTask:
    name: str = MISSING
    d_model: int = setting(MISSING, gt=0, le=65536)
    # float32 holds every integer position exactly up to 2^24
    positions: List[int] = setting(MISSING, check=lambda v: None if v else "must not be empty",
                                   each={"ge": 0, "le": 2 ** 24})


SCHEMAS = [("posenc", "task", PosencTask)]


def consumes(cfg, adapter, model) -> dict:
    hint = "task=posenc draws the encoding of task.d_model and task.positions: it trains nothing"
    return {"trainer": hint, "model": hint, "": ()}


def check(cfg, adapter, model) -> list[str]:
    return []
