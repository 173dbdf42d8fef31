"""What a run prints about itself: the config it runs at the start (print_config=diff|full|none), one progress
bar per phase (plain lines off a terminal) and one line per evaluation; the libraries' own output off unless
verbose=true."""
from omegaconf import DictConfig, OmegaConf

WIDTH = 72  # a value longer than this is cut (print_config=full, or the saved .hydra/config.yaml, has it all)


def _leaves(node, prefix: str = "") -> dict:
    """Dotted key -> value of every leaf (a list is one leaf)."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(_leaves(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def _plain(cfg: DictConfig) -> dict:
    from nlpexp.secrets import redact

    plain = redact(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))
    plain.pop("hydra", None)
    return plain


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= WIDTH else text[:WIDTH - 1] + "…"


def config_tree(cfg: DictConfig, base: DictConfig | None) -> str:
    """The config as a compact tree, one line per group: only the keys that differ from `base` (the task x model
    cell's defaults), or every key when base is None."""
    mine = _leaves(_plain(cfg))
    theirs = _leaves(_plain(base)) if base is not None else {}
    changed = {k: v for k, v in mine.items() if base is None or k not in theirs or theirs[k] != v}
    cell = f"task={cfg.task.name} model={cfg.model.name}"
    if not changed:
        return f"config: the defaults of {cell} (print_config=full shows them)"
    head = f"config: {cell}" + ("" if base is None else ", what differs from its defaults (print_config=full: all)")
    groups: dict[str, list[str]] = {}
    for key, value in changed.items():
        group, _, leaf = key.partition(".")
        groups.setdefault(group if leaf else "", []).append(f"{leaf or group}={_short(value)}")
    width = max(len(g) for g in groups)
    lines = [head]
    for group, items in sorted(groups.items()):
        lines.append(f"  {group or '(top)':<{max(width, 5)}}  " + "  ".join(items))
    return "\n".join(lines)


def print_config(cfg: DictConfig) -> None:
    """At the start of a run (inside the Hydra app): the config tree print_config asks for."""
    mode = str(cfg.get("print_config") or "diff")
    if mode == "none":
        return
    base = None
    if mode == "diff":
        from hydra import compose

        try:
            base = compose("config", overrides=[f"task={cfg.task.name}", f"model={cfg.model.name}"])
        except Exception as err:  # a launcher that left no Hydra to compose with: say so, never fail the run
            print(f"config: cannot compose the defaults here ({type(err).__name__}); print_config=full shows all")
            return
    print(config_tree(cfg, base), flush=True)


# -- the console of a run: quiet libraries, one bar per phase, a line per evaluation -------------------------
EVERY = 0.1      # off a terminal: a plain progress line at every tenth of a phase ...
SECONDS = 30.0   # ... and at least every 30 s
_active: list = []  # the bars on screen (innermost last): lines are written above them
QUIET_ENV = {"TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
             "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
_set_here: set = set()
LIBRARIES = ("transformers", "datasets", "huggingface_hub", "sentence_transformers", "gensim", "matplotlib",
             "accelerate", "peft", "torch.distributed", "mlflow", "wandb")
LIBRARY_MODULES = r"(transformers|datasets|huggingface_hub|sentence_transformers|accelerate|peft|gensim)(\.|$)"


def quiet(verbose: bool = False) -> None:
    """The libraries' own output off (weight-loading and shard-writing bars, INFO lines, the font-cache
    notice); their warnings and errors stay. verbose=true leaves everything as the libraries print it. An unknown
    NLPEXP_PROGRESS is refused here (UserError), at the start of a run."""
    import logging
    import os
    import sys
    import warnings

    style()  # an unknown NLPEXP_PROGRESS is refused before the run builds anything
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.ERROR)
    # a glyph the font lacks (plots fall back to label indices: metrics.drawable)
    warnings.filterwarnings("default" if verbose else "ignore", message="Glyph .* missing from font")
    # deprecations inside the libraries (one library calling another's old API): nothing a user can act on
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("default" if verbose else "ignore", category=category, module=LIBRARY_MODULES)
    for key, value in QUIET_ENV.items():  # read when the library is imported: a doc2vec run never imports them
        if verbose and os.environ.get(key) == value and key in _set_here:
            del os.environ[key]
        elif not verbose and key not in os.environ:
            os.environ[key] = value
            _set_here.add(key)
    if "transformers" in sys.modules:
        import transformers

        transformers.logging.set_verbosity_warning() if verbose else transformers.logging.set_verbosity_error()
        transformers.logging.enable_progress_bar() if verbose else transformers.logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.enable_progress_bars() if verbose else datasets.disable_progress_bars()
    if "huggingface_hub" in sys.modules:
        import huggingface_hub.utils

        huggingface_hub.utils.enable_progress_bars() if verbose else huggingface_hub.utils.disable_progress_bars()


STYLES = ("bar", "plain", "off")


def progress_error() -> str | None:
    """One line when NLPEXP_PROGRESS is set to none of STYLES (checked before a run starts: a typo is not ignored)."""
    import os

    given = os.environ.get("NLPEXP_PROGRESS", "")
    if given.strip() and given.strip().lower() not in STYLES:
        return f"NLPEXP_PROGRESS={given} is not a progress style: use {'|'.join(STYLES)}, or unset it (a bar on a " \
               "terminal, plain lines elsewhere)"
    return None


def style() -> str:
    """How progress is shown: "bar" on a terminal, "plain" lines elsewhere (CI logs, `| tee`), or "off";
    NLPEXP_PROGRESS=bar|plain|off chooses (another value is refused: UserError)."""
    import os
    import sys

    from nlpexp.errors import UserError

    problem = progress_error()
    if problem:
        raise UserError(problem)
    chosen = os.environ.get("NLPEXP_PROGRESS", "").strip().lower()
    if chosen in STYLES:
        return chosen
    return "bar" if sys.stderr.isatty() else "plain"


def say(line: str) -> None:
    """A line of the run's story: above the bar when one is drawn."""
    import sys

    if _active and _active[-1].bar is not None:
        _active[-1].bar.write(line, file=sys.stderr)
    else:
        print(line, flush=True)


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """One phase's progress (training, evaluation, decoding): a tqdm bar on a terminal; elsewhere a plain line
    at every `every` of the phase (None: only the 30 s lines, for short phases) and at least every 30 s."""

    def __init__(self, total: int, desc: str, *, initial: int = 0, unit: str = "it", every: float | None = EVERY,
                 leave: bool = True, mode: str | None = None, clock=None):
        import time

        self.total, self.desc, self.n, self.unit, self.every = max(int(total), 0), desc, int(initial), unit, every
        self.mode = mode or style()
        self.clock = clock or time.time
        self.started = self.last_line = self.clock()
        self.first = self.n
        self.marks = 0
        self.marks = self._mark(self.n)
        self.postfix: dict = {}
        self.bar = None
        if self.mode == "bar":
            import sys

            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=self.n, desc=desc, unit=unit, leave=leave, mininterval=0.5,
                            dynamic_ncols=True, file=sys.stderr)
        _active.append(self)

    def _mark(self, n: int) -> int:
        return n * round(1 / self.every) // self.total if self.every and self.total else self.marks

    def due(self, n: int) -> bool:
        """Whether reaching count n prints a plain line (a caller computes costly values only then)."""
        return self.mode == "plain" and (self._mark(n) > self.marks or self.clock() - self.last_line >= SECONDS)

    def update(self, n: int = 1, **postfix) -> None:
        due = self.due(self.n + n)
        self.n += n
        if postfix:
            self.set(**postfix)
        if self.bar is not None:
            self.bar.update(n)
        elif due:
            self.marks, self.last_line = self._mark(self.n), self.clock()
            print(self.line(self.last_line), flush=True)

    def describe(self, desc: str) -> None:
        """A new label for the phase (e.g. the epoch it is in)."""
        self.desc = desc
        if self.bar is not None:
            self.bar.set_description(desc, refresh=False)

    def set(self, **postfix) -> None:
        """The values shown beside the count (numbers are formatted: 4 significant digits)."""
        self.postfix.update(postfix)
        if self.bar is not None:
            self.bar.set_postfix({k: _value(v) for k, v in self.postfix.items()}, refresh=False)

    def line(self, now: float) -> str:
        elapsed = now - self.started
        done = self.n - self.first
        left = f", ~{_clock(elapsed / done * (self.total - self.n))} left" if done and elapsed and self.n < self.total \
            else ""
        share = f" {self.n / self.total:4.0%}" if self.total else ""
        extra = "".join(f"  {k} {_value(v)}" for k, v in self.postfix.items())
        return f"{self.desc}  {self.n}/{self.total}{share}{extra}  {_clock(elapsed)}{left}"

    def close(self) -> None:
        if self in _active:
            _active.remove(self)
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _value(v) -> str:
    if isinstance(v, float):
        return f"{v:.2e}" if v and abs(v) < 1e-3 else f"{v:.4g}"
    return str(v)


class Epochs:
    """One line per evaluation: a small table (a header, then one aligned row each) when the terminal is wide
    enough for its columns, else `epoch 2/4  train_loss 0.81  val_accuracy 0.90 ...` lines."""

    def __init__(self, epochs: float | None = None, width: int | None = None):
        import shutil

        self.epochs, self.columns = epochs, None
        self.width = width or shutil.get_terminal_size((100, 20)).columns

    def __call__(self, row: dict) -> None:
        cells = {k: "" if v is None else _value(round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
                 if k in ("epoch", "step", "train_loss") or k.startswith("val_") and isinstance(v, (int, float))
                 and not isinstance(v, bool)}
        if self.columns is None:
            heads = {k: k[4:] for k in cells if k.startswith("val_")}
            if heads:
                heads[next(iter(heads))] = "val: " + next(iter(heads.values()))
            heads = {k: heads.get(k, k) for k in cells}
            widths = {k: max(len(h), 6) for k, h in heads.items()}
            self.columns = widths if sum(widths.values()) + 2 * len(widths) <= self.width else {}
            if self.columns:
                say("  ".join(f"{heads[k]:>{w}}" for k, w in widths.items()))
        if self.columns and set(cells) <= set(self.columns):
            say("  ".join(f"{cells.get(k, ''):>{w}}" for k, w in self.columns.items()))
            return
        of = f"/{self.epochs:g}" if self.epochs else ""
        say(f"epoch {cells.pop('epoch', '?')}{of}  " + "  ".join(f"{k} {v}" for k, v in cells.items()))
