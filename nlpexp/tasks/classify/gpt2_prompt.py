"""GPT-2 as a prompt-and-answer classifier (the original emotion study), and the label-conditioned generator
behind generation-augmented training (augment.generated_per_label).

Training: a language model on `question + text + "\\nThe answer is:" + " " + label + <|endoftext|>` (the question
lists the label words), loss on every token as in the study.
Prediction, restricted: the log-probability of each label's tokens following the answer cue (answer_ids); the
best label wins (softmax over labels -> probabilities).
Prediction, unrestricted (what the study did): the next-token argmax after the cue, greedy over as many tokens as
the label has, correct only when it spells the gold label. Greedy decoding spells label L exactly when,
teacher-forced along L, every next-token argmax is L's token, so both come from one forward pass. With one-token
labels the restricted answer is the unrestricted one whenever that is a label, so restricted scoring can only
gain: on the answers that are no label.

Hub `gpt2` with its byte-level BPE; model.pretrained=null (a hub id in smoke runs) builds a small GPT-2 from
`model.small` with a byte-level BPE trained on the training texts. Saved with save_pretrained (safetensors) +
prompt.json.
"""
import json
import time
from pathlib import Path

import numpy as np

from nlpexp.inputs.hub import builds_small, load_pretrained, small_gpt2_config, train_byte_bpe
from nlpexp.runs import loading, write_dir
from nlpexp.config.schema import Pretrained
from nlpexp.tasks.classify.config import Augment, GPT2PromptClassifier, PromptLoop
from nlpexp.tasks.classify.contract import FitRun



def build_lm(model_cfg: Pretrained, texts, n_positions: int):
    """(tokenizer, GPT2LMHeadModel): the hub model, or a small one with a BPE trained on `texts`."""
    from transformers import GPT2LMHeadModel

    if builds_small(model_cfg):
        tokenizer = train_byte_bpe(texts, int(model_cfg.small.vocab_size or 2000))
        return tokenizer, GPT2LMHeadModel(small_gpt2_config(model_cfg.small, len(tokenizer), n_positions,
                                                            tokenizer.eos_token_id, tokenizer.pad_token_id))
    tokenizer, model = load_pretrained(model_cfg.pretrained, GPT2LMHeadModel, model_cfg.revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class LMJob:
    """Causal-LM training on token sequences for nlpexp.training.loop (padding ignored by the loss). `loss_from[i]`: the
    loss on sequence i counts only the tokens from that position on (e.g. the answer)."""

    unit = "tokens"

    def __init__(self, model, sequences: list[list[int]], pad_id: int, batch_size: int, seed: int, loss_from=None):
        self.model, self.sequences, self.pad_id = model, sequences, pad_id
        self.batch_size, self.seed, self.loss_from = batch_size, seed, loss_from

    def batches(self, epoch: int):
        import torch

        from nlpexp.training.loop import seeded_order

        order = seeded_order(len(self.sequences), self.seed, epoch)
        out = []
        for start in range(0, len(order), self.batch_size):
            picked = order[start:start + self.batch_size]
            rows = [self.sequences[i] for i in picked]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, r in enumerate(rows):
                ids[i, :len(r)] = torch.as_tensor(r)
                mask[i, :len(r)] = 1
            labels = ids.masked_fill(mask == 0, -100)
            if self.loss_from is not None:
                for i, k in enumerate(picked):
                    labels[i, :self.loss_from[k]] = -100
            out.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
        return out

    def units(self, batch) -> int:
        return int((batch["labels"][:, 1:] != -100).sum())

    def loss_sum(self, batch):
        import torch.nn.functional as F

        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), batch["labels"][:, 1:].reshape(-1),
                               ignore_index=-100, reduction="sum")


class BestEpoch:
    """After each epoch: validation accuracy (restricted and unrestricted) of the prompt classifier; the best
    epoch's classifier is saved to `folder` (and loaded back when training ends)."""

    def __init__(self, clf, val, labels, folder: Path):
        self.clf, self.val, self.labels, self.folder, self.best = clf, val, labels, folder, None

    def __call__(self, epoch: float, step: int) -> dict:
        self.clf.model.eval()  # no dropout while scoring the validation split
        restricted = float((self.clf.predict_proba(self.val["text"]).argmax(axis=1)
                            == self.val["label"].to_numpy()).mean())
        row = {"val_accuracy": round(restricted, 6), **self.clf.extra_metrics(self.val, self.labels, "val")}
        best = self.best is None or restricted > self.best
        if best:
            self.best = restricted
            self.clf.save(self.folder)
        return {**row, "best": best}

    def state(self) -> dict:
        return {"best": self.best}

    def load_state(self, state: dict) -> None:
        self.best = state["best"]


def answer_ids(tokenizer, labels) -> list[list[int]]:
    """Each label's answer tokens after the cue: " " + label. Scored as the label's tokens alone (the probability
    of ending there says how sure the model is that the answer is over, not which label it is), unless one
    label's tokens begin another's: then every answer ends with <|endoftext|>, so the shorter is not favoured."""
    answers = [_ids(tokenizer, " " + name) for name in labels]
    if any(a != b and b[:len(a)] == a for a in answers for b in answers):
        answers = [a + [tokenizer.eos_token_id] for a in answers]
    return answers


class PromptClassifier:
    """Scores each label's answer after the prompt; remembers the greedy (unrestricted) answers of its last call."""

    def __init__(self, tokenizer, model, labels, question: str, cue: str, device: str, max_length: int,
                 precision: str = "fp32"):
        self.tokenizer, self.model, self.labels = tokenizer, model.to(device).eval(), list(labels)
        self.precision = precision
        self.question, self.cue, self.device, self.max_length = question, cue, device, max_length
        self.eos = tokenizer.eos_token_id
        self.answers = answer_ids(tokenizer, self.labels)
        self._last = (None, None)

    def prompt_ids(self, text: str) -> list[int]:
        """question + text (truncated so the answer fits) + cue, tokenised in pieces as in training."""
        cue = _ids(self.tokenizer, self.cue)
        room = self.max_length - len(cue) - max(len(a) for a in self.answers)
        return _ids(self.tokenizer, self.question + str(text))[:max(room, 1)] + cue

    def sequence(self, text: str, label: int) -> list[int]:
        """The training string: prompt, answer, <|endoftext|>."""
        answer = self.answers[label]
        return self.prompt_ids(text) + answer + ([] if answer[-1] == self.eos else [self.eos])

    def _score(self, texts, batch_size: int = 32):
        """(label log-probabilities (N, L), greedy answer: label id or -1 when it spells no label)."""
        import torch

        from nlpexp.training.precision import autocast

        texts = list(texts)
        logp = np.zeros((len(texts), len(self.labels)))
        greedy = np.full(len(texts), -1)
        prompt_len = [len(self.prompt_ids(t)) for t in texts]  # similar lengths batch together: less padding
        pairs = sorted(((i, j) for i in range(len(texts)) for j in range(len(self.labels))),
                       key=lambda p: prompt_len[p[0]] + len(self.answers[p[1]]))
        with torch.inference_mode(), autocast(self.precision, self.device):
            for start in range(0, len(pairs), batch_size):
                chunk = pairs[start:start + batch_size]
                prompts = [self.prompt_ids(texts[i]) for i, _ in chunk]
                rows = [p + self.answers[j] for p, (_, j) in zip(prompts, chunk)]
                width = max(len(r) for r in rows)
                ids = torch.full((len(rows), width), self.eos, dtype=torch.long)
                mask = torch.zeros_like(ids)
                for k, r in enumerate(rows):
                    ids[k, :len(r)] = torch.as_tensor(r)
                    mask[k, :len(r)] = 1
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
                logits = torch.log_softmax(logits.float(), dim=-1).cpu()
                for k, ((i, j), p) in enumerate(zip(chunk, prompts)):
                    answer = torch.as_tensor(self.answers[j])
                    at = torch.arange(len(p) - 1, len(p) - 1 + len(answer))
                    logp[i, j] = float(logits[k, at, answer].sum())
                    if bool((logits[k, at].argmax(dim=-1) == answer).all()):
                        greedy[i] = j
        return logp, greedy

    def predict_proba(self, texts) -> np.ndarray:
        texts = list(texts)
        logp, greedy = self._score(texts)
        self._last = (texts, greedy)
        proba = np.exp(logp - logp.max(axis=1, keepdims=True))
        return proba / proba.sum(axis=1, keepdims=True)

    def greedy_answers(self, texts) -> np.ndarray:
        texts = list(texts)
        if self._last[0] != texts:
            self.predict_proba(texts)
        return self._last[1]

    def extra_metrics(self, frame, labels, prefix: str) -> dict:
        """The original study's unrestricted next-token answer, beside the restricted scoring."""
        greedy = self.greedy_answers(frame["text"])
        gold = frame["label"].to_numpy()
        return {f"{prefix}_accuracy_unrestricted": round(float((greedy == gold).mean()), 6),
                f"{prefix}_answer_not_a_label": round(float((greedy < 0).mean()), 6)}

    def save(self, folder: Path) -> None:
        with write_dir(folder) as tmp:  # written whole or not at all
            self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            (tmp / "prompt.json").write_text(json.dumps(
                {"labels": self.labels, "question": self.question, "cue": self.cue, "max_length": self.max_length,
                 "precision": self.precision}, indent=2))


def question_for(model_cfg, labels) -> str:
    return str(model_cfg.question).format(labels=", ".join(labels))


def fit(model: GPT2PromptClassifier, run: FitRun, labels: list[str], splits):
    mc, trainer, device, run_dir = model, run.trainer, run.device, run.run_dir
    question = question_for(mc, labels)
    max_length = int(trainer.max_length)
    train = splits["train"]
    tokenizer, model = build_lm(mc, [question + t + mc.answer_cue + " " + labels[y]
                                     for t, y in zip(train["text"], train["label"])],
                                max_length + 8)
    clf = PromptClassifier(tokenizer, model, labels, question, str(mc.answer_cue), device, max_length)
    sequences = [clf.sequence(t, int(y)) for t, y in zip(train["text"], train["label"])]
    # loss_on=all: the study's language model on the whole string; answer: only the label tokens after the cue
    loss_from = [len(clf.prompt_ids(t)) for t in train["text"]] if mc.loss_on == "answer" else None
    from omegaconf import OmegaConf

    from nlpexp.training import loop

    best_dir = run_dir / "checkpoints" / "best"
    settings = loop.Settings.of(OmegaConf.structured(trainer), device)  # the node Settings.of reads
    clf.precision = settings.precision
    job = LMJob(model, sequences, tokenizer.eos_token_id, int(trainer.batch_size), int(run.seed), loss_from)
    started = time.time()
    history, info = loop.fit(job, settings, device, run_dir=run_dir, desc="gpt2_prompt",
                             evaluate=BestEpoch(clf, splits["validation"], labels, best_dir),
                             resume_from=run.resume_from, on_log=run.step_logger(run_dir))
    if settings.epochs == 0:  # zero-shot: the pretrained language model prompted as it is
        clf.save(best_dir)
        info["zero_shot"] = True
    seen = len(sequences) * sum(1 for row in history if float(row["epoch"]).is_integer())
    info["train_samples_per_s"] = round(seen / max(time.time() - started, 1e-9), 2)
    clf = load(best_dir, device)
    return clf, history, {**info, "trainable_params": sum(p.numel() for p in model.parameters()),
                          "prompt_example": tokenizer.decode(sequences[0])}


def load(folder: Path, device: str) -> PromptClassifier:
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from nlpexp.training.precision import of_saved

    with loading(folder):
        spec = json.loads((Path(folder) / "prompt.json").read_text())
        return PromptClassifier(AutoTokenizer.from_pretrained(folder),
                                GPT2LMHeadModel.from_pretrained(folder, use_safetensors=True),
                                spec["labels"], spec["question"], spec["cue"], device, spec["max_length"],
                                of_saved(spec, device))


# --- generation-augmented training: a label-conditioned generator (recipe.augment) ---

def generate_per_label(aug: Augment, trainer: PromptLoop, seed: int, labels: list[str], train, run_dir: Path,
                       device: str):
    """Fine-tune a GPT-2 on `<label>: <text><|endoftext|>` over the training split (in this module's loop, with
    `trainer`'s settings but augment.generator_epochs and generator_lr), then sample augment.generated_per_label
    texts of min_tokens..max_tokens tokens per label. Returns a DataFrame text, label (id), line."""
    import pandas as pd
    import torch
    from omegaconf import OmegaConf

    gen_cfg = Pretrained(name="generator", pretrained=aug.generator, small=aug.generator_small)
    lines = [f"{labels[int(y)]}: {t}" for t, y in zip(train["text"], train["label"])]
    tokenizer, model = build_lm(gen_cfg, lines, int(trainer.max_length) + 8)
    limit = int(trainer.max_length)
    sequences = [_ids(tokenizer, line)[:limit] + [tokenizer.eos_token_id] for line in lines]
    from nlpexp.training import loop

    # a step before the classifier's training: no step checkpoints of its own (a resumed run trains it again)
    settings = loop.Settings.of(OmegaConf.structured(trainer), device, epochs=int(aug.generator_epochs),
                                lr=float(aug.generator_lr))
    loop.fit(LMJob(model, sequences, tokenizer.eos_token_id, int(trainer.batch_size), int(seed)),
             settings, device, desc="generator")
    with write_dir(run_dir / "checkpoints" / "generator") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    n = int(aug.generated_per_label)
    rows = []
    torch.manual_seed(seed)
    for y, name in enumerate(labels):
        prompt = torch.as_tensor([_ids(tokenizer, f"{name}:")] * n, device=device)
        with torch.no_grad():
            out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=True,
                                 top_k=int(aug.top_k), min_new_tokens=int(aug.min_tokens),
                                 max_new_tokens=int(aug.max_tokens), pad_token_id=tokenizer.eos_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
        for seq in out[:, prompt.shape[1]:]:
            text = " ".join(tokenizer.decode(seq, skip_special_tokens=True).split())  # one line: no \r or \n
            if text:
                rows.append((text, y))
    frame = pd.DataFrame(rows, columns=["text", "label"])
    return frame.assign(line=range(1, len(frame) + 1))
