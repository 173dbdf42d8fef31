"""Secrets never reach a saved file. They are read from the environment (HF_TOKEN, OPENAI_API_KEY, ...); a value
given on the command line under a key that looks like a secret (`hydra.job.env_set.HF_TOKEN=...`,
`+x.api_key=...`) is replaced by REDACTED in the run's .hydra/ files, in metrics.json and in logger params.
A key looks like a secret when one of its `_`-separated words is token, key, secret, password or passwd:
`hf_token`, `WANDB_API_KEY`, `db_password` do; `max_new_tokens`, `tokenizer`, `keep_checkpoints` do not.
A URL's password (`postgresql://user:PASSWORD@host/db`, an Optuna study's storage) is replaced under any key.
"""
import re
from pathlib import Path

REDACTED = "REDACTED"
_WORDS = {"token", "key", "secret", "password", "passwd", "apikey"}
# the password of a URL's user (hydra.sweeper.storage=postgresql://user:PASSWORD@host/db), whatever its key
_URL_PASSWORD = re.compile(r"(://[^/:@\s]+:)[^/@\s]+@")


def is_secret_key(key: str) -> bool:
    leaf = str(key).lstrip("+~").rsplit(".", 1)[-1]
    return any(word in _WORDS for word in re.split(r"[_\-]", leaf.lower()))


def redact_override(item: str) -> str:
    """`key=value` -> `key=REDACTED` when key looks like a secret."""
    key, eq, _ = str(item).partition("=")
    return f"{key}={REDACTED}" if eq and is_secret_key(key) else item


def redact(obj):
    """A copy of a plain container (dicts, lists, override strings) with secret-looking values replaced."""
    if isinstance(obj, dict):
        return {k: REDACTED if is_secret_key(k) and obj[k] not in (None, "") else redact(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        obj = _URL_PASSWORD.sub(rf"\g<1>{REDACTED}@", obj)
        return redact_override(obj) if "=" in obj else obj
    return obj


def redact_hydra_files(run_dir: Path) -> None:
    """Rewrite the .hydra/ files Hydra wrote before the run (config, hydra, overrides) and a sweep's
    multirun.yaml without secret values, only when one is there (the files are otherwise left as Hydra wrote them)."""
    import yaml

    folder = Path(run_dir) / ".hydra"
    files = list(folder.glob("*.yaml")) + [p for p in (Path(run_dir).parent / "multirun.yaml",) if p.exists()]
    for path in files:
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        clean = redact(data)
        if clean != data:
            path.write_text(yaml.safe_dump(clean, sort_keys=False, allow_unicode=True))
