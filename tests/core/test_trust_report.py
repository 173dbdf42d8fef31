"""Runs you can trust, round 2: secrets are redacted by their shape as well as by their key, in every file a run
or a report writes; report.html's links can never run script; a full disk under --out is one line and no truncated
report; bad LoRA modules, an empty Doc2Vec vocabulary and an unknown NLPEXP_PROGRESS are one line, not a traceback."""
import errno
import json
import logging
import os
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from nlpexp import secrets
from nlpexp.report import tables as report

OPENAI = "sk-proj-Xq3vT9LmB2wZr7Ke5NpYc1HdG8sFj4Ua6Qo0IiEt"
RANDOM = "ZfPHcjb_M8ibrw_NqjqvsmmhthpzH832x9Q"  # a generated key under a harmless key name
KEEP = ["0123456789abcdef0123456789abcdef01234567",  # a git commit
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",  # a sha256 digest
        "4f1c8e2b-9a7d-4e3f-8c6b-5a4d3e2f1a0b", "sentence-transformers/all-MiniLM-L6-v2",
        "nreimers/MiniLMv2-L6-H384-distilled-from-RoBERTa-Large", "/work/main/outputs/2024-01-01/12-00-00/multirun",
        "2024-01-01T12:00:00.123456+00:00", "AutoModelForSequenceClassification", "risk-assessment", "max_new_tokens"]


def one_line(res) -> str:
    lines = [line for line in res.err.strip().splitlines() if line.strip()]
    assert res.code == 2, res.err[-2000:]
    assert "Traceback" not in res.err and len(lines) == 1, res.err[-2000:]
    return lines[0]


# -- 1. secrets ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [OPENAI, "sk-" + "a1B2c3D4e5F6g7H8i9J0k1L2", "hf_aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3x",
                                   "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8", "gho_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6",
                                   "github_pat_11ABCDEFG0123456789_abcdefGHIJKLmnopqrstUVWXYZ0123",
                                   "xoxb-1234567890-abcdefghij", "xoxp-1234567890-abcdefghij", "AKIAIOSFODNN7EXAMPLE",
                                   RANDOM, "q8Vx2LmZ+9aBcD3eF/gH4iJ5kL6mN7oP8qR9sT0uVwXy=="])
def test_secret_shaped_values_are_redacted_under_any_key(value):
    assert secrets.redact_text(f"+hydra.job.env_set.MY_SERVICE={value} next") == \
        "+hydra.job.env_set.MY_SERVICE=REDACTED next"
    assert secrets.redact({"endpoint": [f"x={value}"], "n": 3}) == {"endpoint": ["x=REDACTED"], "n": 3}


@pytest.mark.parametrize("value", KEEP)
def test_commits_digests_ids_paths_and_words_are_kept(value):
    assert secrets.redact_text(value) == value
    assert secrets.redact({"v": value, "o": [f"model.pretrained={value}"]}) == {"v": value,
                                                                              "o": [f"model.pretrained={value}"]}


def test_new_secret_key_words():
    for key in ("MY_SERVICE_CREDENTIAL", "gcp.credentials", "auth", "x.bearer", "+ssh.private_key", "passphrase"):
        assert secrets.is_secret_key(key), key
    for key in ("author", "authority_score", "model.tokenizer", "generate.max_new_tokens", "keep_checkpoints"):
        assert not secrets.is_secret_key(key), key


def test_a_job_log_file_gets_no_secret(tmp_path):
    log = tmp_path / "nlpexp.log"
    log.write_text(f"started with {OPENAI}\n")
    handler = logging.FileHandler(log)
    logging.getLogger().addHandler(handler)
    try:
        secrets.redact_hydra_files(tmp_path)
        logging.getLogger("nlpexp.test").warning("called with %s", RANDOM)
        handler.flush()
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    text = log.read_text()
    assert OPENAI not in text and RANDOM not in text and text.count("REDACTED") == 2


def test_a_sweep_saves_no_secret_shaped_value(nlpexp, tmp_path):
    sweep = tmp_path / "sweep"
    res = nlpexp("-m", "task=posenc", "+smoke=true", f"hydra.sweep.dir={sweep}", "seed=1",
                 f"+hydra.job.env_set.MY_SERVICE_CREDENTIAL={OPENAI}", f"+hydra.job.env_set.SERVICE={OPENAI}",
                 f"+x.endpoint={RANDOM}")
    assert res.code == 0, res.err[-2000:]
    files = [p for p in sweep.rglob("*") if p.is_file()]
    assert {"multirun.yaml", "hydra.yaml", "config.yaml", "metrics.json"} <= {p.name for p in files}
    assert [p for p in files if OPENAI.encode() in p.read_bytes() or RANDOM.encode() in p.read_bytes()] == []
    saved = yaml.safe_load((sweep / "multirun.yaml").read_text())
    assert saved["hydra"]["job"]["env_set"] == {"MY_SERVICE_CREDENTIAL": "REDACTED", "SERVICE": "REDACTED"}
    assert "+x.endpoint=REDACTED" in json.loads((sweep / "0" / "metrics.json").read_text())["overrides"]


# -- 2. report.html links ------------------------------------------------------------------------------------------
def fake_run(folder: Path, metrics: dict, overrides=("model=minilm",), status="complete"):
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    (folder / "metrics.json").write_text(json.dumps({"status": status, "task": "finsent", "model": "minilm",
                                                     "metrics": metrics, "wall_time_s": 1.0, "tags": []}))


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.hrefs += [v for k, v in attrs if k in ("href", "src") and not v.startswith("data:image/png;base64,")]


def test_report_links_are_relative_and_never_a_scheme(tmp_path):
    root = tmp_path / "sweep"
    fake_run(root / "javascript:alert(14);%2F%2F", {"val_accuracy": 0.5}, ["model=minilm", "seed=1"])
    fake_run(root / "<img src=x onerror=alert(1)>", {"val_accuracy": 0.6, "<b>m</b>": 1.0},
             ["model=minilm", "seed=<script>alert(2)</script>"], status='x" onmouseover="alert(3)')
    (root / "javascript:alert(14);%2F%2F" / "a&b:c.png").write_bytes(b"\x89PNG" + b"0" * (3_000_000))  # linked
    report.write_report(root)
    page = (root / "report.html").read_text()
    parsed = Links()
    parsed.feed(page)
    assert parsed.hrefs and all(h.startswith("./") and ":" not in h.split("/")[1] for h in parsed.hrefs), parsed.hrefs
    assert "./javascript%3Aalert%2814%29%3B%252F%252F/" in parsed.hrefs
    assert "./javascript%3Aalert%2814%29%3B%252F%252F/a%26b%3Ac.png" in parsed.hrefs
    assert "<script>alert" not in page and "<img src=x" not in page and "<b>m</b>" not in page
    assert 'onmouseover="' not in page
    assert parsed.tags.count("script") == 1  # the sorter only


def test_report_redacts_secrets_an_old_run_saved(tmp_path, capsys):
    root = tmp_path / "old"
    fake_run(root / "0", {"val_accuracy": 0.5}, ["model=minilm", f"+x.endpoint={RANDOM}"], status="failed")
    fake_run(root / "1", {"val_accuracy": 0.6}, ["model=minilm", f"+x.api_key={OPENAI}"])
    report.main([str(root)])
    assert OPENAI not in capsys.readouterr().out
    written = [p for p in root.glob("report*") if p.is_file()]
    assert {"report.html", "report.md", "report.csv"} <= {p.name for p in written}
    assert [p for p in written if OPENAI.encode() in p.read_bytes() or RANDOM.encode() in p.read_bytes()] == []


def test_a_metrics_json_that_is_not_an_object_reports_as_unreadable(tmp_path, capsys):
    fake_run(tmp_path / "0", {"val_accuracy": 0.5}, ["model=minilm"])
    (tmp_path / "0" / "metrics.json").write_text("[1, 2]")
    report.main([str(tmp_path)])
    assert "unreadable metrics.json" in (tmp_path / "report.md").read_text()


def test_a_sweep_job_with_a_secret_is_recognised_when_the_sweep_runs_again(tmp_path):
    from nlpexp import runs

    job = ["seed=1", f"+x.api_key={OPENAI}", f"+x.endpoint={RANDOM}"]
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "complete", "overrides": secrets.redact(job)}))
    assert runs.earlier_job(tmp_path, job)[0] == "complete"  # saved redacted, compared redacted
    assert runs.earlier_job(tmp_path, ["seed=2", *job[1:]])[0] == "other"


def test_a_copied_run_is_named_by_where_it_is_and_a_mistyped_metric_is_refused(tmp_path, capsys):
    fake_run(tmp_path / "a", {"val_accuracy": 0.5})
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())
    (tmp_path / "a" / "metrics.json").write_text(json.dumps({**saved, "run_dir": "/elsewhere/old"}))
    import shutil

    shutil.copytree(tmp_path / "a", tmp_path / "b")
    report.main([str(tmp_path)])
    table = (tmp_path / "report.md").read_text()
    assert "| a " in table and "| b " in table and "/elsewhere/old" not in table
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        report.main([str(tmp_path), "--metrics", "val_acc"])
    assert stop.value.code == 2
    assert "--metrics val_acc: no run below" in capsys.readouterr().err


# -- 3. a full disk under --out ------------------------------------------------------------------------------------
def test_report_to_a_full_disk_is_one_line_and_no_truncated_file(tmp_path, capsys):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    out = tmp_path / "full"
    out.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(out)], capture_output=True).returncode:
        pytest.skip("mount -t tmpfs is not permitted here")
    try:
        root = tmp_path / "sweep"
        for i in range(12):
            fake_run(root / str(i), {"val_accuracy": 0.5 + i / 100, "test_accuracy": 0.4},
                     ["model=minilm", f"seed={i}"])
        with pytest.raises(SystemExit) as exit_:
            report.main([str(root), "--out", str(out)])
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert exit_.value.code == 2 and len(err) == 1, err
        assert err[0].startswith(f"nlpexp-report: error: cannot write {out}/report") and "No space left" in err[0]
        left = sorted(p.name for p in out.iterdir())
        assert not [n for n in left if ".tmp" in n], left  # no temp file stays
        assert "report.html" not in left
        if "report.csv" in left:  # what was written is whole
            assert (out / "report.csv").read_text().count("\n") == 13
    finally:
        subprocess.run(["umount", str(out)], capture_output=True)


def test_a_report_file_that_cannot_be_written_keeps_the_earlier_one(tmp_path, monkeypatch, capsys):
    root = tmp_path / "sweep"
    fake_run(root / "0", {"val_accuracy": 0.5})
    (root / "report.html").write_text("the earlier report")
    real = Path.write_text

    def full(self, data, *args, **kwargs):
        if self.suffix == ".html":
            real(self, data[:10], *args, **kwargs)  # half written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(SystemExit) as exit_:
        report.main([str(root)])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == \
        f"nlpexp-report: error: cannot write {root}/report.html: No space left on device"
    assert (root / "report.html").read_text() == "the earlier report"
    assert not list(root.glob(".report*"))


# -- 4. tracebacks that are one line -------------------------------------------------------------------------------
def test_lora_on_layers_the_model_lacks_names_the_ones_it_has(nlpexp, tmp_path):
    run = tmp_path / "lora"
    line = one_line(nlpexp("task=finsent", "model=minilm", "+smoke=true", "model.lora.r=4",
                           "model.lora.target_modules=[no_such_layer]", f"hydra.run.dir={run}"))
    assert line.startswith("nlpexp: error: model.lora.target_modules=[no_such_layer]: ")
    assert "query, key, value, dense" in line
    assert not run.exists()  # the folder this run made is taken away


def test_doc2vec_with_no_word_min_count_times_is_one_line(nlpexp, tmp_path):
    line = one_line(nlpexp("task=finsent", "model=doc2vec", "+smoke=true", "model.min_count=100000",
                           f"hydra.run.dir={tmp_path / 'd2v'}"))
    assert "no word occurs model.min_count=100000 times" in line and "lower model.min_count" in line
    pairs = tmp_path / "numbers.csv"
    pairs.write_text("text_1,text_2,label\n" + "".join(f"{1000 + 4 * i},{1001 + 4 * i},{i % 2}\n" for i in range(40)))
    line = one_line(nlpexp("task=embedding", "model=doc2vec", "+smoke=true", f"data.path={pairs}",
                           f"hydra.run.dir={tmp_path / 'emb'}"))
    assert "no word occurs model.min_count=2 times" in line and "none more often than 1 times" in line


def test_an_unknown_progress_style_is_refused_before_the_run(nlpexp, tmp_path, monkeypatch):
    from nlpexp.report import console

    monkeypatch.setenv("NLPEXP_PROGRESS", "fancy")
    run = tmp_path / "run"
    line = one_line(nlpexp("task=posenc", "+smoke=true", f"hydra.run.dir={run}"))
    assert line == ("nlpexp: error: NLPEXP_PROGRESS=fancy is not a progress style: use bar|plain|off, or unset it "
                    "(a bar on a terminal, plain lines elsewhere)")
    assert not run.exists()
    monkeypatch.setenv("NLPEXP_PROGRESS", " Plain ")
    assert console.style() == "plain" and console.progress_error() is None
