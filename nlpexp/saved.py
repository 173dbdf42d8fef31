"""Saved model folders and step checkpoints: written whole or not at all (write_dir, seal + place), and read back
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
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from nlpexp.errors import UserError, disk_full

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
