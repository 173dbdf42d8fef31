"""One long-lived `nlpexp` process per Hugging Face cache. huggingface_hub, transformers and datasets read HF_HOME
and HF_HUB_OFFLINE when imported, so a test cannot point the pytest process at its cache; it starts this file as
a process with both set (`serving(home)`) and has it run the commands (`run(home, cwd, *args)`): each in-process
through nlpexp.cli.main(), as tests/conftest.py's `nlpexp` fixture runs it, the libraries imported once per cache
instead of once per command.

One JSON line per command on the process's stdin, {"args": [...], "cwd": "..."}; one back on its stdout, {"code",
"out", "err"}: the exit code, and what the command printed to sys.stdout and sys.stderr (an exception that escapes
is exit 1 with its traceback, as `python -m nlpexp` ends). Whatever is written to file descriptor 1 below Python
goes to the process's stderr, so that it cannot garble the answers."""
import contextlib
import io
import json
import os
import select
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

PROCESSES: dict[Path, subprocess.Popen] = {}  # HF_HOME -> the process that runs commands with it


@contextlib.contextmanager
def serving(home: Path):
    """The process for cache `home` (HF_HOME=home, HF_HUB_OFFLINE=1), for run(); stopped at the end."""
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    proc = PROCESSES[home] = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE,
                                              stdout=subprocess.PIPE, env=env, text=True, encoding="utf-8")
    try:
        yield proc
    finally:
        del PROCESSES[home]
        proc.stdin.close()  # its loop ends
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(home: Path, cwd: Path, *args, timeout: float = 600) -> subprocess.CompletedProcess:
    """`nlpexp *args` in folder cwd, in the process serving `home`: its exit code, stdout and stderr."""
    proc = PROCESSES[home]
    proc.stdin.write(json.dumps({"args": [str(a) for a in args], "cwd": str(cwd)}) + "\n")
    proc.stdin.flush()
    if not select.select([proc.stdout], [], [], timeout)[0]:
        proc.kill()
        raise subprocess.TimeoutExpired(["nlpexp", *args], timeout)
    answer = proc.stdout.readline()
    if not answer:
        raise RuntimeError(f"the nlpexp process for {home} ended (exit {proc.wait()}); see its stderr")
    answer = json.loads(answer)
    return subprocess.CompletedProcess(["nlpexp", *args], answer["code"], answer["out"], answer["err"])


def call_main(cwd: Path, *args) -> tuple[int, str, str]:
    """`nlpexp *args` run in this process inside `cwd`, as tests/conftest.py's `nlpexp` fixture runs it: its exit
    code, stdout and stderr (an exception that escapes is exit 1 with its traceback, as `python -m nlpexp` ends).
    The process's cwd, argv, environment and warning filters are as they were afterwards, so the next command
    starts as a new process would (and says its "once" warnings again)."""
    from hydra.core.global_hydra import GlobalHydra

    from nlpexp import cli

    here, argv, environ = os.getcwd(), sys.argv, dict(os.environ)
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        try:
            os.chdir(cwd)
            sys.argv = ["nlpexp", *map(str, args)]
            GlobalHydra.instance().clear()
            cli.main()
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        except Exception:
            traceback.print_exc()
            code = 1
        finally:
            GlobalHydra.instance().clear()
            os.chdir(here)
            sys.argv = argv
            os.environ.clear()
            os.environ.update(environ)
    return code, out.getvalue(), err.getvalue()


def serve() -> None:
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    from nlpexp import cli  # noqa: F401 (imported once, as `python -m nlpexp` does: its warning filter is kept)

    for line in sys.stdin:
        request = json.loads(line)
        code, out, err = call_main(Path(request["cwd"]), *request["args"])
        answers.write(json.dumps({"code": code, "out": out, "err": err}) + "\n")
        answers.flush()


if __name__ == "__main__":
    serve()
