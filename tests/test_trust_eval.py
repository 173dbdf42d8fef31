"""Runs you can trust, round 3: mode=eval scores a saved run on its own test split (never on rows it trained on); a
saved model folder without its saved_files.json is refused and a doc2vec classifier.json that does not fit its
arrays is one line, not a segfault; UTF-16/32 files are decoded, NUL bytes without a BOM refused; secrets under
camelCase / run-together / short names, in URLs' users and query parameters, and read through ${oc.env:...}."""

import pytest

from nlpexp import secrets


def one_line(res) -> str:
    lines = [line for line in res.err.strip().splitlines() if line.strip()]
    assert res.code == 2, res.err[-2000:]
    assert "Traceback" not in res.err and len(lines) == 1, res.err[-2000:]
    assert lines[0].startswith("nlpexp: error: "), lines
    return lines[0]


# -- secrets ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["+hydra.job.env_set.hfToken", "HFTOKEN", "HFToken", "DB_PWD", "GITHUB_PAT",
                                 "HF_AUTH", "CREDENTIALS", "PASSWD", "apiKey", "openaiapikey", "dbPassword",
                                 "x.clientSecret", "hf_token", "WANDB_API_KEY", "private_key"])
def test_secret_key_names(key):
    assert secrets.is_secret_key(key)
    assert secrets.redact_override(f"{key}=plainvalue") == f"{key}=REDACTED"


@pytest.mark.parametrize("key", ["generate.max_new_tokens", "maxNewTokens", "min_tokens", "model.tokenizer", "tokens",
                                 "trainer.keep_checkpoints", "keep", "sort_keys", "num_keys", "keyword", "hotkey",
                                 "monkey", "author", "authority_score", "data.path", "test_path", "patience",
                                 "pattern", "compat"])
def test_harmless_key_names(key):
    assert not secrets.is_secret_key(key)


@pytest.mark.parametrize("url,clean", [
    ("https://:abcTOKEN123@host/x", "https://:REDACTED@host/x"),
    ("https://0123456789abcdef0123456789abcdef01234567@github.com/x", "https://REDACTED@github.com/x"),
    ("https://host/x?token=abc123&api_key=zzz&page=2", "https://host/x?token=REDACTED&api_key=REDACTED&page=2"),
    ("https://host/x?page=2&hfToken=abc", "https://host/x?page=2&hfToken=REDACTED"),
    ("postgresql://optuna:hunter2@db/optuna", "postgresql://optuna:REDACTED@db/optuna"),
    # kept: a plain user, harmless query parameters
    ("ssh://git@github.com/x.git", "ssh://git@github.com/x.git"),
    ("https://huggingface.co/datasets/x?revision=main&split=train", "https://huggingface.co/datasets/x?revision=main"
                                                                     "&split=train"),
])
def test_urls_lose_their_tokens(url, clean):
    assert secrets.redact_text(url) == clean
    assert secrets.redact({"tags": [url], "overrides": [f"tags=[{url}]"]}) == \
        {"tags": [clean], "overrides": [f"tags=[{clean}]"]}


def test_a_secret_read_from_the_environment_is_refused_before_the_run(nlpexp, monkeypatch, tmp_path):
    monkeypatch.setenv("MYSVC_PASSWORD", "hunter2")
    res = nlpexp("model=doc2vec", "+smoke=true", "tags=['${oc.env:MYSVC_PASSWORD}']")
    line = one_line(res)
    assert "tags[0]=${oc.env:MYSVC_PASSWORD}" in line and "hunter2" not in res.err + res.out
    assert not res.run_dirs()
