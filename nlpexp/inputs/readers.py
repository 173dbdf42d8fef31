"""Local files into DataFrames, with errors that name the file and line.

Every data file of every wing is read through `read_text`: one decoding (UTF-8, else latin-1 with a note; a UTF-8
file with a stray non-UTF-8 line is refused, naming the line) and one refusal of what is not text (a folder, a FIFO
or device, an empty file, binary bytes), so no reader trains on replacement characters or waits forever. Every file
read (read_text, read_parquet) is recorded with its sha256 for the run's metrics.json (nlpexp/provenance.py).
"""
from __future__ import annotations

import codecs
import contextlib
import csv
import os
import re
import stat
import sys
from importlib import resources
from io import BytesIO, StringIO
from pathlib import Path
from typing import TYPE_CHECKING

from nlpexp import provenance
from nlpexp.errors import UserError, disk_full

if TYPE_CHECKING:  # pandas is imported by the readers that build frames: the pre-run checks stay light
    import pandas as pd

# known names, tried before the values are looked at (pick_columns)
TEXT_COLUMNS = ("text", "sentence", "review", "content", "Text", "document", "body", "tweet")
LABEL_COLUMNS = ("label", "sentiment", "emotion", "Emotion", "gold_label", "labels", "class", "category", "target")


def resource_path(name: str) -> Path:
    return Path(str(resources.files("nlpexp") / "resources" / name))


SNIFF_BYTES = 1 << 16  # how much of a file the binary and empty checks read
CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")  # control characters, tab and line breaks aside
UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# byte-order marks of the wide encodings, UTF-32 first (its little-endian BOM starts with UTF-16's: FF FE 00 00)
WIDE_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF16_LE, "utf-16"),
             (codecs.BOM_UTF16_BE, "utf-16"))


def wide_encoding(raw: bytes) -> str | None:
    """utf-32 / utf-16 when `raw` starts with that encoding's byte-order mark (Excel's "Unicode text" export is
    UTF-16 with FF FE), else None."""
    return next((name for bom, name in WIDE_BOMS if raw.startswith(bom)), None)


def decode_bytes(raw: bytes, name=None) -> str:
    """UTF-8 (a BOM dropped; UTF-16 or UTF-32 when it starts with its BOM, refused when it then does not decode)
    when it decodes, else latin-1 (the original
    PhraseBank encoding), which never fails and never inserts replacement characters; with `name`, the
    latin-1 fallback is noted on stderr (a cp1252 or GBK file read as latin-1 shows as odd characters).
    A file that is UTF-8 but for some lines (its other non-ASCII lines are valid UTF-8) is refused, naming the
    first such line: read as latin-1, every valid row would be garbled."""
    wide = wide_encoding(raw)
    if wide:  # the BOM says which: never guessed as latin-1 (every other byte a NUL)
        try:
            return raw.decode(wide)
        except UnicodeDecodeError as err:
            raise UserError(f"{name or 'the file'} starts with a {wide.upper()} byte-order mark but is not valid "
                            f"{wide.upper()} (at byte {err.start}): save the file again, as UTF-8") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        mixed = mixed_encoding_error(raw, name)
        if mixed:
            raise UserError(mixed) from None
        if name is not None:
            print(f"nlpexp: note: {name} is not UTF-8; read as latin-1", file=sys.stderr)
        return raw.decode("latin-1")


def mixed_encoding_error(raw: bytes, name=None) -> str | None:
    """`<name> line N is not UTF-8 (byte 0xe9 at column C) though its other lines are: ...` when some lines with
    non-ASCII bytes decode as UTF-8 and others do not; None for a file wholly in one 8-bit encoding."""
    bad = None
    utf8_lines = 0
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        if line.isascii():
            continue
        try:
            line.decode("utf-8-sig" if lineno == 1 else "utf-8")
            utf8_lines += 1
        except UnicodeDecodeError as err:
            bad = bad or (lineno, line[err.start], err.start + 1)
        if bad and utf8_lines:
            lineno, byte, column = bad
            return (f"{name or 'the file'} line {lineno} is not UTF-8 (byte {byte:#04x} at column {column}), though "
                    "its other lines are: save the file as UTF-8")
    return None


def looks_binary(head: bytes) -> bool:
    """NUL bytes, or more than 10% control characters, in the start of a file: an archive, a checkpoint, a pickle,
    not text to train on (UTF-16 with its BOM is text)."""
    if wide_encoding(head):
        return False
    if b"\x00" in head:
        return True
    try:  # incremental: a character cut at the end of the sample is not an error
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(head)
    except UnicodeDecodeError:
        text = head.decode("latin-1")
    return len(CONTROL.findall(text)) > 0.1 * len(text)


SPECIAL_FILES = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                 (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def special_file_error(path) -> str | None:
    """`<path> is a FIFO (named pipe), not a regular file` (or a device, a socket): what the user names as a file is
    refused before anything opens it (opening a FIFO waits for a writer forever; /dev/stdin is a pipe or a
    terminal). Only stat is called: it never blocks. None for a regular file, a folder or a missing path."""
    try:
        mode = os.stat(Path(path).expanduser()).st_mode
    except (OSError, ValueError):
        return None
    kind = next((name for test, name in SPECIAL_FILES if test(mode)), None)
    return f"{path} is {kind}, not a regular file" if kind else None


def check_regular(path) -> None:
    """special_file_error as a UserError: call it before opening any file the user named."""
    problem = special_file_error(path)
    if problem:
        raise UserError(problem)


def not_a_file_error(path: Path) -> str | None:
    """`<path> is a folder, not a file`, or a FIFO/device/socket (special_file_error); None for a regular file."""
    return f"{path} is a folder, not a file" if path.is_dir() else special_file_error(path)


def text_file_error(path) -> str | None:
    """Why `path` cannot be a text data file (a folder, a FIFO/device/socket, empty, binary), in one line; None
    when it can. Reads only the first 64 KiB, so the pre-run check calls it too."""
    path = Path(path)
    problem = not_a_file_error(path)
    if problem:
        return problem
    with path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if not head.strip():
        return f"{path} is empty"
    if looks_binary(head):
        hint = " (NUL bytes: if it is UTF-16 text without its byte-order mark, save it as UTF-8)" \
            if b"\x00" in head else ""
        return f"{path} looks binary, not text{hint}"
    return None


def read_text(path) -> str:
    """The text of a data file: refused in one line when it is no text file (text_file_error), else decoded
    by decode_bytes (latin-1 noted on stderr)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"data file not found: {path}")
    problem = text_file_error(path)
    if problem:
        raise UserError(problem)
    text = decode_bytes(path.read_bytes(), path)
    provenance.record_file(path)  # the run's metrics.json names every data file it read, with its sha256
    return text


def read_frame(path, fmt: str) -> tuple[pd.DataFrame, int]:
    """A csv/tsv/jsonl file (through read_text) as a DataFrame (csv/tsv: every cell a string, empty cells
    ""), and the file line of its first row."""
    import pandas as pd

    text = read_text(path)
    try:
        if fmt == "jsonl":
            return pd.read_json(StringIO(text), lines=True, dtype=False), 1
        sep = "\t" if fmt == "tsv" else delimiter(text[:SNIFF_BYTES])
        duplicate_header_error(text[:SNIFF_BYTES], sep, path)
        # as UTF-8 bytes: a StringIO holds 4 bytes a character (a 100 MB file would take 400 MB more while parsed)
        return pd.read_csv(BytesIO(text.encode("utf-8")), sep=sep, dtype=str,
                           keep_default_na=False, encoding="utf-8"), 2
    except (ValueError, pd.errors.ParserError, csv.Error) as err:
        raise UserError(f"{path}: malformed {fmt}: {str(err).strip().splitlines()[0]}") from None


def delimiter(head: str) -> str:
    """A delimited file's separator, from its header line: the one of , ; | and tab it holds most (a comma when it
    holds none), so `text;label` (a common export) reads as two columns."""
    header = head.split("\n", 1)[0]
    counts = {sep: header.count(sep) for sep in (",", ";", "\t", "|")}
    best = max(counts, key=counts.get)
    return best if counts[best] > counts[","] else ","


def duplicate_header_error(text: str, sep: str, path) -> None:
    """A header naming one column twice is refused (pandas would rename the second `text.1`, and the first would be
    read without a word). `text`: the start of the file is enough (the header is its first row)."""
    header = next(csv.reader(StringIO(text), delimiter=sep), [])
    seen: dict[str, int] = {}
    for number, name in enumerate(header, start=1):
        if name.strip() and name in seen:
            raise UserError(f"{path}: the header names column '{name}' twice (columns {seen[name]} and {number}): "
                            "rename one")
        seen.setdefault(name, number)


def read_phrasebank(path: Path) -> pd.DataFrame:
    """Financial PhraseBank: one `sentence@label` per line; the sentence itself may contain '@'."""
    import pandas as pd

    rows = []
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
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
    if Path(path).is_dir():  # its name cannot tell a format: say what is wrong instead
        raise UserError(f"{path} is a folder, not a file")
    suffix = Path(path).suffix.lower()
    if suffix == ".txt" and Path(path).is_file():  # `sentence@label` lines, or a delimited table named .txt
        with Path(path).open("rb") as handle:
            first = decode_bytes(handle.readline(SNIFF_BYTES).strip().rstrip(b"\r"))
        return "phrasebank" if "@" in first or not any(sep in first for sep in (",", ";", "\t", "|")) else "csv"
    formats = {".txt": "phrasebank", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl",
               ".parquet": "parquet", ".pq": "parquet"}
    if suffix not in formats:
        raise UserError(f"{path}: cannot tell the format from '{suffix}'; set data.format=csv|tsv|jsonl|parquet|"
                        "phrasebank")
    return formats[suffix]


PARQUET_MAGIC = b"PAR1"


def is_parquet(path, fmt="auto") -> bool:
    """data.format=parquet, or a .parquet/.pq name: binary by design, so the text checks do not apply to it."""
    return fmt == "parquet" or (fmt in (None, "auto") and Path(str(path)).suffix.lower() in (".parquet", ".pq"))


def parquet_file_error(path) -> str | None:
    """Why `path` cannot be a Parquet file (a folder, a special file, not starting and ending with PAR1)."""
    path = Path(path)
    problem = not_a_file_error(path)
    if problem:
        return problem
    with path.open("rb") as handle:
        head = handle.read(4)
        handle.seek(0, os.SEEK_END)
        if handle.tell() < 12:
            return f"{path} is not a Parquet file (too short)"
        handle.seek(-4, os.SEEK_END)
        tail = handle.read(4)
    return None if head == tail == PARQUET_MAGIC else f"{path} is not a Parquet file (no PAR1 marks)"


def read_parquet(path) -> pd.DataFrame:
    """A Parquet file as a DataFrame (Arrow: no code runs on load); its rows are numbered from 1."""
    import pandas as pd

    problem = parquet_file_error(path)
    if problem:
        raise UserError(problem)
    try:
        frame = pd.read_parquet(path)
    except Exception as err:  # pyarrow's errors have no common base beyond its own ArrowException
        raise UserError(f"{path}: malformed parquet: {str(err).strip().splitlines()[0]}") from None
    provenance.record_file(path)
    return frame


PAIR_COLUMNS = (("sentence1", "sentence2"), ("premise", "hypothesis"), ("text_a", "text_b"),
                ("question1", "question2"), ("text", "text_pair"), ("question", "sentence"))


def pick_column(columns, wanted, candidates, what, path):
    """The text or label column: `wanted` (data.text_column / data.label_column), else the first candidate."""
    found = ", ".join(map(str, columns)) or "none"
    if wanted:
        if wanted not in columns:
            raise UserError(f"{path}: no {what} column '{wanted}' (columns: {found})")
        return wanted
    for name in candidates:
        if name in columns:
            return name
    raise UserError(f"{path}: no {what} column found (columns: {found}); set data.{what}_column=<name>")


def _is_list(value) -> bool:
    return isinstance(value, (list, tuple)) or type(value).__name__ == "ndarray"


def _missing(value) -> bool:
    """A JSON null or a Parquet/pandas NaN: no label (not the label "None" or "nan")."""
    return value is None or (isinstance(value, float) and value != value)


def _looks_like_labels(values) -> bool:
    """Few distinct values against the rows (at most half of them, and at most 1,000), or lists (multi-label)."""
    values = list(values)
    if values and all(_is_list(v) for v in values):
        return True
    distinct = len({str(v).strip() for v in values})
    return distinct <= max(2, min(1000, len(values) // 2))


def _mean_length(values) -> float:
    values = [v for v in values if isinstance(v, str)]
    return sum(map(len, values)) / len(values) if values else 0.0


def pick_columns(frame, text_column=None, label_column=None, pair_column=None, path="the data") -> tuple:
    """(text column, second text column or None, label column) of `frame`. Given names win; then known names
    (a known pair such as sentence1/sentence2 when no text column is given); then, for what is left, the values
    decide when only one answer is possible: the label is the one column with few distinct values (or lists), the
    text the one column of free text (or the string column whose mean length is at least twice every other's).
    Anything else: one line listing the columns and naming the keys to set."""
    columns = [str(c) for c in frame.columns]
    shown = ", ".join(columns) or "none"
    for key, name in (("text_column", text_column), ("label_column", label_column),
                      ("text_pair_column", pair_column)):
        if name and name not in columns:
            raise UserError(f"{path}: no column '{name}' for data.{key} (columns: {shown})")
    text, pair, label = text_column, pair_column, label_column
    if not text and not pair:
        known = next(((a, b) for a, b in PAIR_COLUMNS if a in columns and b in columns and a != label and
                      b != label), None)
        if known:
            text, pair = known
    label = label or next((c for c in LABEL_COLUMNS if c in columns and c not in (text, pair)), None)
    text = text or next((c for c in TEXT_COLUMNS if c in columns and c not in (label, pair)), None)
    rest = [c for c in columns if c not in (text, pair, label)]
    if label is None:
        found = [c for c in rest if _looks_like_labels(frame[c])]
        if len(found) != 1:
            why = "no column looks like labels" if not found else f"{', '.join(found)} all could be"
            raise UserError(f"{path}: cannot tell which column is the label ({why}; columns: {shown}); set "
                            "data.label_column=<name>")
        label = found[0]
        rest.remove(label)
    if text is None:
        strings = [c for c in rest if frame[c].map(lambda v: isinstance(v, str)).all()]
        lengths = sorted(((_mean_length(frame[c]), c) for c in strings), reverse=True)
        if not lengths or (len(lengths) > 1 and lengths[0][0] < 2 * lengths[1][0]):
            why = "no column of text" if not lengths else f"{', '.join(c for _, c in lengths)} all could be"
            raise UserError(f"{path}: cannot tell which column is the text ({why}; columns: {shown}); set "
                            "data.text_column=<name>")
        text = lengths[0][1]
    return text, pair, label


def read_table(path: Path, fmt: str, text_column=None, label_column=None, pair_column=None) -> pd.DataFrame:
    """CSV/TSV/JSONL/Parquet into columns text, [text_pair], label, line (the file line, for error messages)."""
    path = Path(path)
    frame, first_line = (read_parquet(path), 1) if fmt == "parquet" else read_frame(path, fmt)
    return labelled_frame(frame, first_line, text_column, label_column, pair_column, path)


def labelled_frame(frame, first_line: int, text_column, label_column, pair_column, origin) -> pd.DataFrame:
    """A table's text, [text_pair] and label columns (pick_columns) as columns text, [text_pair], label, line.
    Labels stay as they are (a JSONL, Parquet or hub list stays a list: multi-label)."""
    import pandas as pd

    if frame.empty:
        raise UserError(f"{origin}: no data rows (columns: {', '.join(map(str, frame.columns)) or 'none'})")
    frame.columns = [str(c) for c in frame.columns]
    text_col, pair_col, label_col = pick_columns(frame, text_column, label_column, pair_column, origin)
    gold = frame[label_col].map(lambda v: list(v) if _is_list(v) else "" if _missing(v) else str(v).strip())
    out = pd.DataFrame({"text": frame[text_col].astype(str).to_numpy(), "label": gold.to_numpy(),
                        "line": range(first_line, first_line + len(frame))})
    if pair_col:
        out.insert(1, "text_pair", frame[pair_col].astype(str).to_numpy())
    out.attrs["columns"] = {"text": text_col, "text_pair": pair_col, "label": label_col}  # for metrics.json
    return out


def read_labelled_file(path, fmt="auto", text_column=None, label_column=None, pair_column=None) -> pd.DataFrame:
    path = Path(str(path)).expanduser()
    if not path.exists():
        raise UserError(f"data file not found: {path}")
    fmt = detect_format(path) if fmt in (None, "auto") else fmt
    if fmt == "phrasebank":
        return read_phrasebank(path)
    if fmt == "clue":
        return read_clue(path)
    return read_table(path, fmt, text_column, label_column, pair_column)


def read_clue(path: Path) -> pd.DataFrame:
    """CLUE's JSON lines: `sentence` (or a `sentence1`/`sentence2` pair, joined by [SEP]), `label`, optional
    `label_des`. Columns text, label (label_des when the row has one, else the label id), label_id, line."""
    import json

    import pandas as pd

    rows = []
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
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


def read_texts(path, columns=TEXT_COLUMNS, column=None, pair_column=None) -> list:
    """Texts to predict on or embed (input=...): a .txt file (one per line) or a csv/tsv/jsonl/parquet with one of
    `columns` (or `column`, data.text_column), read like the training data; a file without any text is refused.
    With `pair_column` (a sentence-pair run's data.text_pair_column): (text, text_pair) tuples."""
    path = Path(str(path)).expanduser()
    if path.suffix.lower() == ".txt":
        texts = [line.strip() for line in read_text(path).splitlines() if line.strip()]
    else:
        fmt = detect_format(path)
        frame = read_parquet(path) if fmt == "parquet" else read_frame(path, fmt)[0]
        frame.columns = [str(c) for c in frame.columns]
        found = ", ".join(frame.columns) or "none"
        for name in (column, pair_column):
            if name and name not in frame.columns:
                raise UserError(f"{path}: no column '{name}' (columns: {found})")
        column = column or next((c for c in columns if c in frame.columns), None)
        if column is None:
            raise UserError(f"{path}: no text column (columns: {found}); name it one of {', '.join(columns)}, or "
                            "set data.text_column=<name>")
        texts = [str(t) for t in frame[column]]
        if pair_column:
            texts = list(zip(texts, (str(t) for t in frame[pair_column])))
    if not texts:
        raise UserError(f"{path}: no texts in it")
    return texts


def _remove_stale_outputs(final: Path) -> None:
    """The hidden temporary files a killed earlier write of `final` left (their process is gone)."""
    for stale in final.parent.glob(f".{final.name}.*.tmp"):
        pid = stale.name[len(final.name) + 2:-4]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                stale.unlink()
        except OSError:
            pass


@contextlib.contextmanager
def atomic_output(target, mode: str = "w"):
    """An output file the user named (output=...), written whole or not at all: the handle writes a hidden
    temporary file in the same folder, renamed over `target` once complete (a symlink's target is replaced, not
    the link). A full disk or any other OSError while writing: the temporary file is removed, whatever `target`
    held is untouched, and one line names `target` (not the last file the run wrote)."""
    target = Path(str(target)).expanduser()
    final = target.resolve()
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    text = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
    try:
        with open(tmp, mode, **text) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        _remove_stale_outputs(final)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if disk_full(err):
            raise UserError(f"no space left on device while writing {target}: nothing written (free some space, "
                            "or give output= on another disk)") from None
        if isinstance(err, OSError):
            raise UserError(f"cannot write {target}: {err.strerror or err}") from None
        raise
