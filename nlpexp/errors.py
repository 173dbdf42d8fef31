class UserError(Exception):
    """Bad input from the user: reported as one line on stderr, exit code 2, no traceback."""


def disk_full(err: BaseException | None) -> bool:
    """ENOSPC, raised as OSError or inside the message of a library's own writer (safetensors, torch)."""
    import errno

    while err is not None:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(err) or "os error 28" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def permission_message(err: PermissionError) -> str:
    """One line for a file or folder nlpexp may not open (chmod, another user's files)."""
    import getpass

    where = err.filename or "a file"
    return (f"permission denied: {where} (nlpexp runs as {getpass.getuser()}): make it readable (and its folder "
            "writable where a run writes), or choose another")
