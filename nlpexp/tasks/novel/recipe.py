"""Novel continuation recipe: next-character models over sliding windows, and controlled generation.

train:    text -> clean-up -> windows split by position -> fit (best by validation loss) -> held-out accuracy
          and perplexity, Kneser-Ney character bigram/trigram baselines on the same targets, continuations of held-out
          prompts (distinct-n, repetition, banned-token and no-repeat checks) -> outputs
generate: a saved run's best checkpoint continues prompt="..." for `length` tokens
Outputs: checkpoints/best (model.safetensors, model.json, vocab.json), history.csv, history.png, samples.jsonl.
"""
import json
import math
import time
from pathlib import Path

from nlpexp.config import registry
from nlpexp.errors import UserError
from nlpexp.config.schema import typed
from nlpexp.tasks.novel.contract import Codec, NovelAdapter, NovelModel, load_codec


def run(cfg, run_dir: Path, device: str):
    return {"train": train, "generate": generate}[cfg.mode](cfg, run_dir, device)


def adapter(model: str) -> NovelAdapter:
    return registry.adapter(model, "novel")


def train(cfg, run_dir: Path, device: str):
    import pandas as pd

    from nlpexp.report.metrics import perplexity, plot_history
    from nlpexp.tasks.novel.data import load_novel

    seq_len = int(cfg.task.seq_len)
    builder = adapter(cfg.model.name)
    config = typed(cfg.model, registry.MODELS[cfg.model.name].adapters["novel"].config)
    data = load_novel(cfg.data, seq_len, lambda text: builder.codec(config, text, cfg.data))
    codec = data["codec"]
    window = int(cfg.generate.repeat_window)
    if window and len(codec) <= window + 2:  # before training: the samples after it could never be drawn
        raise UserError(f"the text has {len(codec)} distinct tokens and generate.repeat_window={window} bans the "
                        f"last {window}: none would be left to generate; lower generate.repeat_window below "
                        f"{max(len(codec) - 2, 0)} or give a longer text")
    print(f"data: {data['origin']}: {len(data['text'])} characters, vocabulary {len(codec)}, windows "
          + ", ".join(f"{k} {len(v)}" for k, v in data["starts"].items()))
    model = builder.build(config, codec, seq_len)
    history, info = fit(cfg, model, data, run_dir, device)
    model, codec, _ = load_checkpoint(run_dir / "checkpoints" / "best", device)

    ids, starts, eb = data["ids"], data["starts"], cfg.trainer.eval_batch_size
    metrics, precision = {}, info["precision"]
    for split, prefix in (("validation", "val"), ("test", "test")):
        nll, acc, losses, hits = window_scores(model, ids, starts[split], seq_len, device, eb, precision)  # test last
        metrics.update({f"{prefix}_loss": round(nll, 5), f"{prefix}_accuracy": round(acc, 5),
                        f"{prefix}_perplexity": round(perplexity(nll), 4)})
    baselines, discounts, ngram_losses = ngram_baselines(ids, data["bounds"][0], starts, seq_len, len(codec),
                                                         [float(d) for d in cfg.task.ngram_discounts])
    metrics.update(baselines)
    metrics.update(heldout_generation(model, codec, data, seq_len, cfg.generate, cfg.seed, run_dir))

    pd.DataFrame(history).to_csv(run_dir / "history.csv", index=False)
    plot_history(history, run_dir / "history.png")
    return {"metrics": metrics, "objective": "val_loss", "ngram_discount": discounts,
            "items": window_items(codec, ids, starts["test"], seq_len, losses, hits, ngram_losses),
            "verdict": verdict(metrics), "vocab_size": len(codec),
            "windows": {k: len(v) for k, v in starts.items()},
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "decoding": decode_settings(cfg.generate), **info}


NGRAMS = {2: "bigram", 3: "trigram"}


def ngram_baselines(ids, train_bounds, starts, seq_len: int, vocab_size: int, discounts: list[float]) -> tuple:
    """Interpolated Kneser-Ney character bigram and trigram fit on the training part, each discount chosen on
    the validation targets, scored on the same next characters the model is: ({val_/test_<n>gram_perplexity},
    {order name: discount}, {order name: each test target's NLL})."""
    import numpy as np

    from nlpexp.report.metrics import kneser_ney_nll, kneser_ney_nlls, perplexity

    all_ids = np.asarray(ids)
    lo, hi = train_bounds
    train_ids = all_ids[lo:hi]

    def targets(split):  # (the two characters before each target, the target)
        s = np.asarray(starts[split]) + seq_len
        return all_ids[s[:, None] - 2 + np.arange(2)], all_ids[s]

    metrics, chosen, losses = {}, {}, {}
    for order, name in NGRAMS.items():
        val = {d: kneser_ney_nll(train_ids, *targets("validation"), vocab_size, order, d) for d in discounts}
        best = min(val, key=val.get)
        chosen[name] = best
        metrics[f"val_{name}_perplexity"] = round(perplexity(val[best]), 4)
        losses[name] = kneser_ney_nlls(train_ids, *targets("test"), vocab_size, order, best)
        metrics[f"test_{name}_perplexity"] = round(perplexity(float(losses[name].mean())), 4)
    return metrics, chosen, losses


def window_items(codec, ids, starts, seq_len: int, losses, hits, ngram_losses: dict) -> dict:
    """The test windows as the run's items (each: its window's text, and the next token as gold): the model's
    per-window NLL (perplexity, loss) and hit (accuracy), and the n-gram baselines' NLL of the same targets.
    The held-out continuations' distinct-n and repetition have no block: their items are the few generated
    samples (generate.eval_prompts), not these windows, and a run's blocks share one set of items."""
    from nlpexp.report import stats

    ones = [1.0] * len(starts)
    model = stats.perplexity_block(losses, ones, "test_perplexity")
    model.metrics["test_loss"] = "ratio"
    blocks = [model, stats.mean_block(hits, "test_accuracy")]
    blocks += [stats.perplexity_block(ngram_losses[name], ones, f"test_{name}_perplexity") for name in NGRAMS.values()]
    texts = [codec.decode(ids[s:s + seq_len].tolist(), skip_special=False) for s in starts.tolist()]
    gold = [codec.decode([int(ids[s + seq_len])], skip_special=False) for s in starts.tolist()]
    return {"sha256": stats.items_hash(texts, gold), "blocks": blocks}


def verdict(metrics: dict) -> str:
    """The end summary's line: does the model's test perplexity beat the best n-gram baseline's?"""
    name = min(NGRAMS.values(), key=lambda n: metrics[f"test_{n}_perplexity"])
    ours, theirs = metrics["test_perplexity"], metrics[f"test_{name}_perplexity"]
    return (f"test perplexity {ours:.1f} {'beats' if ours < theirs else 'does NOT beat'} the best n-gram baseline "
            f"(Kneser-Ney {name}, {theirs:.1f})")


# -- checkpoints: safetensors + JSON, nothing pickled -----------------------------------------------------
def save_checkpoint(model: NovelModel, codec: Codec, folder: Path, seq_len: int, model_name: str) -> None:
    from safetensors.torch import save_model

    from nlpexp.runs import write_dir

    with write_dir(folder) as tmp:  # written whole or not at all
        save_model(model, str(tmp / "model.safetensors"))
        (tmp / "model.json").write_text(json.dumps({"model": model_name, "spec": model.spec(), "seq_len": seq_len,
                                                    "codec": codec.kind}, indent=1))
        codec.save(tmp)


def load_checkpoint(folder: Path, device: str):
    """(model on `device`, codec, seq_len) from a checkpoint folder; one without saved_files.json is refused
    (saved.require_manifest: its files could not be checked)."""
    from safetensors.torch import load_model

    from nlpexp.runs import loading

    if not (folder / "model.json").exists():
        raise UserError(f"{folder} holds no novel checkpoint (model.json missing; did that run finish?)")
    with loading(folder, require=True):
        saved = json.loads((folder / "model.json").read_text())
        model = adapter(saved["model"]).from_spec(saved["spec"])
        load_model(model, str(folder / "model.safetensors"), device="cpu")
        return model.to(device).eval(), load_codec(folder, saved["codec"]), saved["seq_len"]


# -- training: nlpexp.training.loop ----------------------------------------------------------------------------------
def loss_fn(model, logits, y, reduction: str = "mean"):
    """Cross-entropy of every next character (causal models) or of the one after the window."""
    import torch.nn.functional as F

    if model.causal:  # every position has a next token to learn from
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), reduction=reduction)
    return F.cross_entropy(logits.float(), y[:, -1], reduction=reduction)


class WindowJob:
    """The training windows for nlpexp.training.loop: a micro-batch is a list of window starts, gathered when scored."""

    def __init__(self, model: NovelModel, ids, starts, seq_len: int, batch_size: int, seed: int):
        self.model, self.ids, self.starts, self.seq_len = model, ids, starts, seq_len
        self.batch_size, self.seed = batch_size, seed
        self.unit = "characters" if model.causal else "windows"

    def batches(self, epoch: int):
        from nlpexp.training.loop import seeded_order

        order = self.starts[seeded_order(len(self.starts), self.seed, epoch)].tolist()
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def units(self, batch) -> int:
        return len(batch) * (self.seq_len if self.model.causal else 1)

    def loss_sum(self, batch):
        import torch

        from nlpexp.tasks.novel.data import gather_windows

        x, y = gather_windows(self.ids, torch.as_tensor(batch), self.seq_len)
        device = next(self.model.parameters()).device
        return loss_fn(self.model, self.model(x.to(device)), y.to(device), reduction="sum")


class BestByValidation:
    """Validation loss and accuracy of the next character; the best weights so far go to checkpoints/best."""

    def __init__(self, model, data, folder: Path, seq_len: int, model_name: str, batch_size: int, device: str,
                 precision: str):
        self.model, self.data, self.folder, self.seq_len, self.model_name = model, data, folder, seq_len, model_name
        self.batch_size, self.device, self.precision, self.best = batch_size, device, precision, math.inf

    def __call__(self, epoch: float, step: int) -> dict:
        nll, acc = evaluate(self.model, self.data["ids"], self.data["starts"]["validation"], self.seq_len,
                            self.device, self.batch_size, self.precision)
        best = nll < self.best
        if best:
            self.best = nll
            save_checkpoint(self.model, self.data["codec"], self.folder, self.seq_len, self.model_name)
        return {"val_loss": round(nll, 5), "val_accuracy": round(acc, 5), "val_perplexity": round(math.exp(nll), 3),
                "best": best}

    def state(self) -> dict:
        return {"best": self.best}

    def load_state(self, state: dict) -> None:
        self.best = float(state["best"])


def evaluate(model, ids, starts, seq_len: int, device: str, batch_size: int, precision: str = "fp32"):
    """Mean NLL and accuracy of the next token after each window (the last position)."""
    return window_scores(model, ids, starts, seq_len, device, batch_size, precision)[:2]


def window_scores(model, ids, starts, seq_len: int, device: str, batch_size: int, precision: str = "fp32"):
    """(mean NLL, accuracy, each window's NLL, each window's 0/1 hit) of the next token after each window (the
    last position): the per-window lists are what a test interval resamples; the mean is summed batch by batch
    as it always was."""
    import torch
    import torch.nn.functional as F

    from nlpexp.report.console import Progress
    from nlpexp.training.precision import autocast
    from nlpexp.tasks.novel.data import gather_windows

    model.eval()
    nll, correct, losses, hits = 0.0, 0, [], []
    with torch.inference_mode(), autocast(precision, device), \
            Progress(len(starts), "evaluate", unit="window", every=None, leave=False) as bar:
        for i in range(0, len(starts), batch_size):
            bar.update(len(starts[i:i + batch_size]))
            x, y = gather_windows(ids, starts[i:i + batch_size], seq_len)
            x, y = x.to(device), y[:, -1].to(device)
            logits = model.last_logits(x).float()
            nll += F.cross_entropy(logits, y, reduction="sum").item()
            hit = logits.argmax(-1) == y
            correct += hit.sum().item()
            losses += F.cross_entropy(logits, y, reduction="none").tolist()
            hits += hit.int().tolist()
    model.train()
    return nll / len(starts), correct / len(starts), losses, hits


def fit(cfg, model, data, run_dir: Path, device: str):
    """nlpexp.training.loop over the training windows; evaluates every `task.eval_every` steps and at each epoch end and
    keeps the best checkpoint by validation loss."""
    from nlpexp.report import loggers
    from nlpexp.training import loop

    tr, seq_len = cfg.trainer, int(cfg.task.seq_len)
    settings = loop.Settings.of(tr, device)
    job = WindowJob(model, data["ids"], data["starts"]["train"], seq_len, int(tr.batch_size), int(cfg.seed))
    best = BestByValidation(model, data, run_dir / "checkpoints" / "best", seq_len, cfg.model.name,
                            int(tr.eval_batch_size), device, settings.precision)
    history, info = loop.fit(job, settings, device, run_dir=run_dir, evaluate=best,
                             eval_steps=int(cfg.task.get("eval_every") or 0), resume_from=cfg.get("resume_from"),
                             on_log=loggers.step_logger(cfg, run_dir))
    return history, info


# -- generation -------------------------------------------------------------------------------------------
def decode_settings(g) -> dict:
    """The decoding controls every wing shares (training.decoding.CONTROLS), and bert_lstm's stateful stepping."""
    from nlpexp.training.decoding import controls

    return {**controls(g), "stateful": bool(g.stateful)}


def continue_prompts(model, codec, prompt_ids, length: int, g, seed: int, strategy: str | None = None):
    """(n, length) continuations of the (n, L) prompt ids under the `generate` settings, all in one batch, through
    nlpexp.training.decoding.generate (gpt2 too: it re-reads its window, which transformers' generate cannot); special
    tokens never come out. `strategy` overrides generate.strategy (the held-out sample and beam continuations)."""
    import torch

    from nlpexp.training import decoding

    device = next(model.parameters()).device
    settings = {**decoding.controls(g), **({"strategy": strategy} if strategy else {})}
    with torch.inference_mode():
        out = decoding.generate(model, prompt_ids.to(device), length, **settings, banned_ids=codec.special_ids,
                                generator=torch.Generator(device=device).manual_seed(int(seed)),
                                stateful=bool(g.stateful))
    return torch.tensor(out, dtype=torch.long).view(len(prompt_ids), length)  # no eos: every row runs `length`


def generation_metrics(prompts, outputs, codec, g, prefix: str) -> dict:
    from nlpexp.training.decoding import repeat_violations
    from nlpexp.report.metrics import distinct_n, repetition_rate

    special = set(codec.special_ids)
    seqs = [list(o) for o in outputs]
    joined = [list(p) + s for p, s in zip(prompts, seqs)]
    return {
        f"{prefix}_distinct_1": round(distinct_n(seqs, 1), 5),
        f"{prefix}_distinct_2": round(distinct_n(seqs, 2), 5),
        f"{prefix}_repetition_rate": round(repetition_rate(seqs, 2), 5),
        f"{prefix}_banned_tokens": float(sum(t in special for s in seqs for t in s)),
        f"{prefix}_repeat_violations": float(sum(repeat_violations(j, int(g.repeat_window), len(p))
                                                 for j, p in zip(joined, prompts))),
    }


def heldout_generation(model, codec, data, seq_len: int, g, seed: int, run_dir: Path) -> dict:
    """Continue evenly spaced windows of the test part; samples.jsonl holds prompt, continuation, reference."""
    import torch

    ids, (lo, hi) = data["ids"], data["bounds"][2]
    n, length = int(g.eval_prompts), int(g.eval_length)
    room = max(0, hi - lo - seq_len - 1)
    picks = sorted({lo + (room * k) // max(n - 1, 1) for k in range(n)})
    prompts = torch.stack([ids[s:s + seq_len] for s in picks])
    metrics, rows = {}, []
    strategies = ["sample"] + (["beam"] if g.eval_beam else [])
    for strategy in strategies:
        out = continue_prompts(model, codec, prompts, length, g, seed, strategy)
        prefix = "gen" if strategy == "sample" else "beam"
        metrics.update(generation_metrics(prompts.tolist(), out.tolist(), codec, g, prefix))
        for s, p, o in zip(picks, prompts.tolist(), out.tolist()):
            rows.append({"strategy": strategy, "prompt": codec.decode(p), "continuation": codec.decode(o),
                         "reference": codec.decode(ids[s + seq_len:s + seq_len + length].tolist())})
    with open(run_dir / "samples.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return metrics


def generate(cfg, run_dir: Path, device: str):
    import torch

    ckpt = Path(str(cfg.ckpt)).expanduser()
    model, codec, _ = load_checkpoint(ckpt / "checkpoints" / "best", device)
    prompt = str(cfg.prompt)
    ids = codec.encode(prompt)
    if not ids:
        raise UserError("prompt is empty after encoding")
    n = int(cfg.generate.num_samples)
    prompts = torch.tensor([ids] * n, dtype=torch.long)
    started = time.time()
    out = continue_prompts(model, codec, prompts, int(cfg.length), cfg.generate, cfg.seed)
    elapsed = time.time() - started
    texts = [codec.decode(o) for o in out.tolist()]
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "samples.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps({"prompt": prompt, "continuation": t, **decode_settings(cfg.generate)},
                                 ensure_ascii=False) + "\n" for t in texts)
    for i, text in enumerate(texts):
        print(f"[{i + 1}] {prompt}{text}")
    print(f"{n} x {int(cfg.length)} tokens in {elapsed:.2f}s ({n * int(cfg.length) / max(elapsed, 1e-9):.0f} tokens/s)"
          f"; written to {run_dir / 'samples.jsonl'}")
