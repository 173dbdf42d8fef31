"""Where a run's numbers come from: its metrics.json `provenance`, what a reviewer needs to trust or redo the run.

- data.sources: every data file the run read, {path: sha256} (the resolved path; a packaged sample as
  `embedded:<name>`), and every hub dataset, {`<hub id>` or `<hub id>:<config>`: the commit it was read at}. The
  readers feed it, so no wing records a read of its own: readers.read_text and readers.read_parquet (every data file
  of every wing, mode=predict's and mode=apply's input included) call record_file, hub.hub_dataset calls
  record_source. A file is hashed once per process (sha256: in 1 MiB chunks, remembered while the file is
  unchanged), at the time it is read.
- data.splits: per split, the sha256 of its item ids (ids_sha256: order-free), recorded by each wing where it makes
  its splits (record_splits) and again where an evaluation scores a part of them. An item's id is what identifies
  it in the sources: classify, a row's line in its file (for a hub dataset, its row number in the hub split, from
  1); embedding, the pair's two texts (its synthetic negatives have no line); story, the story's five sentences
  (story_key: stories keep no line once read); novel, a window's start in the encoded text.
- data.dataset: what published dataset the data is (name, subset), when the recipe's result says so ("dataset").
- code: the commit of the nlpexp checkout, whether its tracked files differ from it (`dirty`), the sha256 of that
  difference and the difference itself, in the run folder's code.diff (secrets redacted; the sha256 is of the file
  as saved). Not a git checkout (a pip install): commit null, and the installed `version`. Read when the run starts
  (code_state: the code that runs), never failing it: what git cannot say is null.
- environment: Python and the main libraries' versions, CUDA and cuDNN as torch was built with them, the GPU when
  one was used, the CPU and whether it computes bf16 natively (precision and speed depend on both), and
  packages_sha256: the sha256 of every installed distribution's `name==version`, sorted, one a line (computed once
  per process): equal hashes, the same installed packages.
- models: every hub model the run loaded, {id: {revision asked, commit}} (hub.LOADED).

run.py clears the record when a job starts (`clear`: a sweep worker runs several jobs in one process) and writes
`collect`'s dict.
"""
import functools
import hashlib
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

SOURCES: dict = {}  # file path or hub dataset -> sha256 or commit, read by this job
SPLITS: dict = {}  # split -> sha256 of its item ids
DIFF_FILE = "code.diff"
LIBRARIES = ("torch", "transformers", "datasets", "tokenizers", "accelerate", "gensim", "scikit-learn", "hydra-core",
             "numpy")


def clear() -> None:
    """A new job: nothing read yet."""
    SOURCES.clear()
    SPLITS.clear()


_HASHED: dict = {}  # (path, size, mtime_ns, inode) -> sha256 of files this process hashed or wrote


def sha256(path: Path, sync: bool = False) -> str:
    """The file's sha256 (remembered while it is unchanged); `sync`: fsync it too (a save, before its rename)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.absolute()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key in _HASHED and not sync:
        return _HASHED[key]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
        if sync:
            try:
                os.fsync(handle.fileno())
            except OSError:
                pass
    _HASHED[key] = digest.hexdigest()
    return _HASHED[key]


# -- data -------------------------------------------------------------------------------------------------
def source_key(path) -> str:
    """How a file is named in data.sources: `embedded:<name>` for a sample nlpexp ships (the same on every
    machine), else its resolved path."""
    path = Path(str(path)).expanduser().resolve()
    packaged = Path(__file__).resolve().parent / "resources"
    return f"embedded:{path.relative_to(packaged).as_posix()}" if path.is_relative_to(packaged) else str(path)


def record_file(path) -> None:
    """A data file the run read: its sha256 under source_key."""
    try:
        SOURCES[source_key(path)] = sha256(Path(str(path)).expanduser())
    except OSError:  # gone or unreadable since it was read: the record says so, the run goes on
        SOURCES[source_key(path)] = None


def record_source(key: str, value) -> None:
    """A source that is no file (a hub dataset: its commit)."""
    SOURCES[str(key)] = value


def ids_sha256(ids) -> str:
    """The sha256 of a split's item ids, whatever their order (the same items shuffled otherwise hash alike):
    integer ids (a pandas column, a NumPy array, a torch tensor) as their sorted int64 bytes, any other ids (texts)
    as their sorted JSON strings, one a line."""
    import numpy as np

    if hasattr(ids, "detach"):  # a torch tensor
        ids = ids.detach().cpu().numpy()
    if getattr(getattr(ids, "dtype", None), "kind", "") in ("i", "u"):
        values = np.sort(np.asarray(ids, dtype=np.int64).ravel())
        return hashlib.sha256(b"int64\n" + values.tobytes()).hexdigest()
    lines = sorted(json.dumps(str(v), ensure_ascii=False) for v in ids)
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def record_splits(splits: dict, add: bool = False) -> None:
    """{split: item ids} of the data the run's numbers come from; replaces what was recorded (an evaluation records
    the part it scores, over the splits its loader recorded), unless `add` (a further set scored, e.g. eval_on)."""
    if not add:
        SPLITS.clear()
    SPLITS.update({str(name): ids_sha256(ids) for name, ids in splits.items()})


# -- code -------------------------------------------------------------------------------------------------
def code_state(package: Path | None = None) -> dict:
    """{commit, dirty, diff (the text of `git diff HEAD`), version} of the nlpexp that runs (`package`: its folder).
    It counts as a checkout only when git tracks its __init__.py (an install into a virtual environment inside
    some other repository is no checkout of nlpexp). Never raises: what cannot be read is None."""
    folder = Path(package or Path(__file__).resolve().parent)

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "--no-pager", *args], cwd=folder, capture_output=True, text=True,
                              encoding="utf-8", errors="replace", timeout=10)

    state = {"commit": None, "dirty": None, "diff": None, "version": _version("nlpexp")}
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0 or git("ls-files", "--error-unmatch", "--", "__init__.py").returncode != 0:
            return state
        diff = git("-c", "core.quotepath=off", "diff", "--no-color", "--no-ext-diff", "HEAD")
        state["commit"] = head.stdout.strip()
        if diff.returncode == 0:
            state["dirty"], state["diff"] = bool(diff.stdout), diff.stdout
    except (OSError, subprocess.SubprocessError):
        pass
    return state


def commit_label(state: dict | None) -> str | None:
    """The commit as one string, `-dirty` appended when the tracked files differ from it (the running status)."""
    if not state or not state["commit"]:
        return None
    return state["commit"] + ("-dirty" if state["dirty"] else "")


def code_record(state: dict | None, run_dir: Path) -> dict:
    """metrics.json's `code`: the diff of a dirty checkout saved (redacted) as code.diff in `run_dir`, its sha256."""
    from nlpexp.secrets import redact_text

    state = state or code_state()
    record = {"commit": state["commit"], "dirty": state["dirty"], "diff_sha256": None, "diff": None,
              "version": state["version"]}
    if state["dirty"] and state["diff"]:
        text = redact_text(state["diff"])
        try:
            (Path(run_dir) / DIFF_FILE).write_text(text, encoding="utf-8")
            record["diff"] = DIFF_FILE
        except OSError:  # the run is done and recorded: a diff that cannot be saved is only missing
            pass
        record["diff_sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return record


# -- environment ------------------------------------------------------------------------------------------
def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def packages_sha256() -> str | None:
    """sha256 of `name==version` of every installed distribution, sorted, one a line (names normalized)."""
    lines = set()
    try:
        for dist in metadata.distributions():
            name = dist.metadata.get("Name")
            if name:
                lines.add(f"{name.lower().replace('_', '-').replace('.', '-')}=={dist.version}")
    except Exception:  # noqa: BLE001 -- a damaged package's metadata: no hash rather than a failed run
        return None
    return hashlib.sha256("\n".join(sorted(lines)).encode("utf-8")).hexdigest()


def environment() -> dict:
    """What the run ran on (see the module's doc); a library that is not installed is left out."""
    from nlpexp.training.precision import cpu_has_native_bf16, cpu_name

    env = {"python": platform.python_version(),
           **{name: v for name in LIBRARIES if (v := _version(name)) is not None}}
    try:
        import torch

        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        if torch.cuda.is_initialized():  # the run used a GPU (asking otherwise would start CUDA)
            env["gpu"] = torch.cuda.get_device_name()
    except Exception:  # noqa: BLE001 -- a broken CUDA install: the record says less, the run stands
        pass
    env.update(cpu=cpu_name(), native_bf16=cpu_has_native_bf16(), packages_sha256=packages_sha256(),
               os=f"{platform.system()} {platform.release()}")
    return env


# -- the record -------------------------------------------------------------------------------------------
def collect(run_dir: Path, code: dict | None, dataset: dict | None = None, models: dict | None = None) -> dict:
    """metrics.json's `provenance` for the job that just ran (`code`: code_state at its start; `models`: hub.LOADED's
    models)."""
    data = {"sources": dict(SOURCES), "splits": dict(SPLITS)}
    if dataset:
        data["dataset"] = dataset
    record = {"data": data, "code": code_record(code, run_dir), "environment": environment()}
    if models:
        record["models"] = {name: dict(pin) for name, pin in models.items()}
    return record
