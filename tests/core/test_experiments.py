"""Every shipped study composes, and each of its per-model files passes the key check: a key the path does not
read, a misspelt value or a removed setting fails here, not an hour into a study."""
import pytest

from nlpexp.config.registry import shipped_roots

CELLS = sorted({(p.stem, "") for root in shipped_roots() for p in (root / "experiment").glob("*.yaml")}
               | {(p.parent.name, p.stem) for root in shipped_roots()
                  for p in (root / "experiment_model").glob("*/*.yaml")})
assert len(CELLS) >= 10  # the shipped studies and their per-model files: none lost to a moved folder


@pytest.mark.parametrize("experiment,model", CELLS, ids=[f"{e}-{m or 'default'}" for e, m in CELLS])
def test_every_study_and_its_per_model_settings_pass_the_key_check(experiment, model, nlpexp):
    res = nlpexp(f"experiment={experiment}", *([f"model={model}"] if model else []), "dry_run=true")
    assert res.code == 0, res.err[-2000:]
    assert "config OK" in res.out
