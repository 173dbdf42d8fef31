"""Generation speed: our decoding vs the original study's loop, same model, 300 characters.

The original loop (batch 1): every step re-tokenises the last 32 characters of the text with a BERT-style
tokenizer, runs the whole model on them, and samples in Python (softmax, top-10, skip special tokens and
characters among the last 30). Ours (nlpexp.training.decoding.generate): ids stay a tensor (no re-tokenising), several
continuations advance as one batch, and bert_lstm keeps its LSTM state (one LSTM step per character).

    python bench/novel_generation.py [--ckpt RUN_FOLDER] [--batch 16] [--length 300] [--repeats 3]
    python bench/novel_generation.py --tiny   # 12 characters, batch 2, once: seconds (the test suite runs this)

Without --ckpt it builds the novel_continuation experiment's bert_lstm (untrained: speed does not depend on
the weights) over a 4,400-character vocabulary, the size of the real novel's. Ends with `ratio X.XX`: the last
way of generating (the batched one) against the original loop, in characters per second.
"""
import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
PROMPT = "话说那猴王得了道之后，回到花果山水帘洞，众猴都来拜见，齐声道：大王一去许久，我等好生想念。"


def char_tokenizer(vocab):
    """bert-base-chinese style tokenisation of characters: [CLS] + one token per CJK character + [SEP]."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocab.tokens)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(handle_chinese_chars=True, lowercase=False, strip_accents=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab.cls_id), ("[SEP]", vocab.index["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]")


def original_loop(model, vocab, tokenizer, prompt: str, length: int, seq_len: int, seed: int) -> str:
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    special = set(vocab.special_ids)
    text = prompt
    with torch.no_grad():
        for _ in range(length):
            enc = tokenizer(text[-seq_len:], return_tensors="pt")
            logits = model.last_logits(enc["input_ids"][:, 1:-1])[0]  # the model adds its own [CLS]
            probs = torch.softmax(logits, -1).numpy()
            recent = set(text[-30:])
            candidates = [i for i in np.argsort(-probs)[:10 + len(special) + 30]
                          if i not in special and vocab.tokens[i] not in recent][:10]
            p = probs[candidates] / probs[candidates].sum()
            text += vocab.tokens[rng.choice(candidates, p=p)]
    return text[len(prompt):]


def ours(model, vocab, prompt: str, length: int, batch: int, stateful: bool, seed: int):
    import torch

    from nlpexp.training import decoding

    prompts = torch.tensor([vocab.encode(prompt)] * batch)
    with torch.no_grad():
        return decoding.generate(model, prompts, length, top_k=10, banned_ids=vocab.special_ids, repeat_window=30,
                                 generator=torch.Generator().manual_seed(seed), stateful=stateful)


def build(ckpt: str | None):
    import torch
    from hydra import compose, initialize_config_module

    from nlpexp.tasks.novel import bert
    from nlpexp.tasks.novel.data import CharVocab
    from nlpexp.tasks.novel.recipe import load_checkpoint

    if ckpt:
        return load_checkpoint(Path(ckpt) / "checkpoints" / "best", "cpu")
    with initialize_config_module("nlpexp.conf", version_base="1.3"):
        cfg = compose("config", overrides=["experiment=novel_continuation"])
    chars = sorted(set(PROMPT)) + [chr(0x4E00 + i) for i in range(4400)]
    vocab = CharVocab.from_text("".join(dict.fromkeys(chars)))
    torch.manual_seed(0)
    from nlpexp.config import registry
    from nlpexp.config.schema import typed

    config = typed(cfg.model, registry.MODELS[cfg.model.name].adapters["novel"].config)
    return bert.build(config, vocab, cfg.task.seq_len).eval(), vocab, cfg.task.seq_len


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", help="a novel run folder (default: an untrained model of the experiment's size)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="seconds-long sizes: 12 characters, batch 2, 1 repeat")
    args = parser.parse_args()
    if args.tiny:
        args.length, args.batch, args.repeats = 12, 2, 1
    import torch

    model, vocab, seq_len = build(args.ckpt)
    tokenizer = char_tokenizer(vocab)
    lstm = getattr(model, "head", None) == "lstm"
    cases = [("original loop: re-tokenise 32 chars, full model, batch 1", 1,
              lambda s: original_loop(model, vocab, tokenizer, PROMPT, args.length, seq_len, s)),
             ("ours: ids kept, window re-read, batch 1", 1,
              lambda s: ours(model, vocab, PROMPT, args.length, 1, False, s))]
    if lstm:
        cases.append(("ours: LSTM keeps its state, batch 1", 1,
                      lambda s: ours(model, vocab, PROMPT, args.length, 1, True, s)))
    cases.append((f"ours: window re-read, batch {args.batch}", args.batch,
                  lambda s: ours(model, vocab, PROMPT, args.length, args.batch, False, s)))
    if lstm:
        cases.append((f"ours: LSTM keeps its state, batch {args.batch}", args.batch,
                      lambda s: ours(model, vocab, PROMPT, args.length, args.batch, True, s)))
    print(f"model: {type(model).__name__} ({getattr(model, 'head', '')}), vocabulary {len(vocab)}, window "
          f"{seq_len}, {args.length} characters per continuation, torch threads {torch.get_num_threads()}, "
          f"median of {args.repeats}")
    base = None
    print(f"{'generation':<62}{'chars/s':>10}{'ratio':>8}")
    for name, batch, fn in cases:
        fn(0)  # warm-up
        times = []
        for r in range(args.repeats):
            started = time.perf_counter()
            fn(r + 1)
            times.append(time.perf_counter() - started)
        rate = batch * args.length / statistics.median(times)
        base = base or rate
        print(f"{name:<62}{rate:>10.1f}{rate / base:>7.1f}x")
    print(f"ratio {rate / base:.2f}")  # the last way of generating against the first


if __name__ == "__main__":
    main()
