"""A run folder's whole life: claim and lock (one process at a time), state (running / complete / failed /
interrupted / unfinished), the files it may hold (no links, no special files; read bounded), the resume point (the
newest whole checkpoint) and the clean-up of unfinished saves; and every saved model folder or step checkpoint in
it written whole, with a manifest.

Manifest: Saved model folders and step checkpoints: written whole or not at all (write_dir, seal + place), and read back
with one line when damaged or edited (check_files, loading).

A run killed while it writes checkpoints/best (or a step checkpoint) must not leave a folder that looks complete:
write_dir writes into a temporary sibling and renames it into place only when everything is in it, with
saved_files.json listing every file as {"size": bytes, "sha256": hex}, computed (and each file fsynced) before the
rename. check_files (loading runs it first) reads that list: a file missing, of another size or with another
sha256 (an edited config.json, a tokenizer.json swapped for another model's) is one line naming the file. Entries
that are absolute, climb out of the folder (`..`) or name a link are refused without being opened or stat-ed.

Folders of earlier versions still load: a list of sizes only ({"name": bytes}) is checked for sizes. A saved
run's model folder (ckpt=<run>: checkpoints/best, checkpoints/final, an embedder or encoder folder) is loaded
with `require=True`: without saved_files.json it is refused (require_manifest), since nothing could then tell an
edited, swapped or missing file; every save (write_dir) writes it. A folder the user brings from elsewhere
(model.pretrained=<folder>) has none and is loaded without it (the library's own error, one line).
A file is hashed once per process (its hash is remembered by path, size, mtime and inode).
"""
import errno
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from nlpexp.errors import UserError, disk_full
from nlpexp.provenance import sha256  # noqa: F401 (the saves' and checks' file hash; runs.sha256 for callers)

MANIFEST = "saved_files.json"


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # a filesystem (or a folder on some) without fsync: the rename still orders what it can
        pass
    finally:
        os.close(fd)


def seal(folder) -> dict:
    """Write saved_files.json into `folder` (every file under it: size and sha256, each file fsynced): the last
    step before the folder is renamed into place. Returns the list."""
    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": sha256(p, sync=True)}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}
    (folder / MANIFEST).write_text(json.dumps(files, indent=1))
    _fsync(folder / MANIFEST)
    return files


def place(tmp, path) -> None:
    """Rename the sealed folder `tmp` to `path` (an existing folder is renamed aside, the new one renamed in, the
    old one removed) and make the rename durable."""
    tmp, path = Path(tmp), Path(path)
    old = path.with_name(f"{path.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    _fsync(path.parent)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def write_dir(path):
    """Yields a temporary sibling folder `<name>.tmp-<pid>` to write into; on success it gets its saved_files.json
    (seal) and replaces `path` (place); on error it is removed."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        seal(tmp)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if disk_full(err):  # the libraries' writers do not say which file: this folder is the one
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from err
        raise
    place(tmp, path)
    for stale in [*path.parent.glob(f"{path.name}.old-*"), *path.parent.glob(f"{path.name}.tmp-*")]:
        shutil.rmtree(stale, ignore_errors=True)  # what a killed earlier save left behind


def load_error(folder, err) -> UserError:
    """One line for a saved model that does not load (`err`: the exception, or the reason as text)."""
    if isinstance(err, str):
        reason = err
    else:
        text = str(err).strip()
        reason = f"{type(err).__name__}: {text.splitlines()[0][:160]}" if text else type(err).__name__
    return UserError(f"{folder}: cannot load the saved model ({reason}): the run's files are incomplete or damaged")


def _outside(name: str) -> bool:
    """An entry that is not a plain relative path inside the folder (absolute, `..`, a drive, empty)."""
    from pathlib import PurePosixPath, PureWindowsPath

    return (not name or name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute()
            or bool(PureWindowsPath(name).drive) or ".." in PurePosixPath(name.replace("\\", "/")).parts)


def damage(folder, hashes: bool = True) -> str | None:
    """Why the folder is not as saved_files.json lists it (None: it is, or there is no list). `hashes`: compare the
    sha256 of entries that have one (False: sizes only)."""
    folder = Path(folder)
    listed = folder / MANIFEST
    if listed.is_symlink():  # another folder's list would vouch for another folder's files
        return f"{MANIFEST} is a link, not a saved file"
    if not listed.is_file():
        return None
    try:
        entries = json.loads(listed.read_text())
        if not isinstance(entries, dict):
            return f"{MANIFEST} is not a list of files"
        for name, entry in entries.items():  # every name first: nothing outside the folder is ever stat-ed
            if not isinstance(name, str) or _outside(name):
                return f"{MANIFEST} names {str(name)[:80]!r}, a path outside the folder"
        for name, entry in entries.items():
            size, digest = (entry, None) if isinstance(entry, int) else (entry["size"], entry.get("sha256"))
            path = folder / name
            if path.is_symlink():
                return f"{name} is a link, not a saved file"
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != int(size):
                return f"{name} has {path.stat().st_size} bytes, {size} were written"
            if hashes and digest is not None and sha256(path) != digest:
                return f"{name} is not the file that was saved (its sha256 differs)"
    except (OSError, ValueError, AttributeError, TypeError, KeyError) as err:
        return f"{MANIFEST} is unreadable ({type(err).__name__})"
    return None


MISSING = (f"{MANIFEST} is missing: the list of the saved files with their sha256, written by every save, without "
           "which an edited or missing file cannot be told; train the run again")


def require_manifest(folder) -> None:
    """A saved run's model folder must hold saved_files.json (every save writes it): deleting it must not skip the
    sha256 check. Raises load_error's line naming it missing."""
    listed = Path(folder) / MANIFEST
    if not listed.is_file() and not listed.is_symlink():  # a link is damage(): named as such there
        raise load_error(folder, MISSING)


def check_files(folder, require: bool = False) -> None:
    """The files saved_files.json lists are there as they were written (size, and sha256 where listed); files
    beside the listed ones are ignored. `require`: a saved run's folder (ckpt=), refused without the list
    (require_manifest); else (a folder from elsewhere, written before the list existed) no list, no check.
    Raises load_error's line."""
    if require:
        require_manifest(folder)
    reason = damage(folder)
    if reason is not None:
        raise load_error(folder, reason)


def _damage_errors() -> tuple:
    """What a truncated or incomplete saved model raises: file and format errors (OSError, ValueError and
    json.JSONDecodeError, safetensors' SafetensorError), a missing settings key, weights that do not fit the model."""
    errors = [OSError, ValueError, KeyError, TypeError, RuntimeError]
    try:
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    except ImportError:
        pass
    return tuple(errors)


@contextmanager
def loading(folder, check: bool = True, require: bool = False):
    """Wrap the load of a saved run's model: check_files first (`check`; `require`: refused without saved_files.json,
    for a saved run's folder), then the damage errors become load_error's one line. UserErrors and running out of
    memory pass through unchanged."""
    if check:
        check_files(folder, require=require)
    try:
        yield
    except UserError:
        raise
    except _damage_errors() as err:
        if "OutOfMemoryError" in type(err).__name__ or "out of memory" in str(err):
            raise
        raise load_error(folder, err) from None


# -- the run folder: checkpoints and resume point, its files, its lock and state ------------------------------
STATE_FILES = ("trainer_state.json", "loop_state.json")  # the Trainer's and nlpexp.training.loop's, each written last
STAGING = ".staging"  # checkpoints/.staging/checkpoint-N: a Trainer step checkpoint being written (trainer.py)


def _step(folder: Path) -> int | None:
    tail = folder.name.split("-", 1)[-1]
    return int(tail) if folder.name.startswith("checkpoint-") and tail.isdigit() else None


def checkpoint_damage(folder: Path) -> str | None:
    """Why resume cannot start from this checkpoint-N folder (None: it can). Checkpoints are sealed: saved_files.json
    lists each file's size and sha256 (saved.seal, before the rename into place); every listed file must match.
    A checkpoint without that list was written by an earlier version (whose state file was its last write): it is
    taken when that state file is there and no file is empty."""

    folder = Path(folder)
    if (folder / MANIFEST).is_file():
        reason = damage(folder)
        if reason is not None:
            return reason
    else:
        try:
            empty = sorted(p.name for p in folder.iterdir() if p.is_file() and p.stat().st_size == 0)
        except OSError as err:
            return f"unreadable: {err.strerror or err}"
        if empty:
            return f"{empty[0]} is empty"
    if not any((folder / name).is_file() for name in STATE_FILES):
        return f"no {' or '.join(STATE_FILES)}"
    return None


def latest_checkpoint(run_dir: Path, skipped: list | None = None) -> Path | None:
    """The newest complete checkpoint in run_dir/checkpoints: a checkpoint-N folder (temporary names of a save in
    progress or killed never count) that checkpoint_damage finds whole, the Trainer's or nlpexp.training.loop's. Newer
    ones that are not whole are appended to `skipped` as (folder, why)."""
    found = [p for p in (Path(run_dir) / "checkpoints").glob("checkpoint-*") if _step(p) is not None and p.is_dir()]
    for folder in sorted(found, key=_step, reverse=True):
        why = checkpoint_damage(folder)
        if why is None:
            return folder
        if skipped is not None:
            skipped.append((folder, why))
    return None


def clear_unfinished_saves(run_dir: Path, incomplete=()) -> None:
    """Remove what killed saves left in run_dir/checkpoints: temporary folders (checkpoint-N.tmp-<pid>, .old-<pid>,
    .staging/) and the `incomplete` checkpoint-N folders (newer than the one resumed from: training writes them
    again)."""
    import shutil

    ckpts = Path(run_dir) / "checkpoints"
    left = [*ckpts.glob("checkpoint-*.tmp*"), *ckpts.glob("checkpoint-*.old-*"), ckpts / STAGING,
            *ckpts.glob(f"*/{STAGING}"), *incomplete]
    for folder in left:
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)


def resume_point(cfg, run_dir: Path):
    """cfg with `resume_from` set to the run's last complete checkpoint (None: nothing saved yet, train from the
    start). Newer incomplete ones are named in one line on stderr and removed, with the leftovers of killed saves."""
    import sys

    from omegaconf import open_dict

    from nlpexp.training import distributed

    skipped: list = []
    latest = latest_checkpoint(run_dir, skipped)
    main = distributed.is_main_process()  # torchrun: every rank finds the same one; rank 0 tidies and tells
    if main:
        clear_unfinished_saves(run_dir, [folder for folder, _ in skipped])
    with open_dict(cfg):
        cfg.resume_from = str(latest) if latest else None
    if skipped and main:
        (first, why), more = skipped[0], [f.name for f, _ in skipped[1:]]
        also = f" (and {', '.join(more)})" if more else ""
        then = f"resuming from {latest.name}" if latest else "no complete checkpoint: starting again from the beginning"
        print(f"nlpexp: {first.name} is incomplete ({why}){also}: {then}", file=sys.stderr)
    if latest:
        print(f"resuming from {latest}")
    else:
        print(f"no checkpoint in {Path(run_dir) / 'checkpoints'}: this run starts again from the beginning "
              "in the same folder")
    return cfg


def find_unfinished_run(cwd: Path, overrides: list[str]) -> Path:
    """`resume=true`: the run folder we are in, else the newest run under outputs/ without a complete
    metrics.json (matching task=/model= when given)."""

    if (cwd / ".hydra" / "overrides.yaml").exists():
        return cwd
    wanted = {k: v for k, _, v in (o.lstrip("+").partition("=") for o in overrides) if k in ("task", "model")}
    candidates = []
    for hydra_dir in (cwd / "outputs").rglob(".hydra"):
        run = hydra_dir.parent
        if run.parent.name in ("eval", "predict") or not (hydra_dir / "config.yaml").exists():
            continue
        if folder_state(run)[0] in ("complete", "running", "unreadable"):  # done, in use, or not ours to guess
            continue
        try:
            saved = load_run_file(hydra_dir / "config.yaml") or {}
        except (OSError, ValueError):  # a link, a FIFO, not YAML: not a run to guess
            continue
        names = {k: (saved.get(k) or {}) if isinstance(saved, dict) else None for k in ("task", "model")}
        if any(not isinstance(names[k], dict) or names[k].get("name") != v for k, v in wanted.items()):
            continue
        candidates.append(run)
    if not candidates:
        raise UserError(f"resume=true: no unfinished run under {cwd / 'outputs'}"
                        + (f" for {wanted}" if wanted else "") + "; pass resume=<run folder>")
    return max(candidates, key=lambda p: (p / ".hydra" / "config.yaml").stat().st_mtime)


# -- run folders are data: what we read of one is a regular file of bounded size, and no entry is a link ---------
RUN_FILE_LIMITS = {".json": 16 << 20, ".yaml": 1 << 20}  # metrics.json, .hydra/*.yaml; other files (.lock): 64 KiB
RUN_TREES = (".hydra", "checkpoints")  # walked whole; of the rest of a run folder only its own entries are looked at


class RunFileError(ValueError):
    """A run-folder file that is not read: a link, not a regular file, too large, not UTF-8, not parseable."""


def load_run_file(path, limit: int | None = None):
    """A file of a run folder, read safely: .json parsed with json, .yaml with yaml.safe_load, anything else as text.
    Refused (RunFileError, a ValueError, with the reason) without blocking or exhausting anything: a symbolic link,
    a FIFO/device/socket (opening a FIFO waits forever), more than `limit` bytes (RUN_FILE_LIMITS by suffix),
    nesting too deep for the parser (RecursionError), a YAML tag that names Python code. A missing file raises
    FileNotFoundError (an OSError)."""
    import stat

    path = Path(path)
    limit = limit if limit is not None else RUN_FILE_LIMITS.get(path.suffix, 64 << 10)
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        raise RunFileError(f"{path} is a symbolic link")
    if not stat.S_ISREG(mode):
        from nlpexp.inputs.readers import special_file_error

        raise RunFileError(special_file_error(path) or f"{path} is not a regular file")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # swapped since the lstat: still no link, no wait
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RunFileError(f"{path} is not a regular file")
        with os.fdopen(os.dup(fd), "rb") as handle:
            raw = handle.read(limit + 1)
    finally:
        os.close(fd)
    if len(raw) > limit:
        raise RunFileError(f"{path} is larger than {limit} bytes")
    try:
        text = raw.decode("utf-8")
        if path.suffix == ".json":
            import json

            return json.loads(text)
        if path.suffix in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text)
        return text
    except RecursionError:
        raise RunFileError(f"{path} nests too deeply to read") from None
    except ValueError as err:  # UnicodeDecodeError, json.JSONDecodeError
        raise RunFileError(f"{path} is unreadable ({type(err).__name__})") from None
    except Exception as err:  # noqa: BLE001 -- yaml.YAMLError (a !!python tag is a ConstructorError)
        if type(err).__module__.startswith("yaml"):
            raise RunFileError(f"{path} is unreadable ({str(err).strip().splitlines()[0][:120]})") from None
        raise


def _entry_error(path: Path, entry: os.DirEntry) -> str | None:
    if entry.is_symlink():
        return f"{path} is a symbolic link: a run folder holds no links; remove it"
    if not entry.is_dir(follow_symlinks=False) and not entry.is_file(follow_symlinks=False):
        from nlpexp.inputs.readers import special_file_error

        what = special_file_error(path) or f"{path} is not a regular file"
        return f"{what}: a run folder holds only files and folders; remove it"
    return None


def run_folder_error(folder: Path) -> str | None:
    """Why we may not write into (or read a saved run from) this run folder, in one line (None: we may). None of
    the paths we write or read may be a symbolic link (a .lock, metrics.json, .hydra/..., checkpoints/... or eval/
    link made training, Hydra or an eval write outside the run, and a linked model file loaded another run's) or a
    FIFO/device/socket (reads wait forever): every entry of the folder itself, and everything under .hydra/ and
    checkpoints/. The folder itself may be a link (hydra.run.dir=<link>, ckpt=<link>): it is resolved."""
    folder = Path(folder).expanduser()
    try:
        top = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return None  # nothing there yet (or not a folder: the caller says so)
    except OSError as err:
        return f"cannot read the run folder {folder}: {err.strerror or err}"
    pending = []
    for entry in top:
        problem = _entry_error(folder / entry.name, entry)
        if problem:
            return problem
        if entry.name in RUN_TREES and entry.is_dir(follow_symlinks=False):
            pending.append(folder / entry.name)
    while pending:
        current = pending.pop()
        try:
            entries = list(os.scandir(current))
        except OSError as err:
            return f"cannot read {current}: {err.strerror or err}"
        for entry in entries:
            problem = _entry_error(current / entry.name, entry)
            if problem:
                return problem
            if entry.is_dir(follow_symlinks=False):
                pending.append(current / entry.name)
    return None


def check_run_folder(folder: Path) -> None:
    """run_folder_error as a UserError (one line, before anything is written)."""
    problem = run_folder_error(folder)
    if problem:
        raise UserError(problem)


def ckpt_folders(cfg) -> list[Path]:
    """The saved runs a run reads (ckpt=<run> of eval/predict/generate, ckpt=[...] of a soup); none in training."""
    from omegaconf import OmegaConf

    ckpt = cfg.get("ckpt")
    if not ckpt or cfg.get("mode", "train") == "train":
        return []
    return [Path(str(c).strip("'\"")).expanduser() for c in (ckpt if OmegaConf.is_list(ckpt) else [ckpt])]


# -- run folders: one owner at a time (a lock), complete only when metrics.json says so -------------------------
LOCK = ".lock"
_HELD: dict[str, int] = {}  # folder -> fd of the lock this process holds (released by closing it)


def lock_owner(folder: Path) -> int | None:
    """pid of the live process holding folder's lock (this one included); None when nobody holds it. The lock is
    an flock: the kernel drops it when its process dies, so a stale lock file of a killed run is free."""
    import fcntl

    folder = Path(folder).resolve()
    if str(folder) in _HELD:
        return os.getpid()
    try:
        fd = os.open(folder / LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a link or a FIFO is nobody's lock
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return _recorded_pid(folder) or -1
    finally:
        os.close(fd)


def _recorded_pid(folder: Path) -> int | None:
    try:
        return int(load_run_file(Path(folder) / LOCK).split()[0])
    except (OSError, ValueError, IndexError):
        return None


def claim(folder: Path) -> None:
    """Take folder's lock for this process (making the folder): a second run into a live folder is refused."""
    import fcntl

    folder = Path(folder).resolve()
    if str(folder) in _HELD:
        return
    import errno
    import stat

    try:
        folder.mkdir(parents=True, exist_ok=True)
        # O_NOFOLLOW: a .lock linked to a file outside the run is refused, never truncated; O_NONBLOCK: nor a FIFO
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise UserError(f"{folder / LOCK} is a symbolic link: a run folder holds no links; remove it") from None
        raise UserError(f"cannot write the run folder {folder}: {err.strerror or err}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UserError(f"{folder / LOCK} is not a regular file: a run folder holds only files and folders; "
                        "remove it")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(f"{folder} is in use by a running nlpexp process (pid {_recorded_pid(folder) or '?'}): "
                        "wait for it or choose another folder") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _HELD[str(folder)] = fd


def release(folder: Path | None = None) -> None:
    """Let go of folder's lock (None: of every folder this process holds)."""
    for key in [str(Path(folder).resolve())] if folder is not None else list(_HELD):
        fd = _HELD.pop(key, None)
        if fd is not None:
            os.close(fd)


def read_metrics(folder: Path) -> dict | None:
    """folder's metrics.json as a dict (None: there is none); one that is torn, unreadable or not a JSON object
    reads as {"status": "unreadable"}."""
    path = Path(folder) / "metrics.json"
    if not os.path.lexists(path):
        return None
    try:
        found = load_run_file(path)  # a link, a FIFO, 100000 nested [: unreadable, never a hang or a traceback
    except (OSError, ValueError):
        found = None
    return found if isinstance(found, dict) else {"status": "unreadable"}


def folder_state(folder: Path) -> tuple[str, str]:
    """(state, why) of a run folder: complete | running (a live process holds it) | unfinished (its process is
    gone before metrics.json said complete) | failed | unreadable (a torn metrics.json) | empty (nothing of a run
    in it)."""
    folder = Path(folder)
    owner = lock_owner(folder)
    status = read_metrics(folder)
    state = (status or {}).get("status")
    if state == "complete":
        return "complete", "metrics.json says complete"
    if owner is not None:
        return "running", f"a running process (pid {owner}) is writing it"
    if state == "failed":
        return "failed", f"that run failed ({str(status.get('error', '?'))[:160]})"
    if state == "unreadable":
        return "unreadable", "its metrics.json is unreadable"
    # a lock without .hydra/overrides.yaml: killed before Hydra had written the run's settings (nothing to resume:
    # the folder is free for the same command again)
    if state is not None or (folder / LOCK).exists() and (folder / ".hydra" / "overrides.yaml").exists():
        pid = _recorded_pid(folder)
        return "unfinished", ("its process" + (f" (pid {pid})" if pid else "") +
                              " stopped before metrics.json said complete")
    return "empty", "no metrics.json"


def same_overrides(a: list[str], b: list[str]) -> bool:
    """Two lists of overrides set the same keys to the same values (`+smoke=true` and `+smoke=True` alike, in any
    order)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    def parsed(items):
        try:
            return sorted((o.get_key_element(), repr(o.value())) for o in OverridesParser.create().parse_overrides(
                list(items)))
        except Exception:  # noqa: BLE001 -- not Hydra's grammar: compare the text
            return sorted(items)

    return parsed(a) == parsed(b)


def earlier_job(folder: Path, overrides: list[str]) -> tuple[str | None, object]:
    """What a sweep job's folder holds from an earlier run of the same sweep (run again into its folder):
    (None, None) nothing of a job; ("complete", its metrics) a finished job with these overrides;
    ("resume", None) one with these overrides that stopped (killed, preempted, failed); ("other", why) another
    job's folder, or one in use. Overrides are compared as sets, from metrics.json (Hydra rewrites .hydra/)."""
    state, why = folder_state(folder)
    if state == "empty":
        return None, None
    if state in ("running", "unreadable"):
        return "other", f"{folder}: {why}"
    found = read_metrics(folder) or {}
    saved = found.get("overrides")
    if not isinstance(saved, list):  # None: a folder of a version that did not record them: run in place as before
        return None, None
    from nlpexp.secrets import redact

    if not same_overrides(saved, redact(list(overrides))):  # metrics.json keeps them with secrets redacted
        return "other", (f"{folder} holds another job ({' '.join(saved) or 'no overrides'}), not "
                         f"{' '.join(overrides) or 'no overrides'}")
    return ("complete", found) if state == "complete" else ("resume", None)


def writable_error(folder: Path) -> str | None:
    """Why a run folder could not be made at `folder` (None: it can): the nearest existing ancestor must be a
    writable folder."""
    path = Path(folder).expanduser().absolute()
    while not path.exists():
        path = path.parent
    if not path.is_dir():
        return f"cannot write the run folder {folder}: {path} is a file, not a folder"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"cannot write the run folder {folder}: {path} is not writable"
    return None


def is_run_folder(folder: Path) -> bool:
    """folder holds a run: Hydra's .hydra/overrides.yaml, or a metrics.json nlpexp wrote (an object with a status).
    A sweep's folder (multirun.yaml, its jobs in numbered folders) is not one."""
    folder = Path(folder)
    if (folder / ".hydra" / "overrides.yaml").is_file():
        return True
    found = read_metrics(folder)
    return found is not None and found.get("status") not in (None, "unreadable")


def enclosing_run(folder: Path) -> Path | None:
    """The run folder that folder would be inside of (its nearest ancestor that is one), else None."""
    path = Path(folder).expanduser().resolve()
    return next((p for p in path.parents if is_run_folder(p)), None)


# folders a run is never written into: the root, the home folder itself, the top folders of the file system, and
# the system's own trees (except their scratch and source folders, and a home folder inside one: /var/lib/jenkins)
SYSTEM_FOLDERS = ("/", "/home", "/Users", "/tmp", "/mnt", "/media", "/opt", "/srv", "/root", "/private",
                  "/private/tmp", "/Volumes")
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run", "/sbin",
                "/sys", "/usr", "/var", "/System", "/private/etc", "/private/var")
SYSTEM_TREE_EXCEPTIONS = ("/var/tmp", "/var/folders", "/private/var/tmp", "/private/var/folders", "/usr/src",
                          "/usr/local/src")


def system_folder_error(folder: Path) -> str | None:
    """Why a run folder may not be written at `folder` (None: it may): not the root, the home folder itself, a top
    folder of the file system, nor inside the system's trees (/etc, /usr, /var, ...)."""
    path = Path(folder).expanduser().resolve()
    home = Path.home().resolve()
    if path == home or str(path) in SYSTEM_FOLDERS:
        return (f"{folder} is {'your home folder' if path == home else 'a system folder'} ({path}): a run writes "
                "its own folder (.hydra/, metrics.json, checkpoints/): give a folder of its own, e.g. ./runs/run1")

    def under(tree: str) -> bool:
        return path == Path(tree) or Path(tree) in path.parents

    if any(under(t) for t in SYSTEM_TREES) and not any(under(t) for t in SYSTEM_TREE_EXCEPTIONS) \
            and not (home != Path("/") and home in path.parents):
        return (f"{folder} is inside a system folder ({path}): write runs below your project or home folder "
                "(or /tmp, /var/tmp)")
    return None


# -- before a run: the folder it goes into, a resume's saved overrides, a sweep's earlier jobs, ckpt= folders ------
def explicit_run_dir(args: list[str]) -> Path | None:
    given = [a.split("=", 1)[1].strip("'\"") for a in args if a.startswith("hydra.run.dir=")]
    return Path(given[-1]).expanduser() if given else None


def place_errors(folder: Path, key: str, inside: Path | None = None) -> None:
    """A run (or sweep) folder is never a system folder, nor inside another run's folder (an eval/predict/generate
    run inside its ckpt run: `inside`, as nlpexp itself places them), and can be made."""
    problem = system_folder_error(folder) or writable_error(folder)
    if problem:
        raise UserError(f"{key}={folder}: {problem}")
    outer = enclosing_run(folder)
    if key == "hydra.sweep.dir" and is_run_folder(folder):
        outer = Path(folder).expanduser().resolve()
    if outer is not None and (inside is None or outer != Path(inside).expanduser().resolve()):
        raise UserError(f"{key}={folder}: inside the run folder {outer}: a run folder never holds another run; "
                        "choose a folder outside it")


def folder_errors(folder: Path, resuming: bool, inside: Path | None = None) -> None:
    """hydra.run.dir=<folder>: refused when it is a system folder or inside another run (place_errors), when
    another run is writing it, or when it holds an unfinished run that only resume= may continue."""
    place_errors(folder, "hydra.run.dir", inside)
    check_run_folder(Path(folder).expanduser().resolve())  # Hydra and the run write into it: no links, no FIFOs
    state, why = folder_state(folder)
    if state == "running":
        raise UserError(f"{folder} is in use: {why}; wait for it or choose another folder")
    if state in ("unfinished", "unreadable") and not resuming:
        raise UserError(f"{folder} holds an unfinished run ({why}): resume={folder} continues it, or choose "
                        "another folder")


def replay_error(item: str, roots: list[Path]) -> str | None:
    """Why a line of a run folder's .hydra/overrides.yaml is not replayed on resume (None: it is). A run folder is
    data: nothing read from it may name code or a config outside the config search path. Only task settings: no
    Hydra setting, no @package into hydra, no interpolation (${oc.env:...}, a resolver), and a config group option
    is a plain name that exists in the search path (not `experiment=../../<anywhere>/evil`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from nlpexp.config.registry import climbing_option, is_group

    if item.lstrip("+~").startswith("hydra") or item.startswith("-") or "=" not in item:
        return "which is not a task setting"
    if "${" in item:
        return "an interpolation (${...} reads the environment or calls a resolver), which is not replayed"
    try:
        override = OverridesParser.create().parse_overrides([item])[0]
    except Exception:  # noqa: BLE001 -- Hydra's grammar error
        return "which is not an override Hydra reads"
    package = (override.package or "").removeprefix("_global_").lstrip(".")
    if package.split(".")[0] == "hydra":
        return f"which puts a config into Hydra's own settings (@{override.package})"
    group = override.key_or_group
    if not is_group(group, roots):
        return None
    if override.is_sweep_override():
        return "a sweep, which one run does not continue"
    value = override.value()
    for option in value if isinstance(value, list) else [value]:
        if option is None:
            continue
        if not isinstance(option, str) or climbing_option(option) or not option.strip():
            return f"whose {group} option is not a plain config name"
        if not any((r / group / f"{option}.yaml").is_file() for r in roots):
            return f"but there is no {group}/{option}.yaml in the config search path (./conf, --config-dir)"
    return None


def nlpexp_run_error(folder: Path) -> str | None:
    """Why folder is not an nlpexp run folder (None: it is): its .hydra/config.yaml names a task and a model
    nlpexp has, and its metrics.json (when there is one) is nlpexp's (an object with a status)."""
    from nlpexp.config import registry
    try:
        saved = load_run_file(folder / ".hydra" / "config.yaml")
    except (OSError, ValueError):
        return "no readable .hydra/config.yaml"
    task = (saved.get("task") or {}) if isinstance(saved, dict) else None
    model = (saved.get("model") or {}) if isinstance(saved, dict) else None
    if not isinstance(task, dict) or not isinstance(model, dict) or task.get("name") not in registry.TASKS \
            or not model.get("name"):
        return "its .hydra/config.yaml names no nlpexp task and model"
    try:
        metrics = load_run_file(folder / "metrics.json") if (folder / "metrics.json").exists() else {}
    except (OSError, ValueError):
        return None  # a torn metrics.json of a killed run: resumable
    if isinstance(metrics, dict) and (folder / "metrics.json").exists() and "status" not in metrics:
        return "its metrics.json has no status: another program wrote it"
    return None


def resume_args(args: list[str], notes: list[str]) -> list[str]:
    """`resume=<run folder>` (or `resume=true`: this folder, else the newest unfinished run under outputs/)
    becomes the saved run's own overrides + `hydra.run.dir=<that folder>`, so it continues in place. The folder
    is data, checked before anything of it is used: its overrides only task settings (replay_error), an nlpexp
    run, not finished, not in use, and the task and model of the command line (when given) its own."""
    value = next(a for a in args if a.startswith("resume="))
    target = value.split("=", 1)[1].strip("'\"")
    rest = [a for a in args if a != value]
    if target.lower() in ("", "null", "none", "false"):
        return rest
    if target.lower() in ("true", "1", "yes", "last"):
        folder = find_unfinished_run(Path.cwd(), rest)
    else:
        folder = Path(target).expanduser()
    folder = folder.resolve()  # a link to a run folder is that folder
    check_run_folder(folder)  # before anything of it is read: no links (.lock, checkpoints/...), no FIFOs
    saved = folder / ".hydra" / "overrides.yaml"
    if not saved.exists():
        raise UserError(f"resume={target}: {folder} is not a run folder (no .hydra/overrides.yaml inside)")
    try:
        before = load_run_file(saved) or []
    except (OSError, ValueError) as err:
        raise UserError(f"resume={target}: {saved} is not a list of overrides ({str(err).splitlines()[0]})") from None
    if not isinstance(before, list) or not all(isinstance(o, str) for o in before):
        raise UserError(f"resume={target}: {saved} is not a list of overrides")
    from nlpexp.config.registry import config_dir_args, config_roots

    rest_args, config_dir = config_dir_args(rest)
    roots = config_roots([a for a in rest_args if not a.startswith("-")], config_dir)
    for number, item in enumerate(before, 1):
        why = replay_error(item, roots)
        if why:  # Hydra's own settings (callbacks, launchers...) and configs from anywhere can name code to run
            raise UserError(f"resume={target}: {saved} line {number} holds {item!r}, {why}: only the task's own "
                            "settings are taken on resume (remove that line to continue)")
    not_ours = nlpexp_run_error(folder)
    if not_ours:
        raise UserError(f"resume={target}: {folder} is not an nlpexp run folder ({not_ours})")
    state, why = folder_state(folder)
    if state == "complete":
        raise UserError(f"resume={target}: {folder} already finished (metrics.json says complete)")
    if state == "running":
        raise UserError(f"resume={target}: {folder} is in use: {why}")
    if state == "unreadable":  # said once the pre-run check has passed
        notes.append(f"nlpexp: warning: {folder}: {why} (torn, or not nlpexp's): it is rewritten as the run goes on")
    saved_cfg = load_run_file(folder / ".hydra" / "config.yaml")  # read and checked by nlpexp_run_error
    for key in ("task", "model"):
        given = [a.split("=", 1)[1].strip("'\"") for a in rest if a.lstrip("+~").startswith(f"{key}=")]
        own = saved_cfg[key]["name"]
        if given and given[-1] != own:
            raise UserError(f"resume={target}: {folder} is a task={saved_cfg['task']['name']} "
                            f"model={saved_cfg['model']['name']} run, not {key}={given[-1]}: a resume continues "
                            f"the same run (drop {key}=), or start a new run without resume=")
    changed = {a.split("=", 1)[0].lstrip("+~") for a in rest if "=" in a}
    kept = set(before)
    before = [o for o in before if not o.lstrip("+~").startswith("resume=")
              and o.split("=", 1)[0].lstrip("+~") not in changed]  # a setting given again replaces the saved one
    extra = [a for a in rest if not a.startswith("hydra.run.dir=")]
    differ = [a for a in extra if not a.startswith(("hydra", "-")) and a not in kept]  # the same value: no change
    if differ:  # said once the pre-run check has passed
        notes.append(f"nlpexp: warning: resuming with changed settings {differ}: the result may differ")
    notes.append(f"nlpexp: resuming {folder}")
    return [*before, *extra, f"resume={folder}", f"hydra.run.dir={folder}"]


def earlier_jobs(args: list[str], jobs: list, notes: list[str]) -> None:
    """A sweep run again into its folder (hydra.sweep.dir=...): its numbered job folders must be this sweep's
    (the same overrides, job by job), checked before Hydra rewrites any of their .hydra/; says how many are reused
    and resumed (each job does it)."""
    given = [a.split("=", 1)[1].strip("'\"") for a in args if a.startswith("hydra.sweep.dir=")]
    own_jobs = ("hydra.sweep.subdir=", "hparams_search=", "experiment=", "hydra/sweeper=", "hydra.sweeper.")
    if not given or any(a.lstrip("+~").startswith(own_jobs) for a in args) or not Path(given[-1]).is_dir():
        return  # (an Optuna sweep numbers new trials after the folders there; experiments sweep their own lists)
    found = {"complete": [], "resume": []}
    for number, combination in enumerate(jobs):
        job = Path(given[-1]).expanduser() / str(number)  # Hydra writes its .hydra/ before the job starts
        problem = (f"{job} is a symbolic link: a run folder holds no links; remove it" if job.is_symlink()
                   else run_folder_error(job))
        if problem:
            raise UserError(f"hydra.sweep.dir={given[-1]}: job {number}: {problem}")
        state, why = earlier_job(Path(given[-1]).expanduser() / str(number), list(combination))
        if state == "other":
            raise UserError(f"hydra.sweep.dir={given[-1]} holds another sweep: job {number}: {why}"
                            "; run a sweep again only into its own folder, or choose another hydra.sweep.dir")
        if state:
            found[state].append(str(number))
    if found["complete"] or found["resume"]:
        notes.append(f"nlpexp: {given[-1]}: jobs {', '.join(found['complete']) or 'none'} complete (reused), "
                     f"{', '.join(found['resume']) or 'none'} unfinished (resumed in their folders); the rest run")


def check_ckpt_args(args: list[str]) -> None:
    """The saved runs ckpt= names on the command line (one, a soup's [a,b], a sweep's a,b) are checked before any
    of their files is read: no links (an eval/ link wrote the eval run outside the run, a linked model file loaded
    another run's), no FIFOs (a read waits forever)."""
    for arg in args:
        key, eq, value = arg.partition("=")
        if not eq or key.lstrip("+~") != "ckpt":
            continue
        for item in value.strip().strip("[]").split(","):
            folder = Path(item.strip().strip("'\"")).expanduser()
            if item.strip() and folder.is_dir() and os.path.lexists(folder / ".hydra"):  # a run folder, as ckpt= is
                check_run_folder(folder.resolve())
