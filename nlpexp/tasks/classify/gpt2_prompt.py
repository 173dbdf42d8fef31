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

Hub `gpt2` with its byte-level BPE; model.pretrained=null (and smoke runs) build a small GPT-2 from `model.small`
with a byte-level BPE trained on the training texts. Saved with save_pretrained (safetensors) + prompt.json.
"""
import json
from pathlib import Path

import numpy as np

from nlpexp.hub import builds_small, load_pretrained, small_gpt2_config, train_byte_bpe



def build_lm(model_cfg, texts, n_positions: int, smoke: bool = False):
    """(tokenizer, GPT2LMHeadModel): the hub model, or a small one with a BPE trained on `texts`."""
    from transformers import GPT2LMHeadModel

    if builds_small(model_cfg, smoke):
        tokenizer = train_byte_bpe(texts, int(model_cfg.small.get("vocab_size") or 2000))
        return tokenizer, GPT2LMHeadModel(small_gpt2_config(model_cfg.small, len(tokenizer), n_positions,
                                                            tokenizer.eos_token_id, tokenizer.pad_token_id))
    tokenizer, model = load_pretrained(model_cfg.pretrained, GPT2LMHeadModel)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def train_lm(model, sequences: list[list[int]], pad_id: int, tr, seed: int, device: str, desc: str,
             epochs: int | None = None, lr: float | None = None, after_epoch=None, loss_from=None):
    """Causal-LM training on token sequences (padding ignored by the loss), AdamW with linear decay.
    `loss_from[i]`: the loss on sequence i counts only the tokens from that position on (e.g. the answer).
    `after_epoch(epoch)` may return a validation score; the best epoch's weights are kept."""
    import copy

    import torch
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    epochs = int(epochs or tr.epochs)
    batch = int(tr.batch_size)
    steps_per_epoch = (len(sequences) + batch - 1) // batch
    total = epochs * steps_per_epoch
    if tr.get("max_steps") and tr.max_steps > 0:
        total = min(total, int(tr.max_steps))
    model.to(device).train()
    optim = torch.optim.AdamW(model.parameters(), lr=float(lr or tr.lr), weight_decay=float(tr.weight_decay))
    sched = get_linear_schedule_with_warmup(optim, int(float(tr.warmup_ratio) * total), max(total, 1))
    rng = np.random.default_rng(seed)
    history, best, best_state, step = [], None, None, 0
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(sequences))
        losses = []
        for start in tqdm(range(0, len(order), batch), desc=f"{desc} epoch {epoch}", leave=False, mininterval=2):
            if step >= total:
                break
            picked = order[start:start + batch]
            rows = [sequences[i] for i in picked]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, r in enumerate(rows):
                ids[i, :len(r)] = torch.as_tensor(r)
                mask[i, :len(r)] = 1
            labels = ids.masked_fill(mask == 0, -100)
            if loss_from is not None:
                for i, k in enumerate(picked):
                    labels[i, :loss_from[k]] = -100
            loss = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            sched.step()
            optim.zero_grad()
            losses.append(loss.item())
            step += 1
        row = {"epoch": epoch, "train_loss": round(float(np.mean(losses)), 6) if losses else None}
        if after_epoch is not None:
            model.eval()  # no dropout while scoring the validation split
            result = after_epoch(epoch)
            score = result["val_accuracy"] if isinstance(result, dict) else result
            row.update(result if isinstance(result, dict) else {"val_accuracy": score})
            if best is None or score > best:
                best, best_state = score, copy.deepcopy(model.state_dict())
            model.train()
        history.append(row)
        print(f"{desc} epoch {epoch}: " + ", ".join(f"{k} {v}" for k, v in row.items() if k != "epoch"))
        if step >= total:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval(), history


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

    def __init__(self, tokenizer, model, labels, question: str, cue: str, device: str, max_length: int):
        self.tokenizer, self.model, self.labels = tokenizer, model.to(device).eval(), list(labels)
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

        texts = list(texts)
        logp = np.zeros((len(texts), len(self.labels)))
        greedy = np.full(len(texts), -1)
        pairs = [(i, j) for i in range(len(texts)) for j in range(len(self.labels))]
        with torch.inference_mode():
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
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        (folder / "prompt.json").write_text(json.dumps(
            {"labels": self.labels, "question": self.question, "cue": self.cue, "max_length": self.max_length},
            indent=2))


def question_for(model_cfg, labels) -> str:
    return str(model_cfg.question).format(labels=", ".join(labels))


def fit(cfg, labels: list[str], splits, run_dir: Path, device: str):
    mc, trainer = cfg.model, cfg.trainer
    question = question_for(mc, labels)
    max_length = int(trainer.max_length)
    train = splits["train"]
    tokenizer, model = build_lm(cfg.model, [question + t + mc.answer_cue + " " + labels[y]
                                            for t, y in zip(train["text"], train["label"])],
                                max_length + 8, bool(cfg.get("smoke")))
    clf = PromptClassifier(tokenizer, model, labels, question, str(mc.answer_cue), device, max_length)
    sequences = [clf.sequence(t, int(y)) for t, y in zip(train["text"], train["label"])]
    # loss_on=all: the study's language model on the whole string; answer: only the label tokens after the cue
    loss_from = [len(clf.prompt_ids(t)) for t in train["text"]] if mc.get("loss_on") == "answer" else None
    val = splits["validation"]

    def val_accuracy(epoch):
        """Restricted and unrestricted validation accuracy after each epoch (history.csv shows both)."""
        restricted = float((clf.predict_proba(val["text"]).argmax(axis=1) == val["label"].to_numpy()).mean())
        return {"val_accuracy": round(restricted, 6),
                **{k: v for k, v in clf.extra_metrics(val, labels, "val").items()}}

    import time

    started = time.time()
    model, history = train_lm(model, sequences, tokenizer.eos_token_id, trainer, cfg.seed, device, "gpt2_prompt",
                              after_epoch=val_accuracy, loss_from=loss_from)
    clf.model = model
    clf.save(run_dir / "checkpoints" / "best")
    seen = len(sequences) * len(history)
    return clf, history, {"train_samples_per_s": round(seen / max(time.time() - started, 1e-9), 2),
                          "trainable_params": sum(p.numel() for p in model.parameters()),
                          "prompt_example": tokenizer.decode(sequences[0])}


def load(folder: Path, device: str) -> PromptClassifier:
    from transformers import AutoTokenizer, GPT2LMHeadModel

    spec = json.loads((Path(folder) / "prompt.json").read_text())
    return PromptClassifier(AutoTokenizer.from_pretrained(folder), GPT2LMHeadModel.from_pretrained(folder),
                            spec["labels"], spec["question"], spec["cue"], device, spec["max_length"])


# --- generation-augmented training: a label-conditioned generator (recipe.augment) ---

def generate_per_label(cfg, labels: list[str], train, run_dir: Path, device: str):
    """Fine-tune a GPT-2 on `<label>: <text><|endoftext|>` over the training split, then sample
    augment.generated_per_label texts of min_tokens..max_tokens tokens per label.
    Returns a DataFrame text, label (id), line."""
    import pandas as pd
    import torch
    from omegaconf import OmegaConf

    aug = cfg.augment
    gen_cfg = OmegaConf.create({"pretrained": aug.generator, "small": OmegaConf.to_container(aug.generator_small)})
    lines = [f"{labels[int(y)]}: {t}" for t, y in zip(train["text"], train["label"])]
    tokenizer, model = build_lm(gen_cfg, lines, int(cfg.trainer.max_length) + 8, bool(cfg.get("smoke")))
    limit = int(cfg.trainer.max_length)
    sequences = [_ids(tokenizer, line)[:limit] + [tokenizer.eos_token_id] for line in lines]
    model, _ = train_lm(model, sequences, tokenizer.eos_token_id, cfg.trainer, cfg.seed, device, "generator",
                        epochs=int(aug.generator_epochs), lr=float(aug.generator_lr))
    model.save_pretrained(run_dir / "checkpoints" / "generator")
    tokenizer.save_pretrained(run_dir / "checkpoints" / "generator")
    n = int(aug.generated_per_label)
    rows = []
    torch.manual_seed(cfg.seed)
    for y, name in enumerate(labels):
        prompt = torch.as_tensor([_ids(tokenizer, f"{name}:")] * n, device=device)
        with torch.no_grad():
            out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=True,
                                 top_k=int(aug.top_k), min_new_tokens=int(aug.min_tokens),
                                 max_new_tokens=int(aug.max_tokens), pad_token_id=tokenizer.eos_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
        for seq in out[:, prompt.shape[1]:]:
            text = tokenizer.decode(seq, skip_special_tokens=True).strip()
            if text:
                rows.append((text, y))
    frame = pd.DataFrame(rows, columns=["text", "label"])
    return frame.assign(line=range(1, len(frame) + 1))
