"""Saved model folders: written whole or not at all (write_dir), and read back with one line when damaged (loading).

A run killed while it writes checkpoints/best must not leave a folder that looks complete: write_dir writes into a
temporary sibling and renames it into place only when everything is in it, with saved_files.json listing every
file and its size. loading checks that list first (a deleted tokenizer file can load silently as an empty
vocabulary) and turns what a truncated or incomplete folder raises into one line naming the folder.
"""
import errno
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from nlpexp.errors import UserError, disk_full

MANIFEST = "saved_files.json"


@contextmanager
def write_dir(path):
    """Yields a temporary sibling folder `<name>.tmp-<pid>` to write into; on success it gets its saved_files.json
    and replaces `path` (an existing folder is renamed aside, the new one renamed in, the old one removed); on error
    it is removed."""
    path = Path(path)
    tmp, old = path.with_name(f"{path.name}.tmp-{os.getpid()}"), path.with_name(f"{path.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        sizes = {p.relative_to(tmp).as_posix(): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        (tmp / MANIFEST).write_text(json.dumps(sizes, indent=1))
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if disk_full(err):  # the libraries' writers do not say which file: this folder is the one
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from err
        raise
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    for stale in [*path.parent.glob(f"{path.name}.old-*"), *path.parent.glob(f"{path.name}.tmp-*")]:
        shutil.rmtree(stale, ignore_errors=True)  # ours, and what a killed earlier save left behind


def load_error(folder, err) -> UserError:
    """One line for a saved model that does not load (`err`: the exception, or the reason as text)."""
    if isinstance(err, str):
        reason = err
    else:
        text = str(err).strip()
        reason = f"{type(err).__name__}: {text.splitlines()[0][:160]}" if text else type(err).__name__
    return UserError(f"{folder}: cannot load the saved model ({reason}): the run's files are incomplete or damaged")


def check_files(folder) -> None:
    """The files saved_files.json lists are there with their sizes (folders written before it existed: no check;
    files beside them are ignored)."""
    listed = Path(folder) / MANIFEST
    if not listed.is_file():
        return
    try:
        sizes = json.loads(listed.read_text())
        for name, size in sizes.items():
            path = Path(folder) / name
            if not path.is_file():
                raise load_error(folder, f"{name} is missing")
            if path.stat().st_size != int(size):
                raise load_error(folder, f"{name} has {path.stat().st_size} bytes, {size} were written")
    except (ValueError, AttributeError, TypeError) as err:
        raise load_error(folder, err) from None


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
def loading(folder):
    """Wrap the load of a saved run's model: check_files first, then the damage errors become load_error's one line.
    UserErrors and running out of memory pass through unchanged."""
    check_files(folder)
    try:
        yield
    except UserError:
        raise
    except _damage_errors() as err:
        if "OutOfMemoryError" in type(err).__name__ or "out of memory" in str(err):
            raise
        raise load_error(folder, err) from None
