"""Novel continuation recipe: next-character models over sliding windows, and controlled generation.

train:    text -> clean-up -> windows split by position -> fit (best by validation loss) -> held-out accuracy
          and perplexity, an add-k character-bigram baseline on the same targets, continuations of held-out
          prompts (distinct-n, repetition, banned-token and no-repeat checks) -> outputs
generate: a saved run's best checkpoint continues prompt="..." for `length` tokens
Outputs: checkpoints/best (model.safetensors, model.json, vocab.json), history.csv, history.png, samples.jsonl.
"""
import json
import math
import time
from pathlib import Path

from nlpexp import registry
from nlpexp.errors import UserError
from nlpexp.tasks.novel.contract import Codec, NovelAdapter, NovelModel, load_codec


def run(cfg, run_dir: Path, device: str):
    return {"train": train, "generate": generate}[cfg.mode](cfg, run_dir, device)


def adapter(model: str) -> NovelAdapter:
    return registry.adapter(model, "novel")


def train(cfg, run_dir: Path, device: str):
    import pandas as pd

    from nlpexp.metrics import bigram_nll, perplexity, plot_history
    from nlpexp.tasks.novel.data import load_novel

    seq_len, smoke = int(cfg.task.seq_len), bool(cfg.get("smoke"))
    builder = adapter(cfg.model.name)
    data = load_novel(cfg.data, seq_len, lambda text: builder.codec(cfg.model, text, cfg.data, smoke))
    codec = data["codec"]
    print(f"data: {data['origin']}: {len(data['text'])} characters, vocabulary {len(codec)}, windows "
          + ", ".join(f"{k} {len(v)}" for k, v in data["starts"].items()))
    model = builder.build(cfg.model, codec, seq_len, smoke)
    history, info = fit(cfg, model, data, run_dir, device)
    model, codec, _ = load_checkpoint(run_dir / "checkpoints" / "best", device)

    ids, starts, eb = data["ids"], data["starts"], cfg.trainer.eval_batch_size
    metrics = {}
    for split, prefix in (("validation", "val"), ("test", "test")):
        nll, acc = evaluate(model, ids, starts[split], seq_len, device, eb)
        metrics.update({f"{prefix}_loss": round(nll, 5), f"{prefix}_accuracy": round(acc, 5),
                        f"{prefix}_perplexity": round(perplexity(nll), 4)})
    # the baseline: add-k bigram on the training part, k picked on validation, scored on the same test targets
    lo, hi = data["bounds"][0]
    train_ids = ids[lo:hi].numpy()

    def targets(split):
        s = starts[split] + seq_len
        return ids[s - 1].numpy(), ids[s].numpy()

    ks = [float(k) for k in cfg.task.bigram_k]
    best_k = min(ks, key=lambda k: bigram_nll(train_ids, *targets("validation"), len(codec), k))
    metrics["test_bigram_perplexity"] = round(perplexity(bigram_nll(train_ids, *targets("test"), len(codec), best_k)),
                                              4)
    metrics.update(heldout_generation(model, codec, data, seq_len, cfg.generate, cfg.seed, run_dir))

    pd.DataFrame(history).to_csv(run_dir / "history.csv", index=False)
    plot_history(history, run_dir / "history.png")
    return {"metrics": metrics, "objective": "val_loss", "bigram_k": best_k, "vocab_size": len(codec),
            "windows": {k: len(v) for k, v in starts.items()},
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "decoding": decode_settings(cfg.generate), **info}


# -- checkpoints: safetensors + JSON, nothing pickled -----------------------------------------------------
def save_checkpoint(model: NovelModel, codec: Codec, folder: Path, seq_len: int, model_name: str) -> None:
    from safetensors.torch import save_model

    folder.mkdir(parents=True, exist_ok=True)
    save_model(model, str(folder / "model.safetensors"))
    (folder / "model.json").write_text(json.dumps({"model": model_name, "spec": model.spec(), "seq_len": seq_len,
                                                   "codec": codec.kind}, indent=1))
    codec.save(folder)


def load_checkpoint(folder: Path, device: str):
    """(model on `device`, codec, seq_len) from a checkpoint folder."""
    from safetensors.torch import load_model

    if not (folder / "model.json").exists():
        raise UserError(f"{folder} holds no novel checkpoint (model.json missing; did that run finish?)")
    saved = json.loads((folder / "model.json").read_text())
    model = adapter(saved["model"]).from_spec(saved["spec"])
    load_model(model, str(folder / "model.safetensors"), device="cpu")
    return model.to(device).eval(), load_codec(folder, saved["codec"]), saved["seq_len"]


# -- training ---------------------------------------------------------------------------------------------
def _autocast(device: str, mode: str = "auto"):
    """Mixed precision: auto = bf16 on CUDA (fp16 + GradScaler on GPUs without bf16), full precision on CPU;
    bf16 = bf16 autocast on any device; no = full precision."""
    import contextlib

    import torch

    if mode == "no" or (mode == "auto" and device != "cuda"):
        return contextlib.nullcontext, None
    if device == "cuda" and not torch.cuda.is_bf16_supported():
        return (lambda: torch.autocast("cuda", dtype=torch.float16)), torch.amp.GradScaler("cuda")
    return (lambda: torch.autocast(device, dtype=torch.bfloat16)), None


def loss_fn(model, logits, y):
    import torch.nn.functional as F

    if model.causal:  # every position has a next token to learn from
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))
    return F.cross_entropy(logits.float(), y[:, -1])


def evaluate(model, ids, starts, seq_len: int, device: str, batch_size: int, autocast=None):
    """Mean NLL, accuracy and count of the next token after each window (the last position)."""
    import contextlib

    import torch
    import torch.nn.functional as F

    from nlpexp.tasks.novel.data import gather_windows

    autocast = autocast or contextlib.nullcontext
    model.eval()
    nll, correct = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(starts), batch_size):
            x, y = gather_windows(ids, starts[i:i + batch_size], seq_len)
            x, y = x.to(device), y[:, -1].to(device)
            with autocast():
                logits = model.last_logits(x)
            nll += F.cross_entropy(logits.float(), y, reduction="sum").item()
            correct += (logits.argmax(-1) == y).sum().item()
    model.train()
    return nll / len(starts), correct / len(starts)


def fit(cfg, model, data, run_dir: Path, device: str):
    """AdamW with linear warm-up/decay; evaluates every `task.eval_every` steps and at each epoch end, keeps the
    best checkpoint by validation loss; stops at max_steps or task.max_train_minutes."""
    import torch
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    from nlpexp.tasks.novel.data import gather_windows

    tr, seq_len = cfg.trainer, int(cfg.task.seq_len)
    ids, starts = data["ids"], data["starts"]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=tr.lr, weight_decay=tr.weight_decay)
    per_epoch = math.ceil(len(starts["train"]) / tr.batch_size / tr.grad_accum)
    total = per_epoch * int(tr.epochs)
    if tr.max_steps and tr.max_steps > 0:
        total = min(total, int(tr.max_steps))
    sched = get_linear_schedule_with_warmup(opt, int(tr.warmup_ratio * total), total)
    autocast, scaler = _autocast(device, str(cfg.task.get("mixed_precision", "auto")))
    gen = torch.Generator().manual_seed(int(cfg.seed))
    deadline = time.time() + 60 * cfg.task.max_train_minutes if cfg.task.get("max_train_minutes") else None
    eval_every = cfg.task.get("eval_every") or per_epoch
    best, history, step, seen, started = math.inf, [], 0, 0, time.time()
    best_dir = run_dir / "checkpoints" / "best"
    model.to(device).train()
    bar = tqdm(total=total, desc="train", mininterval=2)
    stop, running = False, []

    def checkpoint(epoch):
        nonlocal best
        val_nll, val_acc = evaluate(model, ids, starts["validation"], seq_len, device, tr.eval_batch_size, autocast)
        row = {"epoch": round(epoch, 3), "step": step, "train_loss": round(sum(running) / max(len(running), 1), 5),
               "val_loss": round(val_nll, 5), "val_accuracy": round(val_acc, 5),
               "val_perplexity": round(math.exp(val_nll), 3)}
        history.append(row)
        running.clear()
        if val_nll < best:
            best = val_nll
            save_checkpoint(model, data["codec"], best_dir, seq_len, cfg.model.name)
        bar.set_postfix(val_loss=row["val_loss"], val_acc=row["val_accuracy"])

    for epoch in range(int(tr.epochs)):
        order = starts["train"][torch.randperm(len(starts["train"]), generator=gen)]
        micro = [order[i:i + tr.batch_size] for i in range(0, len(order), tr.batch_size)]
        for i in range(0, len(micro), tr.grad_accum):
            group = micro[i:i + tr.grad_accum]
            for batch in group:
                x, y = gather_windows(ids, batch, seq_len)
                x, y = x.to(device), y.to(device)
                with autocast():
                    loss = loss_fn(model, model(x), y) / len(group)
                (scaler.scale(loss) if scaler else loss).backward()
                running.append(loss.item() * len(group))
                seen += len(batch)
            if scaler:
                scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            scaler.step(opt) if scaler else opt.step()
            if scaler:
                scaler.update()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            if step >= total or (deadline and time.time() > deadline):
                stop = True
                break
            if step % eval_every == 0 and (i + tr.grad_accum) < len(micro):
                checkpoint(epoch + (i + tr.grad_accum) / len(micro))
        checkpoint(epoch + (1 if not stop else (i + tr.grad_accum) / len(micro)))
        if stop:
            break
    bar.close()
    return history, {"train_windows_per_s": round(seen / max(time.time() - started, 1e-9), 2),
                     "train_steps": step, "train_minutes": round((time.time() - started) / 60, 2)}


# -- generation -------------------------------------------------------------------------------------------
def decode_settings(g) -> dict:
    return {"strategy": g.strategy, "temperature": g.temperature, "top_k": g.top_k, "top_p": g.top_p,
            "repeat_window": g.repeat_window, "beam_size": g.beam_size, "stateful": g.stateful}


def continue_prompts(model, codec, prompt_ids, length: int, g, seed: int, strategy: str | None = None):
    """(n, length) continuations of the (n, L) prompt ids under the `generate` settings, all in one batch."""
    import torch

    from nlpexp import decoding

    device = next(model.parameters()).device
    prompt_ids = prompt_ids.to(device)
    banned = list(codec.special_ids)
    with torch.inference_mode():
        if (strategy or g.strategy) == "beam":
            return decoding.beam_search(model, prompt_ids, length, beam_size=int(g.beam_size), banned_ids=banned,
                                        repeat_window=int(g.repeat_window), stateful=bool(g.stateful)).cpu()
        gen = torch.Generator(device=device).manual_seed(int(seed))
        return decoding.sample(model, prompt_ids, length, temperature=float(g.temperature), top_k=int(g.top_k),
                               top_p=float(g.top_p), banned_ids=banned, repeat_window=int(g.repeat_window),
                               generator=gen, stateful=bool(g.stateful)).cpu()


def generation_metrics(prompts, outputs, codec, g, prefix: str) -> dict:
    from nlpexp.decoding import repeat_violations
    from nlpexp.metrics import distinct_n, repetition_rate

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
