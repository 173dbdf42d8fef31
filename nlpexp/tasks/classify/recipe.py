"""Text classification recipe (classify: labels from the data; its presets finsent, emotion, chnsenti, zh_emotion,
clue).

train:   data -> fit (the adapter's: best epoch by validation) -> score validation and test -> outputs
eval:    a saved run's best checkpoint on a split or a file
predict: a saved run's best checkpoint on text="..." or input=<file>
soup:    the mean of finished runs' weights, scored as one model
Outputs: checkpoints/best, history.csv, predictions.csv, confusion_matrix.png, history.png, report.json.
The adapters (contract.py) are one module per model: hf, bert_heads, transformer, gpt2 and mlm_prompt train in
trainer.py's Trainer loop, gpt2_prompt in its own language-model loop, doc2vec with gensim. Each fit gets its
model.* dataclass and a FitRun (fit_inputs), never the whole config.
"""
import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from nlpexp import provenance
from nlpexp.config import registry
from nlpexp.errors import UserError
from nlpexp.inputs.known import of_data
from nlpexp.runs import require_manifest
from nlpexp.report.metrics import accuracy, classification_metrics, plot_confusion, plot_history
from nlpexp.config.schema import typed
from nlpexp.tasks.classify.config import Augment, PromptLoop, Tokenizer
from nlpexp.tasks.classify.contract import Classifier, ClassifierAdapter, FitRun, WeightedClassifier
from nlpexp.tasks.classify.data import (dataset_name, inputs, item_keys, label_names, labelled_splits,
                                        load_eval_set, load_file, load_splits, vocabulary_texts)


def run(cfg, run_dir: Path, device: str):
    return {"train": train, "eval": evaluate, "predict": predict, "soup": soup,
            "prepare": prepare}[cfg.mode](cfg, run_dir, device)


def adapter(model: str) -> ClassifierAdapter:
    return registry.adapter(model, "classify")


def fit_inputs(cfg, run_dir: Path, device: str) -> tuple:
    """(the chosen adapter's model.* dataclass, FitRun): all that its fit reads of the run's config."""
    from functools import partial

    from nlpexp.report import loggers

    record = registry.MODELS[cfg.model.name].adapters["classify"]
    run = FitRun(trainer=typed(cfg.trainer, record.trainer) if record.trainer else None, seed=cfg.seed,
                 run_dir=run_dir, device=device,
                 tokenizer=typed(cfg.tokenizer, Tokenizer) if cfg.get("tokenizer") is not None else None,
                 label_map=OmegaConf.to_container(cfg.data.label_map, resolve=True),
                 resume_from=cfg.get("resume_from"), verbose=bool(cfg.get("verbose")),
                 multi_label=bool(cfg.task.get("multi_label")), logger=loggers.name(cfg),
                 report_to=partial(loggers.hf_report_to, cfg), step_logger=partial(loggers.step_logger, cfg))
    return typed(cfg.model, record.config), run


def train(cfg, run_dir: Path, device: str):
    multi = bool(cfg.task.get("multi_label"))
    splits, removed, labels = model_splits(cfg)
    # the label set: the task's, or (task.labels=null) the training data's; eval/predict/soup read it back from here
    (run_dir / "labels.json").write_text(json.dumps(labels, ensure_ascii=False))
    print(f"data: train {len(splits['train'])}, validation {len(splits['validation'])}, test {len(splits['test'])}"
          f"; {len(labels)} labels{' (multi-label)' if multi else ''}: {', '.join(labels[:12])}"
          f"{', ...' if len(labels) > 12 else ''}")
    extra_metrics, extra = {}, {}
    model, run = fit_inputs(cfg, run_dir, device)
    if cfg.get("augment") and cfg.augment.generated_per_label:
        splits, extra_metrics = augment(cfg, labels, splits, model, run)
    clf, history, info = adapter(cfg.model.name).fit(model, run, labels, splits)
    if clf is None:  # a data-parallel rank other than 0: rank 0 scores and writes the outputs
        return None
    metrics, reports = {}, {}
    if multi:  # per-label thresholds chosen on validation (thresholds.json), then validation and test scored
        from nlpexp.tasks.classify import multilabel

        metrics, reports, items = multilabel.score(clf, splits, labels, run_dir)
    for split, prefix in () if multi else (("validation", "val"), ("test", "test")):
        headline, reports[prefix], items = score(clf, splits[split], labels, prefix, run_dir)
        metrics.update(headline)
        metrics.update(clf.extra_metrics(splits[split], labels, prefix))  # gpt2_prompt: the unrestricted answer
    metrics.update(extra_metrics)
    if cfg.get("eval_on"):
        cross, extra = cross_evaluate(cfg, clf, labels, splits, run_dir)
        metrics.update(cross)
    if not history:
        history = [{"epoch": 1, **{k: v for k, v in metrics.items() if k.startswith("val_")}}]
    pd.DataFrame(history).to_csv(run_dir / "history.csv", index=False)
    plot_history(history, run_dir / "history.png")
    (run_dir / "report.json").write_text(json.dumps(reports, indent=2))
    best = (cfg.get("trainer") or {}).get("best_metric", "accuracy")  # gensim, gpt2_prompt: kept by accuracy
    return {"metrics": metrics, "per_class": reports["test"], "objective": f"val_{best}", "items": items,
            "samples": {k: len(v) for k, v in splits.items()}, **removed, **info, **extra}


def model_splits(cfg) -> tuple:
    """(train/validation/test as the model reads them (model_view), what was left out and the columns read, the
    label set): what training and mode=prepare read of the data."""
    splits, removed, labels = labelled_splits(cfg.data, label_names(cfg.task), cfg.seed,
                                              bool(cfg.task.get("multi_label")))
    return {name: model_view(frame, cfg.model.name) for name, frame in splits.items()}, removed, labels


def model_view(frame: pd.DataFrame, model: str) -> pd.DataFrame:
    """A split as the model reads it: a sentence pair's two texts stay apart for the adapters whose tokenizer takes
    pairs (PAIRS), and are joined by " [SEP] " in `text` for the others (doc2vec, the prompt models)."""
    if "text_pair" not in frame or getattr(registry.MODELS[model].adapters["classify"].config, "PAIRS", False):
        return frame
    joined = frame["text"].astype(str) + " [SEP] " + frame["text_pair"].astype(str)
    return frame.drop(columns="text_pair").assign(text=joined)


def score(clf, frame: pd.DataFrame, labels, prefix: str, run_dir: Path):
    """(metrics, per-class report, the split's items for report.stats: their hash and confusion cells) of one
    split, plus its predictions CSV and confusion matrix."""
    from nlpexp.report import stats

    proba = clf.predict_proba(inputs(frame))
    headline, report = classification_metrics(frame["label"], proba, labels)
    pred = proba.argmax(axis=1)
    items = {"sha256": stats.items_hash(inputs(frame), [labels[i] for i in frame["label"]]),
             "blocks": [stats.confusion_block(frame["label"], pred, len(labels), prefix)]}
    table = pd.DataFrame({"text": frame["text"], **({"text_pair": frame["text_pair"]} if "text_pair" in frame
                                                     else {}),
                          "gold": [labels[i] for i in frame["label"]], "predicted": [labels[i] for i in pred]})
    for j, name in enumerate(labels):
        table[f"p_{name}"] = proba[:, j].round(6)
    suffix = "" if prefix == "test" else f"_{prefix}"
    table.to_csv(run_dir / f"predictions{suffix}.csv", index=False)
    plot_confusion(frame["label"], pred, labels, run_dir / f"confusion_matrix{suffix}.png",
                   title=f"{prefix} accuracy {headline['accuracy']:.3f}")
    return {f"{prefix}_{k}": round(v, 6) for k, v in headline.items()}, report, items


def cross_evaluate(cfg, clf, labels, splits, run_dir: Path):
    """Accuracy of the trained model on every eval_on dataset (labels unified); the training set itself is scored
    on its own test split. One row of the train x test matrix: cross_eval.csv + cross_eval.png (nlpexp-report
    stacks the rows of a multirun over training sets into the full matrix)."""
    from nlpexp.report.metrics import plot_accuracy_matrix

    train_name = dataset_name(cfg.data)
    row = {}
    for spec in cfg.eval_on:
        name = Path(str(spec)).name
        frame = splits["test"] if name == train_name else load_eval_set(str(spec), cfg.data, labels)
        provenance.record_splits({f"cross_{Path(name).stem}": frame["line"]}, add=True)
        row[name] = accuracy(clf, frame)
        print(f"cross-dataset: trained on {train_name}, tested on {name} ({len(frame)} texts): {row[name]:.3f}")
    matrix = pd.DataFrame([row], index=pd.Index([train_name], name="train"))
    matrix.to_csv(run_dir / "cross_eval.csv")
    plot_accuracy_matrix(matrix, run_dir / "cross_eval.png")
    metrics = {f"cross_{Path(name).stem}_accuracy": acc for name, acc in row.items()}
    return metrics, {"cross_eval": {"train": train_name, "accuracy": row}}


def augment(cfg, labels, splits, model, run: FitRun):
    """Generation-augmented training: a label-conditioned GPT-2 trained on the training split writes
    augment.generated_per_label short texts per label (generated.csv). Also trains the classifier without them
    (without_augment/) and on them alone (generated_only/), for the original study's comparison and cross checks:
    the real-data classifier tested on the generated texts, the generated-data classifier on the real test split.
    `model`, `run`: the classifier's fit inputs (fit_inputs). Returns the training split with the generated texts
    added, and those metrics."""
    from nlpexp.tasks.classify.gpt2_prompt import generate_per_label

    run_dir = run.run_dir
    # the generator trains in gpt2_prompt's loop, with the trainer.* that loop reads (checks.consumes)
    generated = generate_per_label(typed(cfg.augment, Augment), typed(cfg.trainer, PromptLoop), run.seed, labels,
                                   splits["train"], run_dir, run.device)
    pd.DataFrame({"text": generated["text"], "label": [labels[i] for i in generated["label"]]}).to_csv(
        run_dir / "generated.csv", index=False)
    builder = adapter(cfg.model.name)
    metrics = {}
    for name, train_part in (("without_augment", splits["train"]), ("generated_only", generated)):
        folder = run_dir / name
        folder.mkdir(exist_ok=True)
        clf = builder.fit(model, replace(run, run_dir=folder), labels, {**splits, "train": train_part})[0]
        if name == "without_augment":
            metrics["noaug_test_accuracy"] = accuracy(clf, splits["test"])
            metrics["real_on_generated_accuracy"] = accuracy(clf, generated)
        else:
            metrics["generated_on_test_accuracy"] = accuracy(clf, splits["test"])
    train = pd.concat([splits["train"], generated], ignore_index=True)
    print(f"augment: {len(generated)} generated texts added to {len(splits['train'])} training texts")
    return {**splits, "train": train}, metrics


def load_run(cfg, device: str, ckpt=None) -> tuple:
    """The saved run's config and its best model on `device` (ckpt: that run's folder; default cfg.ckpt)."""
    ckpt = Path(str(ckpt or cfg.ckpt)).expanduser()
    saved = OmegaConf.load(ckpt / ".hydra" / "config.yaml")
    best = ckpt / "checkpoints" / "best"
    if not best.exists():
        raise UserError(f"{ckpt} has no checkpoints/best (did that run finish?)")
    require_manifest(best)  # every save writes it: without it an edited or swapped file could not be told
    if (ckpt / "labels.json").exists():  # labels taken from the data at training time
        saved.task.labels = json.loads((ckpt / "labels.json").read_text())
    clf: Classifier = adapter(saved.model.name).load(best, device)
    return saved, clf


def evaluate(cfg, run_dir: Path, device: str):
    """The saved run on its own test split (data.eval_split): the split is made from the run's saved data options
    and seed, and a differing seed= / data.split= / data.split_seed= / data.per_label= is refused (its test split
    would hold rows the run trained on). data.path=<another file> scores that whole file (cross-evaluation); it and
    any other dataset leave out the texts the run trained on, counted."""
    saved, clf = load_run(cfg, device)
    labels, multi = label_names(saved.task), bool(saved.task.get("multi_label"))
    given = user_data_keys()
    data = saved.data.copy()
    for key in given:  # data.* given on this command line win over the saved run's
        data[key] = cfg.data[key]
    own = same_dataset(data, saved.data)
    if own:
        resplit_error(cfg, saved, data)
    if data.get("path") and not own:  # a whole other file to score, no split
        frame, split = load_file(data, labels, multi), "file"  # labels read as in training (label_names, label_map)
        dataset = of_data(data)
    else:
        split = data.eval_split
        frames, info, _ = labelled_splits(data, labels, saved.seed, multi)
        frame, dataset = frames[split], info.get("dataset")
    overlap = {}
    if not own:  # another dataset may hold texts the run trained on: they are left out
        frame, overlap = leave_out_trained(frame, saved, labels, str(data.get("path") or dataset_name(data)))
    provenance.record_splits({"test" if split == "file" else split: frame["line"]})  # the items scored
    frame = model_view(frame, saved.model.name)
    if multi:  # at the thresholds the run chose on its validation split
        from nlpexp.tasks.classify import multilabel

        thresholds = multilabel.load_thresholds(Path(str(cfg.ckpt)).expanduser(), labels)
        metrics, report, items = multilabel.score_split(frame, clf.predict_proba(inputs(frame)), labels,
                                                        thresholds, "test" if split == "file" else split, run_dir)
    else:
        metrics, report, items = score(clf, frame, labels, "test" if split == "file" else split, run_dir)
    (run_dir / "report.json").write_text(json.dumps(report, indent=2))
    return {"metrics": metrics, "per_class": report, "evaluated": {"ckpt": str(cfg.ckpt), "split": split},
            "items": items, "samples": {split: len(frame)}, **overlap, **({"dataset": dataset} if dataset else {})}


SOURCE_KEYS = ("source", "embedded", "hub_id", "hub_config", "revision")  # with data.path: which dataset


def same_dataset(data, saved_data) -> bool:
    """`data` names the dataset the run was trained on (the same file, however its path is written)."""
    def file(d):
        return Path(str(d.path)).expanduser().resolve() if d.get("path") else None

    if file(data) or file(saved_data):
        return file(data) == file(saved_data)
    return all(data.get(k) == saved_data.get(k) for k in SOURCE_KEYS)


def resplit_error(cfg, saved, data) -> None:
    """A seed or data option given on this command line that would split the run's own data otherwise than in
    training (`data`: the saved data options with this command line's data.* over them): refused in one line
    (that test split would hold rows the run trained on)."""
    from hydra.core.hydra_config import HydraConfig

    given = {o.lstrip("+~").split("=", 1)[0] for o in HydraConfig.get().overrides.task}

    def split_seed(seed, d):
        return int(seed) if d.get("split_seed") is None else int(d.split_seed)

    run = f"ckpt={cfg.ckpt}"
    mine = split_seed(cfg.seed if "seed" in given else saved.seed, data)
    if ("seed" in given or "data.split_seed" in given) and mine != split_seed(saved.seed, saved.data):
        what = "seed" if saved.data.get("split_seed") is None else "data.split_seed"
        value = saved.seed if what == "seed" else saved.data.split_seed
        raise UserError(f"{run} was trained with {what}={value}: its test split is made with that seed, and another "
                        f"one's test split holds rows the run trained on; drop {'seed=' if 'seed' in given else ''}"
                        f"{' and ' if {'seed', 'data.split_seed'} <= given else ''}"
                        f"{'data.split_seed=' if 'data.split_seed' in given else ''} (mode=eval splits as the run "
                        "did), or give data.path=<a file of held-out texts>")
    for key in ("split", "per_label"):
        mine, theirs = data.get(key), saved.data.get(key)
        mine, theirs = (OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for v in (mine, theirs))
        if f"data.{key}" in given and mine != theirs:
            shown = json.dumps(theirs).replace(" ", "")
            raise UserError(f"{run} was trained with data.{key}={shown}: its test split is made with that, and "
                            f"another data.{key} gives a test split holding rows the run trained on; drop "
                            f"data.{key}= (mode=eval splits as the run did), or give data.path=<a file of held-out "
                            "texts>")


def leave_out_trained(frame: pd.DataFrame, saved, labels, origin: str) -> tuple[pd.DataFrame, dict]:
    """`frame` without the texts of the saved run's training split (texts match after stripping whitespace, as in
    remove_duplicates), and how many were left out. When the training split cannot be read again (a moved file, a
    hub dataset not in the cache) that is said on stderr and the frame is scored whole."""
    import sys

    try:
        trained = set(item_keys(load_splits(saved.data, labels, saved.seed, bool(saved.task.get("multi_label")))[
            "train"]))
    except UserError as err:
        print(f"nlpexp: note: cannot check {origin} for texts the run trained on ({err}); scored whole",
              file=sys.stderr)
        return frame, {}
    seen = item_keys(frame).isin(trained)
    if seen.all():
        raise UserError(f"{origin}: every one of its {len(frame)} texts is one the run trained on: evaluate on "
                        "held-out texts (drop data.path= to score the run's own test split)")
    if seen.any():
        print(f"{origin}: left out {int(seen.sum())} of {len(frame)} rows whose text the run trained on")
    return frame[~seen].reset_index(drop=True), {"train_overlap_removed": int(seen.sum())}


def soup(cfg, run_dir: Path, device: str):
    """mode=soup ckpt=[run, run, ...]: one model with the mean of the runs' weights (a uniform model soup), scored
    on the validation and test splits. The runs are fine-tunes of one model on one split (e.g. a sweep over seed
    with data.split_seed fixed); the command gives the same task, model and data options they were trained with."""
    from nlpexp.training.hf_trainer import average_weights

    runs = [Path(str(r)).expanduser() for r in cfg.ckpt]
    loaded = [load_run(cfg, device, r) for r in runs]

    def split_of(c):  # what decides the split: the data options and the split seed
        return OmegaConf.to_container(c.data), c.seed if c.data.get("split_seed") is None else c.data.split_seed

    for run, (saved, _) in zip(runs, loaded):
        if (saved.task.name, saved.model.name) != (cfg.task.name, cfg.model.name):
            raise UserError(f"{run} is a {saved.task.name}/{saved.model.name} run, not {cfg.task.name}/"
                            f"{cfg.model.name}: a soup averages one model fine-tuned several times")
        if split_of(saved) != split_of(cfg):
            raise UserError(f"{run} was trained on another split than this command's data options give (data.* or "
                            "the split seed differ): train the runs with one data.split_seed and pass the same "
                            "data options here")
    clf: WeightedClassifier = loaded[0][1]  # the checks admit only models of the Trainer loop (torch weights)
    states = [{k: v.detach().cpu() for k, v in c.weights().items()} for _, c in loaded]
    for run, state in zip(runs[1:], states[1:]):
        if {k: v.shape for k, v in state.items()} != {k: v.shape for k, v in states[0].items()}:
            raise UserError(f"{run} has other weights (names or shapes) than {runs[0]}: a soup averages "
                            "fine-tunes of one model")
    clf.load_weights(average_weights(states))
    labels = label_names(loaded[0][0].task)
    splits = {name: model_view(frame, cfg.model.name) for name, frame in load_splits(
        cfg.data, labels, cfg.seed, bool(loaded[0][0].task.get("multi_label"))).items()}
    metrics, reports = {}, {}
    for split, prefix in (("validation", "val"), ("test", "test")):
        headline, reports[prefix], items = score(clf, splits[split], labels, prefix, run_dir)
        metrics.update(headline)
    clf.save(run_dir / "checkpoints" / "best")
    (run_dir / "report.json").write_text(json.dumps(reports, indent=2))
    ingredients = []
    for run in runs:
        done = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else {}
        ingredients.append({"run": str(run), **{k: done.get("metrics", {}).get(k)
                                                for k in ("val_accuracy", "test_accuracy")}})
    print(f"soup of {len(runs)} runs: validation accuracy {metrics['val_accuracy']:.4f}, test "
          f"{metrics['test_accuracy']:.4f} (the runs alone: test "
          + ", ".join(f"{i['test_accuracy']:.4f}" for i in ingredients if i["test_accuracy"] is not None) + ")")
    return {"metrics": metrics, "per_class": reports["test"], "samples": {k: len(v) for k, v in splits.items()},
            "soup": {"ingredients": ingredients}, "items": items}


def user_data_keys() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    keys = [o.lstrip("+~").split("=", 1)[0] for o in HydraConfig.get().overrides.task]
    return [k.split(".", 1)[1] for k in keys if k.startswith("data.")]


def trained_columns(cfg) -> dict:
    """The columns the run's training read (its metrics.json `columns`: text, text_pair, label); {} for a run
    from before they were recorded."""
    done = Path(str(cfg.ckpt)).expanduser() / "metrics.json"
    return (json.loads(done.read_text()).get("columns") or {}) if done.exists() else {}


def predict(cfg, run_dir: Path, device: str):
    """text="..." (printed) or input=<file>: a table of the texts with the predicted label (multi-label: the label
    set) and one probability column per label. A sentence-pair run reads its second text from the column its
    training read (data.text_pair_column; text= takes "first [SEP] second")."""
    from nlpexp.inputs.readers import TEXT_COLUMNS, atomic_output, read_texts

    read = trained_columns(cfg)  # data.text_column / data.text_pair_column of this command win over the run's
    pair = cfg.data.get("text_pair_column") or read.get("text_pair")
    columns = tuple(dict.fromkeys([c for c in [read.get("text")] if c] + list(TEXT_COLUMNS)))
    # bad input: before the model loads
    lines = None if cfg.get("text") else read_texts(cfg.input, columns, column=cfg.data.get("text_column"),
                                                    pair_column=pair)
    saved, clf = load_run(cfg, device)
    labels = label_names(saved.task)
    frame = pd.DataFrame({"text": [str(cfg.text)] if lines is None else
                          [t[0] if isinstance(t, tuple) else t for t in lines]})
    if lines is not None and pair:
        frame["text_pair"] = [t[1] for t in lines]
    elif lines is None and pair and " [SEP] " in str(cfg.text):
        frame["text"], frame["text_pair"] = zip(*[str(cfg.text).split(" [SEP] ", 1)])
    proba = clf.predict_proba(inputs(model_view(frame, saved.model.name)))
    if saved.task.get("multi_label"):
        from nlpexp.tasks.classify.multilabel import load_thresholds, predicted_sets

        predicted = [",".join(names) for names in
                     predicted_sets(proba, labels, load_thresholds(Path(str(cfg.ckpt)).expanduser(), labels))]
    else:
        predicted = [labels[i] for i in proba.argmax(axis=1)]
    if lines is None:
        print(f"{predicted[0] or '(no label)'}  " + "  ".join(f"{n}={p:.3f}" for n, p in zip(labels, proba[0])))
        return None
    table = pd.DataFrame({"text": frame["text"], **({"text_pair": frame["text_pair"]} if "text_pair" in frame else {}),
                          "predicted": predicted})
    for j, name in enumerate(labels):
        table[f"p_{name}"] = proba[:, j].round(6)
    out = Path(str(cfg.output)).expanduser() if cfg.get("output") else run_dir / "predictions.csv"
    with atomic_output(out) as handle:  # whole or not at all: a full disk leaves no truncated CSV
        table.to_csv(handle, index=False)
    print(f"{len(table)} predictions written to {out}")
    return None


def prepare(cfg, run_dir: Path, device: str):
    """mode=prepare: the train and validation splits read and split as training reads them, tokenized with the
    tokenizer fit builds (the adapter's `tokenizer`), into the tokenized-data cache (tokenized.py), and nothing
    trained: a training run on the same data, model and trainer.max_length then finds them there. The models that
    train on tokenized data only (their dataclass's PREPARE; checks.py refuses the others)."""
    from nlpexp.tasks.classify import tokenized
    from nlpexp.tasks.classify.trainer import train_labels

    splits, removed, labels = model_splits(cfg)
    print(f"data: train {len(splits['train'])}, validation {len(splits['validation'])}")
    model, run = fit_inputs(cfg, run_dir, device)
    tokenizer = adapter(cfg.model.name).tokenizer(model, run, labels, vocabulary_texts(splits["train"]))
    for split in ("train", "validation"):
        tokenized.encode(splits[split], tokenizer, run.trainer.max_length,
                         train_labels(splits[split], len(labels), run.multi_label), split)
    rows = {split: len(splits[split]) for split in ("train", "validation")}
    return {"metrics": {f"{split}_rows": n for split, n in rows.items()}, "prepared": rows,
            "cache": str(tokenized.cache_root() / "tokenized"), **removed}
