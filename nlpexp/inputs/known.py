"""Which public dataset a run read, so that its scores can be set beside published ones (nlpexp/report/baselines.py).

A local file is known by its name and confirmed by its content: the sha256 of a public copy, else its count of
non-empty lines (the same lines re-encoded, e.g. PhraseBank's latin-1 file saved as UTF-8, hash differently but
count the same). A file named like a public one whose content differs (cut, edited) keeps the name and subset with
`differs` saying how, and meets no published number. A hub dataset is known by its id and configuration (the run
records the hub commit beside it). Anything else is the user's own data: no entry, never an error.

A detection is {"name", "subset", "confirmed_by"[, "differs"]}; the (name, subset) pairs are the ones the
baselines.yaml files use.
"""
import hashlib
import re
from pathlib import Path

# A file: a pattern for its name (or "folder/name"), lowercased -> the dataset, its subset, the non-empty lines of the
# public file, and the sha256 of the public copies we know. Hashes are of public files, never the data itself.
FILES = (
    # Financial PhraseBank v1.0 (Malo et al. 2014): one file per annotator agreement level, nested subsets
    (r"sentences_50agree\.txt", "financial_phrasebank", "sentences_50agree", 4846, {
        "13388b8bf2f878c68fb4d47564fa0072756eb4e9ba4a16467d6d7f0a29a6a742",   # the release's latin-1 file
        "62bfa1a67f7b476a7e67fda3213d8d7f6890f5aaccdbc747c7555b94fc6cd171"}),  # the same lines, UTF-8 BOM + CRLF
    (r"sentences_66agree\.txt", "financial_phrasebank", "sentences_66agree", 4217, {
        "6fcda6c07b5731fa075c81372413c921f95057b89ed611be0b2d1620ac94ac09"}),
    (r"sentences_75agree\.txt", "financial_phrasebank", "sentences_75agree", 3453, {
        "8aa3210c6fc324ec2f5bd903f7767543280525cd88bb6cbed5d39b33f01a4f05"}),
    (r"sentences_allagree\.txt", "financial_phrasebank", "sentences_allagree", 2264, {
        "b3cb762d2eb8c8fe50d6d53ac073afbd217dd01e4c6e04167ac9b8de9e42d3ca"}),  # converted to UTF-8 by its uploader
    # ChnSentiCorp hotel reviews, SophonPlus's single-file version (7,766 rows and a header)
    (r"chnsenticorp_htl_all\.csv", "chnsenticorp", "htl_all", 7767, {
        "1d414b9c65caf3a836abdb4efded621968502ad3338e1a9d885ae131c86083f0"}),
    # CLUE's public files (JSON lines; the test files carry no labels): the folder names the task
    (r"tnews[^/]*/train\.json", "clue", "tnews", 53360, set()),
    (r"tnews[^/]*/dev\.json", "clue", "tnews", 10000, set()),
    (r"iflytek[^/]*/train\.json", "clue", "iflytek", 12133, set()),
    (r"iflytek[^/]*/dev\.json", "clue", "iflytek", 2599, set()),
    # ROCStories (Mostafazadeh et al. 2016): Diffusion-LM's 5,000 held-out stories, one JSON array per line; the
    # Story Cloze Test v1.5 (2018) validation stories with their right ending (1,571 rows and a header)
    (r"roc_valid\.json", "rocstories", "diffusion_lm_valid", 5000, {
        "04a9ee6abf9f820aedece2aee16a7b6b1547bf050c4146c86c341b65ac964f37"}),
    (r"rocstories_cloze_val_right_endings\.csv", "rocstories", "story_cloze_2018_val", 1572, {
        "5f4cf63d0bddbc48b482644bf06a6a83c28d6771d73806e87a79d08edf0d74df"}),
)

# A hub dataset: its id, lowercased -> the dataset, and its subset: fixed, or (None) the configuration asked for
# (`default` when none is).
HUB = {
    "financial_phrasebank": ("financial_phrasebank", None),
    "takala/financial_phrasebank": ("financial_phrasebank", None),
    "atrost/financial_phrasebank": ("financial_phrasebank", "sentences_50agree"),  # 50Agree, split 3,100/776/970
    "emotion": ("dair-ai/emotion", None),
    "dair-ai/emotion": ("dair-ai/emotion", None),
    "clue": ("clue", None),
    "clue/clue": ("clue", None),
    "mintujupally/rocstories": ("rocstories", "mintujupally"),
}
DEFAULT_CONFIG = {"dair-ai/emotion": "split"}  # the configuration a hub id loads when none is given
PHRASEBANK_LEVELS = {"sentences_50agree", "sentences_66agree", "sentences_75agree", "sentences_allagree"}
# ChnSentiCorp as ERNIE's task data has it (hotel, book and computer reviews): 1,200 validation and 1,200 test
ERNIE_CHNSENTICORP = {"validation": 1200, "test": 1200}

# every (name, subset) a detection can report: the baselines.yaml files may name only these
DATASETS = ({(name, subset) for _, name, subset, _, _ in FILES}
            | {("financial_phrasebank", level) for level in PHRASEBANK_LEVELS}
            | {("dair-ai/emotion", "split"), ("dair-ai/emotion", "unsplit"), ("clue", "tnews"), ("clue", "iflytek"),
               ("chnsenticorp", "ernie"), ("rocstories", "mintujupally")})


def of_file(path) -> dict | None:
    """The public dataset a local file is named as, confirmed by its content; when the content is not the public
    file's, confirmed_by is None and `differs` says how (no published number holds for it). None when the name is
    no known one."""
    path = Path(str(path)).expanduser()
    key = "/".join(path.parts[-2:]).lower()
    for pattern, name, subset, lines, hashes in FILES:
        if not re.search(rf"(^|/){pattern}$", key) or not path.is_file():
            continue
        raw = path.read_bytes()
        if hashlib.sha256(raw).hexdigest() in hashes:
            return {"name": name, "subset": subset, "confirmed_by": "sha256"}
        found = sum(1 for line in raw.splitlines() if line.strip())
        if found == lines:
            return {"name": name, "subset": subset, "confirmed_by": "line count"}
        return {"name": name, "subset": subset, "confirmed_by": None,
                "differs": f"{found:,} non-empty lines; the public file has {lines:,}"}
    return None


def of_hub(hub_id, config=None, sizes: dict | None = None) -> dict | None:
    """The public dataset a hub id and configuration are; `sizes` ({split: rows} as read) tells ChnSentiCorp
    copies apart. None for any other id, or a configuration no published number is for."""
    hub_id = str(hub_id).strip().lower()
    if hub_id.rsplit("/", 1)[-1] == "chnsenticorp":  # copies under many namespaces
        if all((sizes or {}).get(split) == rows for split, rows in ERNIE_CHNSENTICORP.items()):
            return {"name": "chnsenticorp", "subset": "ernie", "confirmed_by": "hub id and split sizes"}
        return None
    if hub_id not in HUB:
        return None
    name, subset = HUB[hub_id]
    subset = subset or str(config or DEFAULT_CONFIG.get(name, "default")).lower()
    if (name, subset) not in DATASETS:
        return None
    return {"name": name, "subset": subset, "confirmed_by": "hub id"}


def of_data(data, sizes: dict | None = None) -> dict | None:
    """The public dataset a run's data.* options read (data.path: its first file; the hub; an embedded sample is
    ours: None)."""
    if data.get("path"):
        path = data.path if isinstance(data.path, (str, Path)) else list(data.path)[0]
        return of_file(path)
    if data.get("source") == "hub" and data.get("hub_id"):
        return of_hub(data.hub_id, data.get("hub_config"), sizes)
    return None
