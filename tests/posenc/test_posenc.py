"""task=posenc: the sinusoidal positional encoding is the formula (for even and odd d), and the task draws it."""
import math

import pytest

from nlpexp.models.transformer import positional_encoding


# -- positional encoding ----------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [500, 7, 1])
def test_positional_encoding_is_the_formula_for_even_and_odd_d(d):
    pe = positional_encoding(101, d)
    assert pe.shape == (101, d)
    for pos in (0, 1, 57, 100):
        for j in range(d):
            angle = pos / 10000 ** ((j - j % 2) / d)
            expected = math.sin(angle) if j % 2 == 0 else math.cos(angle)
            assert pe[pos, j].item() == pytest.approx(expected, abs=1e-5), (pos, j)


def test_posenc_task_draws_the_plot(nlpexp):
    res = nlpexp("task=posenc")
    assert res.code == 0, res.err[-2000:]
    (run,) = res.run_dirs()
    assert (run / "posenc.png").stat().st_size > 1000
    import pandas as pd

    table = pd.read_csv(run / "posenc.csv")
    assert len(table) == 500 and table["position_1"].iloc[0] == pytest.approx(math.sin(1), abs=1e-6)
