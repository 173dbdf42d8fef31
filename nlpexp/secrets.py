"""Secrets never reach a saved file. They are read from the environment (HF_TOKEN, OPENAI_API_KEY, ...); a value
given on the command line that is, or looks like, a secret is replaced by REDACTED in the run's .hydra/ files, a
sweep's multirun.yaml, metrics.json, logger params, the printed config, the job's log file and the report files.

By key: a key looks like a secret when one of its words (split at `_`, `-` and camelCase boundaries: `hfToken`,
`HFToken`) is token, key, secret, password, passwd, pwd, pat, apikey, credential(s), auth, bearer, privatekey or
passphrase, or ends in token, key, secret, password, passwd, apikey or credential(s) (`HFTOKEN`, `dbpassword`), a
few ordinary words aside (monkey, hotkey, ...): `hf_token`, `WANDB_API_KEY`, `DB_PWD`, `GITHUB_PAT`, `HF_AUTH`,
`MY_SERVICE_CREDENTIAL`, `private_key` do; `max_new_tokens`, `tokenizer`, `keep_checkpoints`, `sort_keys`,
`author`, `path`, `patience` do not.
By value, under any key (`+hydra.job.env_set.MY_SERVICE=sk-...`): the shapes of known tokens (OpenAI `sk-`/
`sk-proj-`, Hugging Face `hf_`, GitHub `ghp_`/`gho_`/`ghs_`/`ghu_`/`ghr_`/`github_pat_`, Slack `xoxb-`/`xoxp-`, AWS
`AKIA`/`ASIA`) and long random-looking tokens (32+ characters of [A-Za-z0-9_-+/] and `=` padding, letters and digits
of all three classes that change class often, some piece between separators 10+ long, high Shannon entropy).
Never by value: git commits and sha256 digests (hex), uuids, paths, hub ids (sentence-transformers/all-MiniLM-L6-v2),
words, timestamps.
In URLs, under any key: the password (`postgresql://user:PASSWORD@host/db`, an Optuna study's storage,
`https://:TOKEN@host`), a user name that is not a plain short name (`https://TOKEN@github.com/x`: a token given as the
user) and query parameters with a secret-looking name (`?token=...&api_key=...`).
"""
import math
import os
import re
from collections import Counter
from pathlib import Path

REDACTED = "REDACTED"
_WORDS = {"token", "key", "secret", "password", "passwd", "pwd", "pat", "apikey", "credential", "credentials",
          "auth", "bearer", "privatekey", "passphrase"}
# a word ending in one of these is a secret's name too (HFTOKEN, dbpassword, openaiapikey) ...
_ENDINGS = ("token", "key", "secret", "password", "passwd", "apikey", "credential", "credentials")
# ... but for these ordinary words
_ORDINARY = {"monkey", "donkey", "turkey", "hotkey", "jockey", "hockey", "whiskey", "turnkey", "keykey"}
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
# the password of a URL's user (hydra.sweeper.storage=postgresql://user:PASSWORD@host/db, https://:TOKEN@host),
# whatever its key
_URL_PASSWORD = re.compile(r"(://[^/:@\s]*:)[^/@\s]+@")
# a URL's user without a password (https://TOKEN@github.com/x): kept only when it is a plain short user name
_URL_USER = re.compile(r"(://)([^/:@\s]+)@")
_PLAIN_USER = re.compile(r"[a-z][a-z0-9._-]{0,15}|[A-Za-z][a-z]{0,15}")
# a URL's query parameter (?token=...&api_key=...): its value, when its name looks like a secret's
_QUERY = re.compile(r"([?&;])([^=&#?\s/'\"]+)=([^&#\s'\",\]\}]+)")
# the shapes of known tokens, whatever their key
_KNOWN = re.compile(
    r"(?<![A-Za-z0-9])(?:"
    r"sk-(?:proj-|ant-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}"    # OpenAI (and Anthropic) API keys
    r"|hf_[A-Za-z0-9]{20,}"                                     # Hugging Face
    r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"  # GitHub
    r"|xox[abposr]-[A-Za-z0-9\-]{10,}"                          # Slack
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}(?![0-9A-Za-z])"                # AWS access key ids
    r")")
_OVERRIDE_KEY = re.compile(r"[+~]{0,2}[\w.\-/@\[\]]+")
_CANDIDATE = re.compile(r"(?<![A-Za-z0-9_\-+/])[A-Za-z0-9_\-+/]{30,}={0,2}(?![A-Za-z0-9_\-+/=])")


def _kind(c: str) -> int:
    return 0 if c.islower() else 1 if c.isupper() else 2


def _entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def looks_random(token: str) -> bool:
    """A long token that reads like a generated key: letters and digits of all three classes (hex never
    qualifies) that change class often (camelCase words, paths and hub ids do not), in pieces between `/_-+` mostly
    long (one of 10+), with high entropy over the whole token."""
    if len(token) < 32 or _entropy(token) < 4.0:
        return False
    pieces = [p for p in re.split(r"[^A-Za-z0-9]+", token) if p]
    if not pieces or max(len(p) for p in pieces) < 10 or len({_kind(c) for c in "".join(pieces)}) < 3:
        return False
    changes = sum(_kind(a) != _kind(b) for p in pieces for a, b in zip(p, p[1:]))
    return changes >= 0.3 * sum(len(p) - 1 for p in pieces)


def redact_text(text: str) -> str:
    """`text` with secret-shaped values (known token shapes, long random tokens, a URL's password) replaced."""
    text = _URL_PASSWORD.sub(rf"\g<1>{REDACTED}@", text)
    text = _URL_USER.sub(lambda m: m.group(0) if _PLAIN_USER.fullmatch(m.group(2)) or m.group(2) == REDACTED
                         else f"{m.group(1)}{REDACTED}@", text)
    text = _QUERY.sub(lambda m: f"{m.group(1)}{m.group(2)}={REDACTED}" if is_secret_key(m.group(2))
                      else m.group(0), text)
    text = _KNOWN.sub(REDACTED, text)
    return _CANDIDATE.sub(lambda m: REDACTED if looks_random(m.group(0)) else m.group(0), text)


def _secret_word(word: str) -> bool:
    return word in _WORDS or (word.endswith(_ENDINGS) and word not in _ORDINARY)


def is_secret_key(key: str) -> bool:
    """The last dotted part of `key` holds a secret-naming word (see the module's doc)."""
    leaf = str(key).lstrip("+~").rsplit(".", 1)[-1]
    return any(_secret_word(word) for word in re.split(r"[_\-\s]+", _CAMEL.sub("_", leaf).lower()) if word)


def redact_override(item: str) -> str:
    """`key=value` -> `key=REDACTED` when key looks like a secret."""
    key, eq, _ = str(item).partition("=")
    if not _OVERRIDE_KEY.fullmatch(key):  # a URL's query (https://host/x?token=...) is redact_text's
        return item
    return f"{key}={REDACTED}" if eq and is_secret_key(key) else item


def redact(obj):
    """A copy of a plain container (dicts, lists, override strings) with secret values replaced: under a
    secret-looking key, or shaped like a secret under any key."""
    if isinstance(obj, dict):
        return {k: REDACTED if is_secret_key(k) and obj[k] not in (None, "") else redact(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v) for v in obj)
    if isinstance(obj, str):
        obj = redact_text(obj)
        return redact_override(obj) if "=" in obj else obj
    return obj


def write_atomic(path: Path, text: str) -> None:
    """`text` into `path` whole or not at all (a temp name beside it, renamed into place)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _multirun_yaml(run_dir: Path) -> list[Path]:
    """A sweep's multirun.yaml: in the sweep folder, the job folder's parent (or higher, hydra.sweep.subdir=a/b)."""
    for parent in list(Path(run_dir).parents)[:3]:
        if (parent / "multirun.yaml").is_file():
            return [parent / "multirun.yaml"]
    return []


def redact_hydra_files(run_dir: Path) -> None:
    """Rewrite the .hydra/ files Hydra wrote before the run (config, hydra, overrides), a sweep's multirun.yaml
    and the job's log file without secret values, only when one is there (the files are otherwise left as Hydra
    wrote them); what the job logs from here on to a log file is redacted as it is written."""
    import yaml

    folder = Path(run_dir) / ".hydra"
    for path in sorted(folder.glob("*.yaml")) + _multirun_yaml(run_dir):
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        clean = redact(data)
        if clean != data:
            write_atomic(path, yaml.safe_dump(clean, sort_keys=False, allow_unicode=True))
    for path in Path(run_dir).glob("*.log"):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        clean = redact_text(text)
        if clean != text:  # in place: the job's log handler (append mode) goes on writing into this file
            path.write_text(clean, encoding="utf-8")
    guard_log_files()


class _RedactingFilter:
    """A logging filter: a record's message leaves with its secrets replaced."""

    def filter(self, record) -> bool:
        message = record.getMessage()
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def guard_log_files() -> None:
    """Every file handler of the logging tree (Hydra's <job>.log) redacts what it writes."""
    import logging

    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler) and \
                    not any(isinstance(f, _RedactingFilter) for f in handler.filters):
                handler.addFilter(_RedactingFilter())
