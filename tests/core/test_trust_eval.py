"""Runs you can trust, round 3: UTF-16/32 files are decoded, NUL bytes without a BOM refused; secrets under
camelCase / run-together / short names, in URLs' users and query parameters, and read through ${oc.env:...}."""
import codecs
import re

import pytest

from nlpexp import secrets
from nlpexp.errors import UserError
from refusals import one_line  # tests/ is on sys.path


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


# -- UTF-16 / UTF-32 data files -----------------------------------------------------------------------------------
CSV = "text,label\n" + "".join(f"Profit rose {i}% in Zürich,positive\nSales fell {i}%,negative\n" for i in range(5))


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be-bom", "utf-32", "utf-32-be-bom", "utf-8-sig"])
def test_wide_encodings_with_a_bom_are_decoded(tmp_path, encoding):
    from nlpexp.inputs.readers import read_labelled_file, text_file_error

    boms = {"utf-16-be-bom": codecs.BOM_UTF16_BE, "utf-32-be-bom": codecs.BOM_UTF32_BE}
    raw = boms[encoding] + CSV.encode(encoding[:9]) if encoding in boms else CSV.encode(encoding)
    path = tmp_path / "data.csv"
    path.write_bytes(raw)
    assert text_file_error(path) is None
    frame = read_labelled_file(path)
    assert list(frame.columns[:2]) == ["text", "label"]
    assert frame["text"].iloc[0] == "Profit rose 0% in Zürich" and frame["label"].iloc[-1] == "negative"


@pytest.mark.parametrize("raw,needle", [
    (CSV.encode("utf-16-le"), "looks binary, not text (NUL bytes: if it is UTF-16 text without its byte-order mark"),
    (CSV.encode("utf-16") + b"\x00", "starts with a UTF-16 byte-order mark but is not valid UTF-16"),
    (codecs.BOM_UTF16_LE + "é".encode("utf-16-le") + b"\x00\xd8" + b"a\x00", "is not valid UTF-16"),
])
def test_wide_text_that_does_not_decode_is_refused(tmp_path, raw, needle):
    from nlpexp.inputs.readers import read_labelled_file

    path = tmp_path / "data.csv"
    path.write_bytes(raw)
    with pytest.raises(UserError, match=re.escape(needle)):
        read_labelled_file(path)
