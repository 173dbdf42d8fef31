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



def unread_all(task: str, model: str, mode: str, keys) -> dict:
    """{key: its refusal} for `keys` given together, each at its composed value (so what the run reads does not
    change), to task x model x mode (the saved-run modes with ckpt=.), checked in this process as the command
    would be: the keys it refuses as not read."""
    import json

    from omegaconf import OmegaConf

    from nlpexp.config.validate import compose
    from nlpexp.config.validate import config_errors

    base = [f"task={task}", f"model={model}", f"mode={mode}"] + (["ckpt=."] if mode != "train" else [])
    cfg = compose(base)

    def given(key):
        value = OmegaConf.select(cfg, key) if "." in key else "x"
        text = "null" if value is None else str(value).lower() if isinstance(value, bool) else \
            json.dumps(value) if isinstance(value, str) else value
        return f"{key}={text}"

    args = base + [given(key) for key in keys]
    errors = config_errors(compose(args), args)
    return {key: e for key in keys for e in errors if e.startswith(f"{key} is not read by ")}


def ledger_cases(test_file: str) -> dict:
    """tests/<wing>/unread_<wing>.json beside a wing's contract test: {"task model mode": {key: hinted}}, every key
    the hand-kept key ledgers (main 707ac57) refused as not read on that path, and whether they said what reads it
    instead."""
    import json
    from pathlib import Path

    folder = Path(test_file).parent
    return json.loads((folder / f"unread_{folder.name}.json").read_text())


def assert_still_refused(path: str, expected: dict) -> None:
    """Every key of `expected` refused on `path` ("task model mode"): one error naming the key and the path, and
    what reads it instead wherever the ledger said so."""
    task, model, mode = path.split()
    found = unread_all(task, model, mode, list(expected))
    assert sorted(set(expected) - set(found)) == []
    prefix = f"is not read by task={task} model={model}" + (f" mode={mode}" if mode != "train" else "")
    for key, hinted in expected.items():
        assert found[key].startswith(f"{key} {prefix}"), found[key]
        assert not hinted or found[key].startswith(f"{key} {prefix} ("), found[key]
