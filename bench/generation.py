"""Story generation speed: our key/value-cached decoding vs the original study's loop, which re-ran the model
over the whole sequence generated so far at every step. Same model, same prompt, greedy, 200 new tokens (both
produce the same tokens: checked), batch 1.

    python bench/generation.py [--ckpt RUN_FOLDER] [--length 200] [--repeats 3] [--threads 1]
    python bench/generation.py --tiny   # 16 new tokens, once: seconds (the test suite runs this)

Without --ckpt it builds the configured transformer_encdec and the causal-LM transformer (untrained: speed does
not depend on the weights) over a 4,000-token vocabulary, the task's BPE size. Ends with `ratio X.XX`: the
smaller speed-up of cached decoding over the naive loop.
"""
import argparse
import statistics
import time


def naive(model, prompt, length: int):
    """The original loop: every step re-reads the full sequence (no cache)."""
    import torch

    src_or_prompt, ids = prompt, torch.full((1, 1), model.bos_id)
    out = []
    with torch.no_grad():
        for _ in range(length):
            if model.objective == "encdec":
                logits = model(src_or_prompt, ids)[:, -1]
            else:
                logits = model(torch.cat([ids[:, :1], src_or_prompt, ids[:, 1:]], dim=1))[:, -1]
            nxt = logits.argmax(-1)
            out.append(int(nxt))
            ids = torch.cat([ids, nxt[:, None]], dim=1)
    return out


def cached(model, prompt, length: int):
    import torch

    from nlpexp.training import decoding

    with torch.no_grad():
        return decoding.generate(model, prompt, length, strategy="greedy", eos_id=None)[0]


def timed(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    import torch
    from omegaconf import OmegaConf

    from nlpexp.tasks.story.transformer import StoryCausalLM
    from nlpexp.tasks.story.transformer_encdec import StoryEncDec

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", default=None, help="a task=story run folder (transformer_encdec or causal_lm)")
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tiny", action="store_true", help="seconds-long sizes: 16 new tokens, 1 repeat")
    args = parser.parse_args()
    if args.tiny:
        args.length, args.repeats = 16, 1
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.ckpt:
        from pathlib import Path

        from nlpexp.tasks.story.recipe import load_checkpoint

        models = {"checkpoint": load_checkpoint(Path(args.ckpt) / "checkpoints" / "final", "cpu")[0]}
    else:
        conf = conf_dir()
        task = OmegaConf.create({"max_len": args.length + 56, "window": 32})
        encdec_cfg = OmegaConf.load(conf / "model" / "transformer_encdec.yaml")
        lm_cfg = OmegaConf.merge(OmegaConf.load(conf / "model" / "transformer.yaml"), {"objective": "causal_lm"})
        def sizes(m):  # a 4,000-token BPE plus the pad id: our story models' vocabulary
            return dict(d_model=m.d_model, num_layers=m.num_layers, num_heads=m.num_heads, d_ff=m.d_ff,
                        dropout=m.dropout, max_len=task.max_len, pad_id=4000, bos_id=0)

        models = {"transformer_encdec": StoryEncDec(4001, **sizes(encdec_cfg), eos_id=0),
                  "transformer causal_lm": StoryCausalLM(4001, **sizes(lm_cfg))}
    print(f"greedy, batch 1, random 12-token prompt, {args.length} new tokens, {args.threads} thread(s), "
          f"median of {args.repeats}")
    print(f"{'model':<24}{'naive tok/s':>14}{'cached tok/s':>14}{'speed-up':>10}")
    speedups = []
    for name, model in models.items():
        model.eval()
        pad = model.settings["pad_id"]  # prompt ids: any real token (pad is the last id)
        prompt = torch.randint(1, pad, (1, 12), generator=torch.Generator().manual_seed(1))
        t_naive, a = timed(lambda: naive(model, prompt, args.length), args.repeats)
        t_cached, b = timed(lambda: cached(model, prompt, args.length), args.repeats)
        assert a == b, "cached decoding must produce the same tokens as the naive loop"
        print(f"{name:<24}{args.length / t_naive:>14.1f}{args.length / t_cached:>14.1f}{t_naive / t_cached:>9.1f}x")
        speedups.append(t_naive / t_cached)
    print(f"ratio {min(speedups):.2f}")  # the smaller speed-up of cached decoding over re-running everything


def conf_dir():
    from pathlib import Path

    import nlpexp

    return Path(nlpexp.__file__).parent / "conf"


if __name__ == "__main__":
    main()
