"""Story generation recipe (ROCStories format): first sentence in, the next four sentences out.

train:    stories -> split by position -> tokenizer (byte-level BPE trained on the training stories; hub GPT-2's
          own) -> model (transformer: next-token classifier or causal LM; transformer_encdec; gpt2) -> fit with
          gradient accumulation (epochs=0: zero-shot) -> test perplexity of the references -> generations at each
          of generate.eval_temperatures -> corpus BLEU-1/2/4 (sacrebleu; its signature) and mean sentence BLEU,
          distinct-1/2, repeated 4-grams, each test metric also as per-story statistics (`items`: intervals)
eval:     a saved run (ckpt=) on this config's test split and decoding settings; generate.search=[...] scores a
          grid of settings on the validation stories and tests the best (tune decoding without training)
generate: a saved run (ckpt=) or the configured pretrained model continues prompt="..."
Outputs: checkpoints/final/, history.csv, samples.jsonl (temperature, prompt, reference, generation), metrics.json.
"""
import json
import math
import time
from pathlib import Path

from nlpexp.config import registry
from nlpexp.errors import UserError
from nlpexp.config.schema import typed
from nlpexp.tasks.story.config import PretrainedModel
from nlpexp.tasks.story.contract import StoryAdapter, StoryModel, read_spec


def run(cfg, run_dir: Path, device: str):
    return {"train": train, "eval": evaluate_saved, "generate": generate}[cfg.mode](cfg, run_dir, device)


def adapter(model: str) -> StoryAdapter:
    return registry.adapter(model, "story")


def train(cfg, run_dir: Path, device: str):
    import pandas as pd

    from nlpexp.tasks.story.data import load_stories

    data = load_stories(cfg.data)
    print(f"data: {data['origin']}: stories " + ", ".join(f"{k} {len(data[k])}" for k in ("train", "validation",
                                                                                           "test")))
    train_texts = (data["train"]["prompt"] + " " + data["train"]["reference"]).tolist()
    config = typed(cfg.model, registry.MODELS[cfg.model.name].adapters["story"].config)
    built = adapter(cfg.model.name).build(config, typed(cfg.task, config.task()), train_texts)
    tok, model = built.tokenizer, built.model.to(device)
    pairs = {k: encode_pairs(tok, data[k]) for k in ("train", "validation", "test") if len(data[k])}
    history, info = fit(cfg, model, pairs["train"], pairs.get("validation"), device, run_dir, built.lr_scales)
    model.save(run_dir / "checkpoints" / "final", tok)

    metrics, found = evaluate(cfg, model, tok, data, pairs["test"], run_dir, device)
    if "validation" in pairs:  # the sweep objective: a validation number, never a test one
        from nlpexp.report.metrics import perplexity
        from nlpexp.training.precision import of_run

        val_nll = mean_nll(model, model.examples(pairs["validation"], train=False), int(cfg.trainer.eval_batch_size),
                           device, of_run(cfg, device, strict=False))
        metrics.update(val_loss=round(val_nll, 5), val_perplexity=round(perplexity(val_nll), 4))
    pd.DataFrame(history or [{"epoch": 0}]).to_csv(run_dir / "history.csv", index=False)
    return {"metrics": metrics, "objective": "val_loss" if "val_loss" in metrics else "", "origin": data["origin"],
            "stories": {k: len(data[k]) for k in ("train", "validation", "test")}, "left_out": data["counts"],
            **({"dataset": data["dataset"]} if "dataset" in data else {}), "vocab_size": len(tok),
            "objective_kind": model.objective,
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "total_params": sum(p.numel() for p in model.parameters()),
            "decoding": decode_settings(cfg.generate), **found, **info}


def load_checkpoint(folder: Path, device: str):
    """(model, tokenizer) of a checkpoints/final folder, through the adapter named in its story_model.json; a
    folder without saved_files.json is refused (saved.require_manifest: its files could not be checked)."""
    from nlpexp.runs import loading

    with loading(folder, require=True):
        name = read_spec(folder)["model"]
    return adapter(name).load(folder, device)


def encode_pairs(tok, frame) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, target ids) per story; the target keeps its leading space (BPE marks word starts)."""
    prompts = tok(frame["prompt"].tolist(), add_special_tokens=False)["input_ids"]
    targets = tok([" " + r for r in frame["reference"]], add_special_tokens=False)["input_ids"]
    return list(zip(prompts, targets))


# -- training: nlpexp.training.loop ----------------------------------------------------------------------------------
def nll_sum(model: StoryModel, batch, smoothing: float = 0.0):
    """The batch's summed target-token NLL (a 0-d tensor), in fp32 whatever the autocast; `smoothing`
    (trainer.label_smoothing, training only) spreads that share of each target's mass over the vocabulary."""
    return token_nll(*model.scores(batch), "sum", smoothing)


def token_nll(logits, labels, reduction: str = "sum", smoothing: float = 0.0):
    """Cross-entropy of the scored targets (labels -100: not scored, 0 under reduction="none"), in fp32."""
    import torch

    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1),
                                             ignore_index=-100, reduction=reduction, label_smoothing=smoothing)


class StoryJob:
    """The story model's training examples for nlpexp.training.loop: a micro-batch's loss is its summed target-token NLL
    (label-smoothed under trainer.label_smoothing), so accumulated micro-batches give the large batch's per-token
    gradient."""

    unit = "tokens"

    def __init__(self, model: StoryModel, items, batch_size: int, seed: int, smoothing: float = 0.0):
        self.model, self.items, self.batch_size, self.seed = model, items, batch_size, seed
        self.smoothing = smoothing

    def batches(self, epoch: int):
        from nlpexp.training.loop import seeded_order

        order = seeded_order(len(self.items), self.seed, epoch)
        return [self.model.collate([self.items[j] for j in order[i:i + self.batch_size]])
                for i in range(0, len(order), self.batch_size)]

    def units(self, batch) -> int:
        return int((batch["labels"] != -100).sum())

    def loss_sum(self, batch):
        return nll_sum(self.model, batch, self.smoothing)


class ValidationLoss:
    """The epoch's validation loss in history.csv. The final weights are the ones tested, unless trainer.patience
    stops training early: then the best epoch's weights (kept in memory, `keep=True`) are put back."""

    def __init__(self, model, items, batch_size: int, device: str, precision: str, keep: bool = False):
        self.model, self.items, self.batch_size = model, items, batch_size
        self.device, self.precision, self.keep = device, precision, keep
        self.best, self.weights = math.inf, None

    def __call__(self, epoch: float, step: int) -> dict:
        if not self.items:
            return {}
        loss = mean_nll(self.model, self.items, self.batch_size, self.device, self.precision)
        best = loss < self.best
        if best:
            self.best = loss
            if self.keep:
                self.weights = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        return {"val_loss": round(loss, 5), "best": best}

    def restore_best(self) -> None:
        if self.weights is not None:
            self.model.load_state_dict(self.weights)

    def state(self) -> dict:
        return {"best": self.best, **({f"weights.{k}": v for k, v in self.weights.items()} if self.weights else {})}

    def load_state(self, state: dict) -> None:
        self.best = float(state["best"])
        weights = {k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("weights.")}
        self.weights = weights or None


def mean_nll(model, items, batch_size: int, device: str, precision: str = "fp32") -> float:
    """Mean target-token NLL of the examples, in length-sorted batches."""
    return item_nll(model, items, batch_size, device, precision)[0]


def item_nll(model, items, batch_size: int, device: str, precision: str = "fp32") -> tuple:
    """(mean target-token NLL of the examples, each example's summed NLL, each example's scored tokens), the
    last two in the examples' order: the per-item losses a perplexity interval resamples. The mean is summed
    batch by batch as it always was (the per-item sums in fp32 would move its last digits)."""
    import torch

    from nlpexp.report.console import Progress
    from nlpexp.training.precision import autocast

    model.eval()
    order = sorted(range(len(items)), key=lambda i: sum(len(v) for v in items[i].values() if isinstance(v, list)))
    nll, count = 0.0, 0
    sums, tokens = [0.0] * len(items), [0] * len(items)
    with torch.inference_mode(), autocast(precision, device), \
            Progress(len(order), "evaluate", unit="story", every=None, leave=False) as bar:
        for i in range(0, len(order), batch_size):
            part = order[i:i + batch_size]
            bar.update(len(part))
            batch = {k: v.to(device) for k, v in model.collate([items[j] for j in part]).items()}
            logits, labels = model.scores(batch)
            nll += token_nll(logits, labels).item()
            count += int((batch["labels"] != -100).sum())
            per_item = token_nll(logits, labels, "none").view(len(part), -1).sum(1).tolist()
            scored = (labels != -100).view(len(part), -1).sum(1).tolist()
            for j, s, c in zip(part, per_item, scored):
                sums[j], tokens[j] = s, c
    return nll / max(count, 1), sums, tokens


def fit(cfg, model: StoryModel, train_pairs, val_pairs, device: str, run_dir: Path | None = None,
        lr_scales: dict | None = None):
    """nlpexp.training.loop over the training stories (epochs=0: zero-shot, the model as built or downloaded)."""
    from nlpexp.report import loggers
    from nlpexp.training import loop

    tr = cfg.trainer
    items = model.examples(train_pairs, train=True)
    val_items = model.examples(val_pairs, train=False) if val_pairs else []
    settings = loop.Settings.of(tr, device)
    validation = ValidationLoss(model, val_items, int(tr.eval_batch_size), device, settings.precision,
                                keep=settings.patience > 0)
    job = StoryJob(model, items, int(tr.batch_size), int(cfg.seed), float(tr.get("label_smoothing") or 0.0))
    history, info = loop.fit(job, settings, device, optimizer=loop.scaled_adamw(model, lr_scales or {}),
                             run_dir=run_dir, resume_from=cfg.get("resume_from"),
                             on_log=loggers.step_logger(cfg, run_dir), evaluate=validation)
    if "early_stop" in info:
        validation.restore_best()
    return history, {"train_examples": len(items), **info}


# -- generation -------------------------------------------------------------------------------------------
def decode_settings(g, temperature=None) -> dict:
    """The decoding controls every wing shares (nlpexp.training.decoding.CONTROLS), then story's stop rules and cuts."""
    from nlpexp.training.decoding import controls

    return {**controls(g), "temperature": float(g.temperature if temperature is None else temperature),
            "max_sentences": int(g.max_sentences), "cut_repeated_kgram": int(g.cut_repeated_kgram),
            "max_new_tokens": int(g.max_new_tokens), "no_empty_sentences": bool(g.get("no_empty_sentences", False))}


def finish_text(text: str, settings: dict) -> str:
    from nlpexp.training.decoding import cut_after_sentences, cut_at_repeated_kgram

    text = cut_after_sentences(text.strip(), settings["max_sentences"])
    return cut_at_repeated_kgram(text, settings["cut_repeated_kgram"])


def continue_prompts(model: StoryModel, tok, prompts: list[list[int]], texts: list[str], settings: dict, seed: int,
                     batch_size: int = 64, desc: str = "decode"):
    """Generated texts for the prompt ids (`texts`: the prompts as written), in the model's batches (GPT-2 and
    bert2bert through transformers' `generate`, ours through nlpexp.training.decoding.generate with their own cache, all
    under nlpexp.training.decoding.processors), cased like the prompt if the model writes lower case, cut after
    max_sentences and a repeated k-gram."""
    import torch

    from nlpexp.report import console
    from nlpexp.training import decoding

    sentence_ids = decoding.sentence_end_ids(tok)
    lowercase = decoding.folds_case(tok)  # an uncased BERT writes lower case: its text is given case back
    words = decoding.word_ids(tok) if settings["no_empty_sentences"] else None
    out: list = [None] * len(prompts)
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(int(seed))  # multinomial's device
    with torch.inference_mode(), console.Progress(len(prompts), desc, unit="story", every=None, leave=False) as bar:
        for k, group in enumerate(model.prompt_groups(prompts, batch_size)):
            rows, max_new = model.fit_positions([prompts[i] for i in group], settings["max_new_tokens"])
            ids = model.continue_ids(rows, max_new, settings, sentence_ids=sentence_ids, words=words,
                                     eos_id=tok.eos_token_id, seed=int(seed) + k, generator=gen)
            for i, row in zip(group, ids):
                text = tok.decode(row, skip_special_tokens=True)
                out[i] = finish_text(decoding.recase(text, texts[i]) if lowercase else text, settings)
            bar.update(len(group))
    return out


def story_metrics(hyps: list[str], refs: list[str], prefix: str) -> tuple[dict, list, str]:
    """(the metrics of one decoding's test generations, the blocks of per-story statistics their intervals
    resample, sacrebleu's signature). Corpus BLEU-1/2/4 (<prefix>_bleu is BLEU-4) and the length ratio come from
    the block's per-story n-gram counts: sacrebleu's corpus_score of each order, its n-grams counted once."""
    from nlpexp.report import stats
    from nlpexp.report.metrics import distinct_n, mean_sentence_bleu, punctuation_only, repetition_rate, \
        text_repetition

    words = [h.split() for h in hyps]
    bleu, signature = stats.bleu_block(hyps, refs, prefix)
    bleu.metrics = {f"{prefix}_bleu_1": "bleu_1", f"{prefix}_bleu_2": "bleu_2", f"{prefix}_bleu": "bleu_4"}
    corpus = stats.point([bleu])
    sys_len, ref_len = bleu.columns()[:, :2].sum(axis=0)
    rates = [text_repetition(w, 4) for w in words]  # None: a story too short for a 4-gram, left out as before
    blocks = [bleu, stats.distinct_block(words, 1, f"{prefix}_distinct_1"),
              stats.distinct_block(words, 2, f"{prefix}_distinct_2"),
              stats.Block("ratio", {"num": [r or 0.0 for r in rates], "den": [float(r is not None) for r in rates]},
                          {f"{prefix}_repeated_4gram_rate": "ratio"})]
    metrics = {**{key: round(value, 5) for key, value in corpus.items()},
               f"{prefix}_sentence_bleu": round(mean_sentence_bleu(hyps, refs), 5),
               f"{prefix}_length_ratio": round(float(sys_len / max(ref_len, 1)), 4),
               f"{prefix}_distinct_1": round(distinct_n(words, 1), 5),
               f"{prefix}_distinct_2": round(distinct_n(words, 2), 5),
               f"{prefix}_repeated_4gram_rate": round(repetition_rate(words, 4), 5),
               f"{prefix}_mean_words": round(sum(map(len, words)) / max(len(words), 1), 2),
               f"{prefix}_punctuation_only": float(sum(punctuation_only(h) for h in hyps))}
    return metrics, blocks, signature


def copy_hypotheses(frame) -> list[str]:
    """The floor every story model must clear: the first sentence written four times, as the continuation."""
    return [" ".join([p] * 4) for p in frame["prompt"]]


def copy_block(frame):
    """The per-story BLEU counts of copy_hypotheses (report.stats): its BLEU-4 is baseline_copy_bleu."""
    from nlpexp.report import stats

    block, _ = stats.bleu_block(copy_hypotheses(frame), frame["reference"].tolist(), "baseline_copy")
    block.metrics = {"baseline_copy_bleu": "bleu_4"}
    return block


def copy_bleu(frame, block=None) -> float:
    """Corpus BLEU-4 of copy_hypotheses (sacrebleu's, from the counts of copy_block)."""
    from nlpexp.report import stats

    return round(stats.point([block or copy_block(frame)])["baseline_copy_bleu"], 5)


def search_decoding(cfg, model, tok, frame) -> tuple:
    """Each generate.search setting on the validation stories; (the best by corpus BLEU, the table)."""
    from omegaconf import OmegaConf
    from sacrebleu import corpus_bleu

    prompts = [p for p, _ in encode_pairs(tok, frame)]
    table = []
    for n, item in enumerate(cfg.generate.search):
        changes = OmegaConf.to_container(item)
        settings = {**decode_settings(cfg.generate), **changes}
        hyps = continue_prompts(model, tok, prompts, frame["prompt"].tolist(), settings, cfg.seed,
                                int(cfg.generate.batch_size), desc=f"search {n + 1}/{len(cfg.generate.search)}")
        table.append({"settings": changes, "val_bleu": round(corpus_bleu(hyps, [frame["reference"].tolist()]).score
                                                             / 100, 5)})  # corpus BLEU only: no sentence scores
        print(f"decoding {changes}: validation BLEU {table[-1]['val_bleu']:.4f}")
    best = max(table, key=lambda row: row["val_bleu"])
    return best, table


def evaluate(cfg, model, tok, data, test_pairs, run_dir: Path, device: str) -> tuple:
    """Test perplexity of the references, the copy baseline, then the test prompts at each evaluation temperature
    and, with generate.search, under the setting the validation stories chose (chosen_*): (metrics, what the
    search found, the verdict, sacrebleu's signature and the test stories' per-item statistics as `items`), and
    samples.jsonl in run_dir."""
    import numpy as np

    from nlpexp.report import stats
    from nlpexp.report.metrics import perplexity
    from nlpexp.training.precision import of_run

    eb = int(cfg.trainer.eval_batch_size)
    examples = [model.examples([pair], train=False) for pair in test_pairs]  # a story's examples: one, or a
    owner = [k for k, story in enumerate(examples) for _ in story]           # window per target token
    test_nll, nll_sums, tokens = item_nll(model, [e for story in examples for e in story], eb, device,
                                          of_run(cfg, device, strict=False))
    copy = copy_block(data["test"])  # sacrebleu counts the copy baseline's n-grams once, for value and interval
    metrics = {"test_loss": round(test_nll, 5), "test_perplexity": round(perplexity(test_nll), 4),
               "baseline_copy_bleu": copy_bleu(data["test"], copy)}
    prompts, refs = [p for p, _ in test_pairs], data["test"]["reference"].tolist()
    per_story = stats.perplexity_block(np.bincount(owner, nll_sums, len(test_pairs)),
                                       np.bincount(owner, tokens, len(test_pairs)), "test_perplexity")
    per_story.metrics["test_loss"] = "ratio"
    blocks = [per_story, copy]
    runs = [(f"t{float(t)}", decode_settings(cfg.generate, t)) for t in cfg.generate.eval_temperatures]
    found = {}
    if cfg.generate.get("search"):
        best, table = search_decoding(cfg, model, tok, data["validation"])
        found = {"decoding_search": table, "decoding_chosen": best["settings"]}
        runs.append(("chosen", {**decode_settings(cfg.generate), **best["settings"]}))
    rows = []
    for prefix, settings in runs:
        started = time.time()
        hyps = continue_prompts(model, tok, prompts, data["test"]["prompt"].tolist(), settings, cfg.seed,
                                int(cfg.generate.batch_size), desc=f"decode {prefix}")
        scores, scored, signature = story_metrics(hyps, refs, prefix)
        metrics.update(scores)
        blocks += scored
        metrics[f"{prefix}_generation_s"] = round(time.time() - started, 2)
        rows += [{"decoding": prefix, "temperature": float(settings["temperature"]), "prompt": p, "reference": r,
                  "generation": h} for p, r, h in zip(data["test"]["prompt"], refs, hyps)]
    with open(run_dir / "samples.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    items = {"sha256": stats.items_hash(data["test"]["prompt"].tolist(), refs), "blocks": blocks}
    return metrics, {**found, "verdict": verdict(metrics, [prefix for prefix, _ in runs]),
                     "bleu_signature": signature, "items": items}


def verdict(metrics: dict, prefixes: list[str]) -> str:
    """The end summary's line: the best test BLEU of the decodings against copying the first sentence."""
    best = max(prefixes, key=lambda p: metrics[f"{p}_bleu"])
    ours, floor = metrics[f"{best}_bleu"], metrics["baseline_copy_bleu"]
    return (f"test BLEU {ours:.4f} ({best}) {'beats' if ours > floor else 'does NOT beat'} copying the first "
            f"sentence ({floor:.4f})")


def evaluate_saved(cfg, run_dir: Path, device: str):
    """mode=eval ckpt=<run>: the saved model on its own test stories under this config's decoding settings. The
    data options are the saved run's, with the data.* given on this command line over them; on the run's own data
    a data.test_size= or data.max_stories= other than the run's is refused (the split is by position: its test
    stories would include stories the run trained on). Another dataset (data.path=, data.source=, ...) or another
    data.test_path= is scored without the stories the run trained on, counted. (seed= only seeds the decoding.)"""
    from nlpexp import provenance
    from nlpexp.tasks.story.data import load_stories, story_key

    ckpt = Path(str(cfg.ckpt)).expanduser()
    saved_data = saved_run_data(ckpt)
    given = given_keys()
    data = saved_data.copy()
    for key in given:  # data.* given on this command line win over the saved run's
        if key.startswith("data."):
            data[key.split(".", 1)[1]] = cfg.data.get(key.split(".", 1)[1])
    own = same_stories(data, saved_data)
    if own:
        resplit_error(cfg, saved_data, data, given)
    model, tok = load_checkpoint(ckpt / "checkpoints" / "final", device)
    stories = load_stories(data)
    overlap = {}
    if not own or _file(data.get("test_path")) != _file(saved_data.get("test_path")):
        stories, overlap = leave_out_trained(stories, saved_data)
    provenance.record_splits({part: story_key(stories[part]) if len(stories[part]) else []  # the parts scored
                              for part in ("validation", "test")})
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics, found = evaluate(cfg, model, tok, stories, encode_pairs(tok, stories["test"]), run_dir, device)
    return {"metrics": metrics, "objective": "", "origin": stories["origin"], "left_out": stories["counts"],
            "stories": {k: len(stories[k]) for k in ("validation", "test")}, **overlap,
            **({"dataset": stories["dataset"]} if "dataset" in stories else {}),
            "decoding": decode_settings(cfg.generate), **found}


def saved_run_data(ckpt: Path):
    """The saved run's data options (its .hydra/config.yaml, read bounded), as a config."""
    from omegaconf import OmegaConf

    from nlpexp.runs import load_run_file

    try:
        saved = load_run_file(ckpt / ".hydra" / "config.yaml")
    except (OSError, ValueError) as err:
        raise UserError(f"ckpt={ckpt}: its .hydra/config.yaml is unreadable ({err})") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("data"), dict):
        raise UserError(f"ckpt={ckpt}: its .hydra/config.yaml holds no data options (is it a task=story run?)")
    return OmegaConf.create(saved["data"])


def given_keys() -> set[str]:
    """The keys set on this command line (none when Hydra is not running)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return {o.lstrip("+~").split("=", 1)[0] for o in HydraConfig.get().overrides.task}
    except ValueError:
        return set()


def _file(value):
    """The first file of a data.path / data.test_path value, resolved (None: none)."""
    from nlpexp.tasks.story.data import _paths

    paths = _paths(value)
    return paths[0].resolve() if paths else None


STORY_SOURCE_KEYS = ("source", "embedded", "hub_id", "hub_config", "hub_split", "revision")


def same_stories(data, saved_data) -> bool:
    """`data` names the main story source the run was trained on (the same first file, however written)."""
    if data.get("path") or saved_data.get("path"):
        return _file(data.get("path")) == _file(saved_data.get("path"))
    return all(data.get(k) == saved_data.get(k) for k in STORY_SOURCE_KEYS)


def resplit_error(cfg, saved_data, data, given: set) -> None:
    """A data.test_size= / data.max_stories= given on this command line that cuts the run's own stories otherwise
    than in training: refused in one line naming the run's value (its test stories are the last ones by position;
    another cut puts stories the run trained on among them)."""
    from nlpexp.tasks.story.data import DEFAULT_TEST_SIZE

    def effective(key, d):
        value = d.get(key)
        if key == "test_size" and value is None and not d.get("test_path"):
            value = DEFAULT_TEST_SIZE
        return None if value is None else float(value)

    for key in ("test_size", "max_stories"):
        if f"data.{key}" in given and effective(key, data) != effective(key, saved_data):
            shown = saved_data.get(key)
            shown = "null" if shown is None else int(shown) if float(shown).is_integer() else shown  # 8.0: 8
            raise UserError(f"ckpt={cfg.ckpt} was trained with data.{key}={shown}: its test stories are the last ones "
                            f"of its data by position, and another data.{key} tests on stories the run trained on; "
                            f"drop data.{key}= (mode=eval splits as the run did), or give data.test_path=<a file of "
                            "held-out stories>")


def leave_out_trained(stories: dict, saved_data) -> tuple[dict, dict]:
    """`stories` without the validation and test stories the saved run trained on (compared as story_key), and how
    many were left out. When its training stories cannot be read again that is said on stderr and none are."""
    import sys

    from nlpexp.tasks.story.data import load_stories, story_key

    try:
        trained = set(story_key(load_stories(saved_data)["train"]))
    except UserError as err:
        print(f"nlpexp: note: cannot check {stories['origin']} for stories the run trained on ({err}); scored whole",
              file=sys.stderr)
        return stories, {}
    removed = {}
    for part in ("validation", "test"):
        if not len(stories[part]):  # (an empty part may have lost its columns)
            continue
        seen = [key in trained for key in story_key(stories[part])]
        if any(seen):
            removed[part] = sum(seen)
            stories[part] = stories[part][[not s for s in seen]].reset_index(drop=True)
    if not len(stories["test"]):
        raise UserError(f"{stories['origin']}: every test story is one the run trained on: evaluate on held-out "
                        "stories (drop data.* to score the run's own test stories)")
    if removed:
        print(f"{stories['origin']}: left out stories the run trained on ("
              + ", ".join(f"{k} {v}" for k, v in removed.items()) + ")")
    return stories, {"train_overlap_removed": removed}


def generate(cfg, run_dir: Path, device: str):
    if cfg.get("ckpt"):
        model, tok = load_checkpoint(Path(str(cfg.ckpt)).expanduser() / "checkpoints" / "final", device)
    else:
        model, tok = adapter(cfg.model.name).pretrained(typed(cfg.model, PretrainedModel), device)
    prompt = str(cfg.prompt)
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    if not ids:
        raise UserError("prompt is empty after tokenisation")
    settings = decode_settings(cfg.generate)
    n = int(cfg.generate.num_samples)
    started = time.time()
    texts = continue_prompts(model, tok, [ids] * n, [prompt] * n, settings, cfg.seed)
    elapsed = time.time() - started
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "samples.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps({"prompt": prompt, "generation": t, **settings}, ensure_ascii=False) + "\n"
                      for t in texts)
    for i, text in enumerate(texts):
        print(f"[{i + 1}] {prompt} {text}")
    print(f"{n} continuation(s) in {elapsed:.2f}s; written to {run_dir / 'samples.jsonl'}")
