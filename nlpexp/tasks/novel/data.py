"""Plain prose for next-character models: clean-up, a character vocabulary, sliding windows split by position.

The text is cut into train | validation | test by position (in that order), and windows are made inside each
part only, so no window or target crosses a split boundary: held-out numbers never see training text.
"""
import itertools
import json
import re
import unicodedata
from pathlib import Path

from nlpexp import provenance
from nlpexp.inputs.readers import read_text, resource_path
from nlpexp.errors import UserError

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TAG = re.compile(r"<[^>]{0,200}>")
BREAK_TAG = re.compile(r"</p\s*>|<br\s*/?>", re.IGNORECASE)
CHAPTER_HEADING = re.compile(r"^\s*第[零〇一二三四五六七八九十百千两0-9]+[回章节卷](?:[：:\s]|$)")
# after NFKC (which folds full-width ASCII to half-width) these go back to the full-width forms Chinese prose uses
TO_FULL_WIDTH = str.maketrans({",": "，", "!": "！", "?": "？", ":": "：", ";": "；", "(": "（", ")": "）"})


def clean_text(raw: str, drop_headings: bool = False, punctuation: str = "full", line_sep: str = "\n") -> str:
    """Markup stripped, whitespace and punctuation width normalised, empty lines (and optionally headings) dropped."""
    text = BREAK_TAG.sub("\n", raw.replace("\r\n", "\n").replace("\r", "\n"))
    text = TAG.sub("", text)
    if punctuation in ("full", "half"):
        text = unicodedata.normalize("NFKC", text)
        if punctuation == "full":
            text = text.translate(TO_FULL_WIDTH)
    lines = []
    for line in text.split("\n"):
        line = re.sub(r"\s+", " ", line).strip()
        if not line or (drop_headings and CHAPTER_HEADING.match(line)):
            continue
        lines.append(line)
    return line_sep.join(lines)


def read_sources(data) -> tuple[str, str]:
    """(raw text, origin) from data.path (a file, a folder of .txt, or a list of them) or the embedded sample."""
    if not data.get("path"):
        return read_text(resource_path(data.embedded)), f"embedded sample {data.embedded}"
    paths = [data.path] if isinstance(data.path, (str, Path)) else list(data.path)
    files: list[Path] = []
    for item in paths:
        path = Path(str(item)).expanduser()
        if path.is_dir():
            found = sorted(path.rglob("*.txt"))
            if not found:
                raise UserError(f"{path}: folder holds no .txt files")
            files.extend(found)
        elif path.exists():  # a FIFO or device: refused in read_text, before it is opened
            files.append(path)
        else:
            raise UserError(f"data file not found: {path}")
    return "\n".join(read_text(f) for f in files), ", ".join(map(str, files))  # binary files refused there


class CharVocab:
    """Characters <-> ids; ids 0..4 are the BERT special tokens, unknown characters map to [UNK]."""

    kind = "chars"

    def __init__(self, tokens: list[str]):
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.unk_id = self.index["[UNK]"]
        self.pad_id = self.index["[PAD]"]
        self.cls_id = self.index["[CLS]"]
        self.special_ids = sorted(self.index[t] for t in SPECIAL_TOKENS if t in self.index)

    @classmethod
    def from_text(cls, text: str, min_freq: int = 1, max_size: int | None = None) -> "CharVocab":
        """Characters of `text` by falling frequency (ties by first appearance, so the order is deterministic)."""
        from collections import Counter

        counts = Counter(text)
        chars = [c for c, n in counts.most_common() if n >= min_freq and c not in SPECIAL_TOKENS]
        if max_size:
            chars = chars[:max(0, max_size - len(SPECIAL_TOKENS))]
        return cls(SPECIAL_TOKENS + chars)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        return [self.index.get(c, self.unk_id) for c in text]

    def decode(self, ids, skip_special: bool = True) -> str:
        special = set(self.special_ids) if skip_special else set()
        return "".join(self.tokens[i] for i in ids if i not in special)

    def save(self, folder: Path) -> None:
        """folder/vocab.json: the tokens in id order."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "vocab.json").write_text(json.dumps({"tokens": self.tokens}, ensure_ascii=False))

    @classmethod
    def load(cls, folder: Path) -> "CharVocab":
        return cls(json.loads((Path(folder) / "vocab.json").read_text(encoding="utf-8"))["tokens"])


class BPECodec:
    """A hub tokenizer behind the same calls as CharVocab (encode, decode, len, special ids, save)."""

    kind = "bpe"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.unk_id = tokenizer.unk_token_id
        self.special_ids = sorted(set(tokenizer.all_special_ids))

    def __len__(self) -> int:
        return len(self.tokenizer)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids, skip_special: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special)

    def save(self, folder: Path) -> None:
        self.tokenizer.save_pretrained(folder)

    @classmethod
    def load(cls, folder: Path) -> "BPECodec":
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(folder))


def split_by_position(n: int, fractions) -> list[tuple[int, int]]:
    """[start, end) character ranges of train, validation, test: consecutive, in text order."""
    cuts = [0]
    for f in fractions[:-1]:
        cuts.append(cuts[-1] + round(n * f))
    cuts.append(n)
    return list(itertools.pairwise(cuts))


def window_starts(start: int, end: int, seq_len: int, stride: int):
    """Starts s of windows ids[s:s+seq_len] whose target ids[s+seq_len] lies inside [start, end)."""
    import torch

    last = end - seq_len - 1  # the target s + seq_len must be < end
    if last < start:
        return torch.zeros(0, dtype=torch.long)
    return torch.arange(start, last + 1, stride, dtype=torch.long)


def gather_windows(ids, starts, seq_len: int):
    """(inputs (N, seq_len), next-step targets (N, seq_len)): targets are the inputs shifted by one."""
    import torch

    offsets = torch.arange(seq_len + 1)
    rows = ids[starts[:, None] + offsets[None, :]]
    return rows[:, :-1], rows[:, 1:]


def load_novel(data, seq_len: int, make_codec) -> dict:
    """Cleaned text, the codec made from the training part (`make_codec(train_text)`), window starts per split."""
    import torch

    raw, origin = read_sources(data)
    text = clean_text(raw, bool(data.drop_headings), str(data.punctuation), str(data.line_sep))
    if data.get("max_chars"):
        text = text[: int(data.max_chars)]
    if not text:
        raise UserError(f"{origin}: no text left after clean-up")
    ranges = split_by_position(len(text), list(data.split))
    codec = make_codec(text[ranges[0][0]:ranges[0][1]])
    # encoded part by part, so a tokenizer that merges characters (BPE) cannot straddle a split boundary
    parts = [codec.encode(text[lo:hi]) for lo, hi in ranges]
    bounds, pos = [], 0
    for part in parts:
        bounds.append((pos, pos + len(part)))
        pos += len(part)
    ids = torch.tensor([i for part in parts for i in part], dtype=torch.long)
    starts = {}
    for name, (lo, hi), stride, cap in zip(("train", "validation", "test"), bounds,
                                           (data.stride, data.eval_stride, data.eval_stride),
                                           (data.get("max_train_samples"), data.get("max_eval_samples"),
                                            data.get("max_eval_samples"))):
        s = window_starts(lo, hi, seq_len, int(stride))
        if cap:
            s = s[:: max(1, len(s) // int(cap))][: int(cap)]  # evenly spread, not just the beginning
        if len(s) == 0:
            raise UserError(f"{origin}: the {name} part ({hi - lo} tokens) is shorter than one window of "
                            f"{seq_len + 1}; use more text or a smaller task.seq_len")
        starts[name] = s
    provenance.record_splits(starts)  # an item: a window, by its start in the encoded text
    return {"text": text, "ids": ids, "codec": codec, "bounds": bounds, "starts": starts, "origin": origin}
