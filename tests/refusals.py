"""What a refusal looks like, for the tests: one line, exit 2, no traceback (a command), one-line UserError (a call)."""
import pytest

from nlpexp.errors import UserError


def one_line(res) -> str:
    """The refusal of a command: exit 2, one line on stderr, no traceback."""
    lines = [line for line in res.err.strip().splitlines() if line.strip()]
    assert res.code == 2, res.err[-2000:]
    assert "Traceback" not in res.err and len(lines) == 1, res.err[-2000:]
    assert lines[0].startswith("nlpexp: error: "), lines
    return lines[0]


def refused(call, *args) -> str:
    """The refusal of a call: a UserError of one line."""
    with pytest.raises(UserError) as err:
        call(*args)
    assert "\n" not in str(err.value)
    return str(err.value)
