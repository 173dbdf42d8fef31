"""The runner's training loop vs a bare torch loop for MiniLM on Financial PhraseBank: same model, data, batches,
steps and precision, measured in one run. Goal: runner / bare wall time <= 1.05 for the training phase.

The runner: the `nlpexp` command itself, `nlpexp task=finsent model=minilm trainer.epochs=1 trainer.max_steps=N`,
run in-process through its entry point (nlpexp.cli.main: the config checks, the run folder, the model built, label
words added, texts tokenised, its TrainingArguments, its epoch-seeded length-grouped sampler,
DataCollatorWithPadding, the transformers Trainer, the test evaluation). The bench reaches into it only through
transformers: Trainer.train is wrapped for the run, to add a callback and to take the runner's own trainer, model,
tokenised texts and tokenizer from it. The bare loop: a copy of the runner's model as train() receives it (the
same weights, by construction), a torch DataLoader whose batches are the runner's own sampler's (the same indices
in the same order) over the runner's tokenised texts, padded to the longest text of each batch, then forward,
backward, clip to the same norm, the Trainer's AdamW (same implementation, lr, betas, eps, weight decay off for
biases and LayerNorm), the same linear warm-up and decay, the same seed (and its own dropout random stream). fp32
by default, or `--precision bf16`: the runner gets `trainer.precision=bf16`, the bare loop torch.autocast("cpu",
torch.bfloat16) around the forward; the precision the runner's Trainer really trained in is read back and must be
the one asked.

The two run in lockstep, to cancel the noise of a shared machine: a Trainer callback runs one step of the bare loop
next to each optimiser step of the runner, after it on even steps and before it on odd ones (R B B R ..., its time
taken out of the runner's), so both see the same load, step by step. Before that, untimed, a few bare steps over
the runner's first batches: the first pass over a batch shape costs ~10 steps (process-wide, on whichever side
meets it first), and the longest batch comes first. Timed on both sides: the training phase only, from the start
of the first step to the end of the last optimiser step (the runner's from on_train_begin to its last
on_step_end). The runner's start-up, model loading, tokenising, setup and its end-of-epoch evaluation and
checkpoint are left out (printed apart; the validation and test splits are capped to --eval-samples texts,
data.max_eval_samples, to keep the bench short). Every step is checked to see the same batch (shape and token sum)
on both sides, and the per-step losses are compared. The lockstep run is repeated (--repeats, the same batches
each time; each repeat's runner must start from the first one's weights) and the ratio compares each side's sum
over steps of each step's best time across the repeats (load only ever adds time); the plain totals, a 95%
interval (the step pairs resampled), cross-checks that a burst of load moves less (paired per-step median,
per-phase medians, CPU time) and a verdict against the goal are printed with it. With --profile, or when the ratio
is above 1.05, a step is split into data / forward+backward+clip / optimizer.step / scheduler+zero_grad on both
sides, and the collators are timed alone.

    python bench/overhead.py [--data PATH] [--steps 60] [--repeats 2] [--precision fp32|bf16]
                             [--eval-samples 128] [--profile]
    python bench/overhead.py --tiny   # seconds: MiniLM's architecture built small (model.pretrained=null), the
                                      # embedded sample, 2 steps x 2 repeats (the test suite runs this)
"""
import argparse
import contextlib
import copy
import gc
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/datasets/financial_phrasebank/Sentences_50Agree.txt"
GOAL = 1.05
WARM_UP = 4  # untimed steps over the runner's first batches before both are timed
SIDE = ["runner"]  # whose step runs now (the bare loop sets it during its own steps): for the GC attribution
GC_PAUSES: list[tuple[float, float, int, str]] = []  # (start, seconds, generation, side) of each collection


def _gc_timer(phase, info, started=[0.0]):  # noqa: B006 (the start of the collection under way)
    if phase == "start":
        started[0] = time.perf_counter()
    else:
        GC_PAUSES.append((started[0], time.perf_counter() - started[0], info["generation"], SIDE[0]))
PHASES = ("data", "fwd+bwd+clip", "optimizer.step", "sched+zero_grad")


class Probe:
    """Forward hooks (the same on both sides, microseconds a step): each training step's batch (shape, token
    sum) and loss, to check that both loops saw the same batches and trained alike."""

    def __init__(self, model):
        self.batches, self.losses = [], []
        self.handles = [model.register_forward_pre_hook(self.before, with_kwargs=True),
                        model.register_forward_hook(self.after)]

    def before(self, module, args, kwargs):
        if module.training:
            ids = kwargs["input_ids"]
            self.batches.append((tuple(ids.shape), int(ids.sum())))

    def after(self, module, args, output):
        if module.training:
            self.losses.append(float(output.loss.detach().float()))

    def close(self):
        for handle in self.handles:
            handle.remove()


class BareLoop:
    """A hand-written torch training loop over given batches, driven one optimiser step at a time (`step()`),
    with its own torch random stream (dropout) so that stepping it between the runner's steps changes neither."""

    def __init__(self, model, start_state: dict, columns: dict, batches: list[list[int]], setup: dict,
                 precision: str, seed: int, pad_id: int):
        import torch
        from torch.utils.data import DataLoader

        self.model, self.columns, self.pad_id = model, columns, pad_id
        model.load_state_dict(start_state)
        model.train()
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        kind = {"fused": True} if setup["fused"] else {"foreach": setup["foreach"]}
        self.opt = torch.optim.AdamW([{"params": [p for n, p in named if n in setup["decay"]],
                                       "weight_decay": setup["weight_decay"]},
                                      {"params": [p for n, p in named if n not in setup["decay"]],
                                       "weight_decay": 0.0}],
                                     lr=setup["lr"], betas=setup["betas"], eps=setup["eps"], **kind)
        total, warm = len(batches), setup["warmup"]
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: s / max(1, warm) if s < warm else max(0.0, (total - s) / max(1, total - warm)))
        self.clip = setup["max_grad_norm"]
        self.autocast = ((lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16"
                         else contextlib.nullcontext)
        self.probe = Probe(model)
        self.stamps = {k: [] for k in ("start", "step_begin", "pre_opt", "opt", "step_end")}
        self.cpu = []  # CPU seconds of this process (all threads) per step
        outer = torch.get_rng_state()
        torch.manual_seed(seed)  # what the Trainer's set_seed does at the start of train()
        self.opt.zero_grad(set_to_none=True)
        loader = DataLoader(range(len(columns["label"])), batch_sampler=batches, collate_fn=self.collate)
        self.batches = iter(loader)  # draws the loader's base seed, as the Trainer's epoch iterator does
        self.rng = torch.get_rng_state()
        torch.set_rng_state(outer)

    def collate(self, idx):
        """Pad to the longest text of the batch, as DataCollatorWithPadding does (input_ids with the pad id, the
        other token columns with 0)."""
        import torch

        cols = self.columns
        width = max(len(cols["input_ids"][i]) for i in idx)

        def padded(key, value):
            return torch.tensor([cols[key][i] + [value] * (width - len(cols[key][i])) for i in idx])

        batch = {key: padded(key, self.pad_id if key == "input_ids" else 0) for key in cols if key != "label"}
        return {**batch, "labels": torch.tensor([cols["label"][i] for i in idx])}

    def step(self) -> float:
        import torch

        outer = torch.get_rng_state()
        torch.set_rng_state(self.rng)
        SIDE[0] = "bare"
        now, stamps, cpu = time.perf_counter, self.stamps, time.process_time()
        stamps["start"].append(now())
        batch = next(self.batches)
        stamps["step_begin"].append(now())
        with self.autocast():
            loss = self.model(**batch).loss
        loss.backward()
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        stamps["pre_opt"].append(now())
        self.opt.step()
        stamps["opt"].append(now())
        self.sched.step()
        self.model.zero_grad(set_to_none=True)
        stamps["step_end"].append(now())
        self.cpu.append(time.process_time() - cpu)
        SIDE[0] = "runner"
        self.rng = torch.get_rng_state()
        torch.set_rng_state(outer)
        return stamps["step_end"][-1] - stamps["start"][-1]

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()

    def close(self) -> None:
        self.probe.close()  # the model is shared by every BareLoop: one probe at a time

    def phases(self) -> dict[str, list[float]]:
        s = self.stamps
        return {"data": [b - a for a, b in zip(s["start"], s["step_begin"])],
                "fwd+bwd+clip": [b - a for a, b in zip(s["step_begin"], s["pre_opt"])],
                "optimizer.step": [b - a for a, b in zip(s["pre_opt"], s["opt"])],
                "sched+zero_grad": [b - a for a, b in zip(s["opt"], s["step_end"])]}

    def train_s(self) -> float:
        return sum(e - s for s, e in zip(self.stamps["start"], self.stamps["step_end"]))


def runner_overrides(data: str | None, steps: int, precision: str, eval_samples: int, tiny: bool) -> list[str]:
    """The `nlpexp` command's arguments (trainer.precision always given: `auto` means bf16 on a CPU with native
    bf16)."""
    return (["task=finsent", "model=minilm", "trainer.epochs=1", f"trainer.max_steps={steps}",
             f"data.max_eval_samples={eval_samples}", f"trainer.precision={precision}"]
            + ([f"data.path={data}"] if data else []) + (["model.pretrained=null"] if tiny else []))


def optimizer_setup(trainer) -> dict:
    """The Trainer's AdamW and schedule, read from the runner's own Trainer (the bare loop copies them)."""
    args, group = trainer.args, trainer.optimizer.param_groups[0]
    return {"lr": args.learning_rate, "weight_decay": args.weight_decay, "betas": (args.adam_beta1, args.adam_beta2),
            "eps": args.adam_epsilon, "fused": bool(group.get("fused")), "foreach": group.get("foreach"),
            "warmup": args.get_warmup_steps(args.max_steps), "max_grad_norm": args.max_grad_norm,
            "scheduler": getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type),
            "optim": getattr(args.optim, "value", args.optim),
            "decay": set(trainer.get_decay_parameter_names(trainer.model))}


def lockstep(overrides: list[str], run_dir: Path, shared: dict, precision: str) -> dict:
    """One run of the `nlpexp` command, in-process (nlpexp.cli.main, its run folder run_dir), whose Trainer's
    train() is wrapped for the run: the wrapper copies the model it is given (the first run: the bare loop's model),
    adds our probe and a timing callback; the callback builds the bare loop when training begins (the runner's
    optimizer and batches are known then) and runs one bare step next to each runner step (after it on even steps,
    before it on odd ones). `shared` carries the bare loop's model and the first run's start weights across runs."""
    import torch
    import transformers
    from hydra.core.global_hydra import GlobalHydra
    from transformers import TrainerCallback

    from nlpexp.cli import main as nlpexp_main

    stamps = {k: [] for k in ("step_begin", "pre_opt", "opt", "step_end", "paused", "cpu_end", "cpu_paused")}
    seen, original_train = {}, transformers.Trainer.train

    class Lockstep(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            entered, trainer = time.perf_counter(), seen["trainer"]
            seen["setup"] = optimizer_setup(trainer)
            size = args.per_device_train_batch_size * args.gradient_accumulation_steps
            order = list(iter(trainer._get_train_sampler()))  # the runner's sampler, same (seed, epoch 0)
            per_epoch = -(-len(order) // size)
            if args.max_steps > per_epoch:
                seen["error"] = (f"--steps {args.max_steps} is more than one epoch ({per_epoch} steps of {size}) on "
                                 "this data")
                raise RuntimeError(seen["error"])
            seen["batches"] = [order[k:k + size] for k in range(0, args.max_steps * size, size)]
            columns = trainer.train_dataset.to_dict()  # plain lists (a datasets Column reads each row back)
            pad_id = trainer.processing_class.pad_token_id

            def make_bare(batches):
                return BareLoop(shared["model"], seen["start_state"], columns, batches, seen["setup"], precision,
                                args.seed, pad_id)

            # untimed: the first batches' shapes once through (the longest batch comes first; the first pass
            # over a new shape costs 10x a step, process-wide, and would fall on whichever side meets it first)
            warm_up = make_bare(seen["batches"][:WARM_UP])
            warm_up.run(min(WARM_UP, len(seen["batches"])))
            warm_up.close()
            seen["bare"] = make_bare(seen["batches"])
            stamps["begin"], stamps["cpu_begin"] = time.perf_counter(), time.process_time()
            seen["bare_setup"] = stamps["begin"] - entered

        def on_step_begin(self, args, state, control, **kw):
            stamps["step_begin"].append(time.perf_counter())
            if state.global_step % 2 == 1:
                self.bare_step()

        def on_pre_optimizer_step(self, args, state, control, **kw):
            stamps["pre_opt"].append(time.perf_counter())

        def on_optimizer_step(self, args, state, control, **kw):
            stamps["opt"].append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            stamps["step_end"].append(time.perf_counter())
            stamps["cpu_end"].append(time.process_time())
            if state.global_step % 2 == 1:  # counted from 1 here: the step just ended was an even one
                self.bare_step()

        @staticmethod
        def bare_step():
            paused, cpu = time.perf_counter(), time.process_time()
            seen["bare"].step()
            stamps["paused"].append((paused, time.perf_counter()))  # (from, to)
            stamps["cpu_paused"].append(time.process_time() - cpu)

    def timed_train(trainer, *args, **kwargs):
        if "trainer" in seen:
            raise RuntimeError("bench/overhead.py times one Trainer.train() per run; this run called it twice")
        model = trainer.model
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if "model" not in shared:  # the first run: the bare loop's model, a copy of the runner's as it trains it
            shared["model"], shared["start_state"] = copy.deepcopy(model), state
        first = shared["start_state"]
        seen["same_start"] = state.keys() == first.keys() and all(torch.equal(state[k], first[k]) for k in state)
        seen["start_state"], seen["trainer"] = state, trainer
        trainer.add_callback(Lockstep())  # after the runner's own callbacks
        seen["probe"] = Probe(model)
        seen["entered"] = time.perf_counter()
        try:
            out = original_train(trainer, *args, **kwargs)
        finally:
            seen["returned"] = time.perf_counter()
            seen["probe"].close()
        seen["train_runtime"] = out.metrics.get("train_runtime")
        return out

    argv, code, out, err = sys.argv, 0, io.StringIO(), io.StringIO()
    transformers.Trainer.train = timed_train
    try:
        sys.argv = ["nlpexp", *overrides, f"hydra.run.dir={run_dir}"]
        GlobalHydra.instance().clear()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            nlpexp_main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    finally:
        transformers.Trainer.train = original_train
        sys.argv = argv
        GlobalHydra.instance().clear()
        if "bare" in seen:
            seen["bare"].close()
    if "error" in seen:
        sys.exit(f"bench/overhead.py: {seen['error']}")
    if code or not stamps["step_end"] or "train_runtime" not in seen:
        sys.exit(f"bench/overhead.py: the runner failed (exit {code}): nlpexp {' '.join(overrides)}\n"
                 f"{(out.getvalue() + err.getvalue())[-3000:]}")
    trainer, s = seen["trainer"], stamps

    def net(a, b):  # the runner's time from a to b, the bare steps in between taken out
        return b - a - sum(max(0.0, min(b, y) - max(a, x)) for x, y in s["paused"])

    ends = [s["begin"]] + s["step_end"][:-1]
    parts = {"data": [net(e, b) for e, b in zip(ends, s["step_begin"])],
             "fwd+bwd+clip": [net(a, b) for a, b in zip(s["step_begin"], s["pre_opt"])],
             "optimizer.step": [net(a, b) for a, b in zip(s["pre_opt"], s["opt"])],
             "sched+zero_grad": [net(a, b) for a, b in zip(s["opt"], s["step_end"])]}
    per_step = [net(e, b) for e, b in zip(ends, s["step_end"])]
    cpu_ends = [s["cpu_begin"]] + s["cpu_end"][:-1]
    cpu = [b - a - sum(c for (x, _), c in zip(s["paused"], s["cpu_paused"]) if e < x < w)
           for a, b, e, w in zip(cpu_ends, s["cpu_end"], ends, s["step_end"])]
    paused = sum(y - x for x, y in s["paused"])
    window = (s["begin"], s["step_end"][-1])
    gc_pauses = [g for g in GC_PAUSES if window[0] <= g[0] <= window[1]]
    return {"train_s": sum(per_step), "per_step": per_step, "cpu_s": sum(cpu), "gc": gc_pauses, "phases": parts,
            "bare": seen["bare"], "model": trainer.model, "tokenizer": trainer.processing_class,
            "dataset": trainer.train_dataset, "train_size": len(trainer.train_dataset),
            "eval_size": len(trainer.eval_dataset), "batch_size": trainer.args.per_device_train_batch_size,
            "setup_s": s["begin"] - seen["entered"] - seen["bare_setup"],
            "after_s": net(s["step_end"][-1], seen["returned"]), "probe": seen["probe"],
            "train_runtime": seen["train_runtime"] - paused - seen["bare_setup"], "same_start": seen["same_start"],
            "setup": seen["setup"], "batches": seen["batches"],
            "precision": "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else "fp32",
            "mixed_precision": str(trainer.accelerator.mixed_precision)}


def collator_costs(tokenizer, dataset, bare: BareLoop, batches) -> dict:
    """Milliseconds per batch: the runner's rows fetch + DataCollatorWithPadding vs the bare loop's pad."""
    from transformers import DataCollatorWithPadding

    collator = DataCollatorWithPadding(tokenizer)
    started = time.perf_counter()
    rows = [dataset.__getitems__(b) for b in batches]
    fetch = time.perf_counter() - started
    started = time.perf_counter()
    for batch in rows:
        collator(batch)
    runner = time.perf_counter() - started
    started = time.perf_counter()
    for idx in batches:
        bare.collate(idx)
    own = time.perf_counter() - started
    return {"datasets rows": fetch * 1e3 / len(batches), "DataCollatorWithPadding": runner * 1e3 / len(batches),
            "bare pad": own * 1e3 / len(batches)}


def bootstrap(runner: list[float], bare: list[float], draws: int = 2000) -> tuple[float, float]:
    """95% interval of sum(runner) / sum(bare), the steps resampled with their pairs (each step of one side next
    to the same step of the other, seen under the same load)."""
    import random

    rng, n, ratios = random.Random(0), len(runner), []
    for _ in range(draws):
        picks = [rng.randrange(n) for _ in range(n)]
        ratios.append(sum(runner[i] for i in picks) / sum(bare[i] for i in picks))
    ratios.sort()
    return ratios[int(0.025 * draws)], ratios[int(0.975 * draws) - 1]


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA) if DEFAULT_DATA.exists() else None,
                        help="Financial PhraseBank file (default: ../shared/datasets copy, else the embedded sample)")
    parser.add_argument("--steps", type=int, default=60, help="optimiser steps (batch 8) on each side")
    parser.add_argument("--repeats", type=int, default=2,
                        help="lockstep runs (each a whole runner fit); >1: each step's best of them is compared")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--eval-samples", type=int, default=128,
                        help="validation and test texts (the runner's evaluations, not timed)")
    parser.add_argument("--profile", action="store_true", help="the per-phase split even when the goal is met")
    parser.add_argument("--tiny", action="store_true",
                        help="seconds: MiniLM built small (model.pretrained=null), the embedded sample, 2 steps x 2 "
                             "runs, 8 evaluation texts (a check that the bench works, not a measurement)")
    opts = parser.parse_args()
    if opts.tiny:
        opts.data, opts.steps, opts.repeats, opts.eval_samples = None, 2, 2, 8
    wall, load_before = time.perf_counter(), os.getloadavg()[0]
    gc.callbacks.append(_gc_timer)
    overrides = runner_overrides(opts.data, opts.steps, opts.precision, opts.eval_samples, opts.tiny)
    runs, shared = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(opts.repeats):
            runs.append(lockstep(overrides, Path(tmp) / f"run{i}", shared, opts.precision))
    first, setup = runs[0], runs[0]["setup"]
    costs = collator_costs(first["tokenizer"], first["dataset"], first["bare"], first["batches"][:40])
    if opts.precision != first["precision"]:
        sys.exit(f"bench/overhead.py: asked for {opts.precision}, the runner's Trainer trained in "
                 f"{first['precision']}: the comparison would not be fair")
    runner_steps = [r["per_step"] for r in runs]  # [repeat][step] seconds
    bare_steps = [[e - b for b, e in zip(r["bare"].stamps["start"], r["bare"].stamps["step_end"])] for r in runs]
    r_s, b_s = sum(map(sum, runner_steps)), sum(map(sum, bare_steps))
    # each step's best of the repeats (load only ever adds time): the estimate used when there are repeats
    r_best = [min(col) for col in zip(*runner_steps)]
    b_best = [min(col) for col in zip(*bare_steps)]
    ratio = sum(r_best) / sum(b_best) if opts.repeats > 1 else r_s / b_s
    low, high = bootstrap(r_best, b_best)
    paired = [a / b for ra, ba in zip(runner_steps, bare_steps) for a, b in zip(ra, ba)]
    same_batches = all(r["probe"].batches == r["bare"].probe.batches for r in runs) and all(
        len(r["probe"].batches) == opts.steps for r in runs)
    dloss = max(abs(a - b) for r in runs for a, b in zip(r["probe"].losses, r["bare"].probe.losses))
    tokens = sum(shape[0] * shape[1] for shape, _ in first["probe"].batches)
    model, size = first["model"], first["batch_size"]
    built = f", built small: {model.config.num_hidden_layers} layers of {model.config.hidden_size}" if opts.tiny else ""
    print(f"MiniLM ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters{built}) on "
          f"{opts.data or 'the embedded sample'}: train split {first['train_size']}, {opts.steps} steps of batch "
          f"{size} ({tokens} padded tokens) x {opts.repeats} lockstep runs, {torch.get_num_threads()} threads, "
          f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"runner trained in {first['precision']} (accelerate mixed_precision={first['mixed_precision']}), bare "
          f"loop {opts.precision}; both: {setup['optim']} (fused={setup['fused']}), lr {setup['lr']:g}, "
          f"{setup['scheduler']} schedule with {setup['warmup']} warm-up steps, clip {setup['max_grad_norm']}")
    print(f"same start weights (each run's runner vs the first's, copied to the bare loop): "
          f"{all(r['same_start'] for r in runs)}; the runner's batches in the runner's order "
          f"on both sides, every step: {same_batches}; mean loss runner "
          f"{statistics.mean(first['probe'].losses):.4f}, bare {statistics.mean(first['bare'].probe.losses):.4f} "
          f"(largest per-step difference {dloss:.1e})")
    r_cpu, b_cpu = sum(r["cpu_s"] for r in runs), sum(sum(r["bare"].cpu) for r in runs)
    print(f"{'training phase':<30}{'wall s, each run':>22}{'steps/s':>9}{'best/step s':>13}{'median ms':>11}"
          f"{'CPU s':>8}")
    for name, per, best, cpu in (("runner (nlpexp fit, Trainer)", runner_steps, r_best, r_cpu),
                                 ("bare torch loop", bare_steps, b_best, b_cpu)):
        each = ", ".join(f"{sum(x):.1f}" for x in per)
        total = sum(map(sum, per))
        print(f"{name:<30}{each:>22}{opts.steps * opts.repeats / total:>9.3f}{sum(best):>13.1f}"
              f"{statistics.median(x for row in per for x in row) * 1e3:>11.1f}{cpu:>8.1f}")
    quart = statistics.quantiles(paired, n=4)
    medians = [sum(statistics.median(x for r in runs for x in side(r)[key]) for key in PHASES)
               for side in (lambda r: r["phases"], lambda r: r["bare"].phases())]
    print(f"ratio of the totals {r_s / b_s:.3f}" + (f", of each step's best of {opts.repeats} runs "
                                                    f"{sum(r_best) / sum(b_best):.3f}" if opts.repeats > 1 else "")
          + f"; its 95% interval {low:.3f}-{high:.3f} (steps resampled in pairs)")
    print(f"cross-checks: paired per-step ratio median {statistics.median(paired):.3f} (quartiles {quart[0]:.3f}-"
          f"{quart[2]:.3f}), sum of the per-phase medians {medians[0] / medians[1]:.3f}, CPU time {r_cpu / b_cpu:.3f}, "
          f"without the first step (AdamW allocates its state) {sum(r_best[1:]) / sum(b_best[1:]):.3f}; first step "
          f"runner {r_best[0]:.2f}s, bare {b_best[0]:.2f}s")
    verdict = ("meets the goal" if high <= GOAL else "is above the goal" if low > GOAL else
               "cannot be told from the goal at this load")
    print(f"verdict: the runner's training phase {verdict} (<= {GOAL})")
    print(f"runner outside the training phase (not timed above): setup {first['setup_s']:.1f}s, end of epoch "
          f"(evaluation of {first['eval_size']} texts, checkpoint, best-model reload) {first['after_s']:.1f}s; "
          f"the Trainer's own train_runtime (the evaluation included, the bare steps taken out) "
          f"{first['train_runtime']:.1f}s")
    if opts.profile or ratio > GOAL:
        print(f"{'per step, median ms (sum s)':<30}{'runner':>18}{'bare':>18}")
        for key in PHASES:
            rv = [x for r in runs for x in r["phases"][key]]
            bv = [x for r in runs for x in r["bare"].phases()[key]]
            print(f"  {key:<28}{statistics.median(rv) * 1e3:>9.1f} ({sum(rv):6.2f}){statistics.median(bv) * 1e3:>9.1f}"
                  f" ({sum(bv):6.2f})")
        print("collation alone, ms per batch: " + ", ".join(f"{k} {v:.2f}" for k, v in costs.items()))
        pauses = [g for r in runs for g in r["gc"]]
        print("Python garbage collections in the timed steps: " + "; ".join(
            f"{side} {sum(1 for g in pauses if g[3] == side)} ({sum(g[1] for g in pauses if g[3] == side):.2f}s, "
            f"generation 2: {sum(1 for g in pauses if g[3] == side and g[2] == 2)})" for side in ("runner", "bare")))
    what = f"each step's best of {opts.repeats} runs" if opts.repeats > 1 else "one run"
    print(f"runner / bare, training-phase wall time ({what}; goal <= {GOAL}; "
          f"{time.perf_counter() - wall:.0f}s in all):")
    print(f"ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
