"""Every shipped study composes, and each of its per-model files passes the key check: a key the path does not
read, a misspelt value or a removed setting fails here, not an hour into a study."""
from pathlib import Path

import pytest

CONF = Path(__file__).resolve().parents[2] / "nlpexp" / "conf"
CELLS = sorted({(p.stem, "") for p in (CONF / "experiment").glob("*.yaml")}
               | {(p.parent.name, p.stem) for p in (CONF / "experiment_model").glob("*/*.yaml")})


@pytest.mark.parametrize("experiment,model", CELLS, ids=[f"{e}-{m or 'default'}" for e, m in CELLS])
def test_every_study_and_its_per_model_settings_pass_the_key_check(experiment, model, nlpexp):
    res = nlpexp(f"experiment={experiment}", *([f"model={model}"] if model else []), "dry_run=true")
    assert res.code == 0, res.err[-2000:]
    assert "config OK" in res.out
