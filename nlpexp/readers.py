"""Local files into DataFrames, with errors that name the file and line."""
from importlib import resources
from pathlib import Path

import pandas as pd

from nlpexp.errors import UserError

TEXT_COLUMNS = ("text", "sentence", "review", "content", "Text")
LABEL_COLUMNS = ("label", "sentiment", "emotion", "Emotion", "gold_label")


def resource_path(name: str) -> Path:
    return Path(str(resources.files("nlpexp") / "resources" / name))


def decode_bytes(raw: bytes) -> str:
    """UTF-8 (with or without BOM) when it decodes, else latin-1 (the original PhraseBank encoding)."""
    if raw.startswith(b"\xef\xbb\xbf"):
        return raw[3:].decode("utf-8")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_phrasebank(path: Path) -> pd.DataFrame:
    """Financial PhraseBank: one `sentence@label` per line; the sentence itself may contain '@'."""
    rows = []
    for lineno, line in enumerate(decode_bytes(Path(path).read_bytes()).splitlines(), start=1):
        if not line.strip():
            continue
        if "@" not in line:
            raise UserError(f"{path} line {lineno}: expected 'sentence@label', got {line[:60]!r}")
        text, label = line.rsplit("@", 1)
        rows.append((text.strip(), label.strip(), lineno))
    if not rows:
        raise UserError(f"{path}: no data lines")
    return pd.DataFrame(rows, columns=["text", "label", "line"])


def detect_format(path: Path) -> str:
    suffix = Path(path).suffix.lower()
    formats = {".txt": "phrasebank", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}
    if suffix not in formats:
        raise UserError(f"{path}: cannot tell the format from '{suffix}'; set data.format=csv|tsv|jsonl|phrasebank")
    return formats[suffix]


def _pick(columns, wanted, candidates, what, path):
    if wanted:
        if wanted not in columns:
            raise UserError(f"{path}: no {what} column '{wanted}' (columns: {', '.join(map(str, columns))})")
        return wanted
    for name in candidates:
        if name in columns:
            return name
    raise UserError(f"{path}: no {what} column found (columns: {', '.join(map(str, columns))}); "
                    f"set data.{what}_column=<name>")


def read_table(path: Path, fmt: str, text_column=None, label_column=None) -> pd.DataFrame:
    """CSV/TSV/JSONL into columns text, label, line (the file line, for error messages)."""
    path = Path(path)
    try:
        if fmt == "jsonl":
            frame = pd.read_json(path, lines=True, dtype=False)
            first_line = 1
        else:
            frame = pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", dtype=str, keep_default_na=False,
                                encoding_errors="replace")
            first_line = 2
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: malformed {fmt}: {str(err).strip().splitlines()[0]}") from None
    if frame.empty:
        raise UserError(f"{path}: no data rows")
    text_col = _pick(frame.columns, text_column, TEXT_COLUMNS, "text", path)
    label_col = _pick(frame.columns, label_column, LABEL_COLUMNS, "label", path)
    out = pd.DataFrame({"text": frame[text_col].astype(str), "label": frame[label_col].astype(str).str.strip(),
                        "line": range(first_line, first_line + len(frame))})
    return out


def read_labelled_file(path, fmt="auto", text_column=None, label_column=None) -> pd.DataFrame:
    path = Path(str(path)).expanduser()
    if not path.is_file():
        raise UserError(f"data file not found: {path}")
    fmt = detect_format(path) if fmt in (None, "auto") else fmt
    if fmt == "phrasebank":
        return read_phrasebank(path)
    if fmt == "clue":
        return read_clue(path)
    return read_table(path, fmt, text_column, label_column)


def read_clue(path: Path) -> pd.DataFrame:
    """CLUE's JSON lines: `sentence` (or a `sentence1`/`sentence2` pair, joined by [SEP]), `label`, optional
    `label_des`. Columns text, label (label_des when the row has one, else the label id), label_id, line."""
    import json

    rows = []
    for lineno, line in enumerate(decode_bytes(Path(path).read_bytes()).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path} line {lineno}: not a JSON object ({err.msg})") from None
        if not isinstance(row, dict) or "label" not in row:
            raise UserError(f"{path} line {lineno}: no 'label' field (CLUE rows need sentence + label)")
        if "sentence" in row:
            text = str(row["sentence"])
        elif "sentence1" in row and "sentence2" in row:
            text = f"{row['sentence1']} [SEP] {row['sentence2']}"
        else:
            raise UserError(f"{path} line {lineno}: no 'sentence' (or 'sentence1' + 'sentence2') field")
        label_id = str(row["label"]).strip()
        rows.append((text, str(row.get("label_des") or label_id).strip(), label_id, lineno))
    if not rows:
        raise UserError(f"{path}: no data lines")
    return pd.DataFrame(rows, columns=["text", "label", "label_id", "line"])
