"""What a run prints about itself: the config it runs at the start (print_config=diff|full|none)."""
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
