"""HF encoders (BERT, FinBERT, MiniLM) with a sequence-classification head, trained by the transformers Trainer.

`model.pretrained` is a hub id, a local folder, or a packaged model name; null builds the same BERT
architecture small from `model.small` with a WordPiece tokenizer trained on the training texts.
"""
import shutil
from pathlib import Path

import numpy as np

from nlpexp.errors import UserError
from nlpexp.runtime import is_hub_id, packaged_model_path

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(texts, vocab_size: int, lowercase: bool = True):
    """A BERT-style WordPiece tokenizer trained on `texts` (the offline stand-in for a hub vocabulary)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(list(texts), trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def hub_error(name: str, err: Exception) -> UserError:
    first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
    return UserError(f"cannot load '{name}' from the Hugging Face hub or a local folder ({first}); offline, use "
                     "model.pretrained=null to build it small from config, or model.pretrained=<local folder>")


def build(model_cfg, labels: list[str], train_texts, max_length: int, smoke: bool = False):
    """(tokenizer, model) for sequence classification with len(labels) outputs."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig

    id2label = dict(enumerate(labels))
    label2id = {name: i for i, name in enumerate(labels)}
    name = model_cfg.get("pretrained")
    if smoke and is_hub_id(name):
        name = None
    if name is None:
        small = model_cfg.small
        tokenizer = train_wordpiece(train_texts, small.vocab_size)
        config = BertConfig(vocab_size=len(tokenizer), hidden_size=small.hidden_size,
                            num_hidden_layers=small.num_hidden_layers, num_attention_heads=small.num_attention_heads,
                            intermediate_size=small.intermediate_size, max_position_embeddings=max(max_length, 64) + 2,
                            num_labels=len(labels), id2label=id2label, label2id=label2id,
                            pad_token_id=tokenizer.pad_token_id)
        return tokenizer, AutoModelForSequenceClassification.from_config(config)
    path = packaged_model_path(str(name)) or str(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=len(labels), id2label=id2label, label2id=label2id, ignore_mismatched_sizes=True,
            dtype=torch.float32)
    except (OSError, ValueError, ConnectionError) as err:
        raise hub_error(str(name), err) from None
    return tokenizer, model


class Classifier:
    """A trained or loaded model that scores texts."""

    def __init__(self, tokenizer, model, device: str, max_length: int):
        self.tokenizer, self.model, self.device, self.max_length = tokenizer, model.to(device).eval(), device, max_length

    def predict_proba(self, texts, batch_size: int = 64) -> np.ndarray:
        import torch

        texts = list(texts)
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths batch together: less padding
        out = np.zeros((len(texts), self.model.config.num_labels), dtype=np.float64)
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                idx = order[start:start + batch_size]
                enc = self.tokenizer([texts[i] for i in idx], truncation=True, max_length=self.max_length,
                                     padding=True, return_tensors="pt").to(self.device)
                out[idx] = torch.softmax(self.model(**enc).logits.float(), dim=-1).cpu().numpy()
        return out

    def save(self, folder: Path) -> None:
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)


def load(folder: Path, device: str, max_length: int = 128) -> Classifier:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return Classifier(AutoTokenizer.from_pretrained(folder), AutoModelForSequenceClassification.from_pretrained(folder),
                      device, max_length)


def _history(log_history: list[dict]) -> list[dict]:
    rows: dict[float, dict] = {}
    for entry in log_history:
        epoch = round(entry.get("epoch", 0), 3)
        row = rows.setdefault(epoch, {"epoch": epoch})
        if "loss" in entry:
            row["train_loss"] = entry["loss"]
        for key, value in entry.items():
            if key.startswith("eval_") and not key.endswith(("runtime", "per_second")):
                row["val_" + key[5:]] = value
    return [rows[k] for k in sorted(rows)]


def fit(cfg, labels: list[str], splits, run_dir: Path, device: str):
    """Fine-tune with the Trainer (dynamic padding, length-grouped batches), keep the best epoch by validation."""
    import datasets
    import transformers
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()

    from nlpexp.metrics import classification_metrics

    tr = cfg.trainer
    tokenizer, model = build(cfg.model, labels, splits["train"]["text"], tr.max_length, bool(cfg.get("smoke")))

    def encode(frame):
        ds = Dataset.from_dict({"text": list(frame["text"]), "label": list(frame["label"])})
        return ds.map(lambda b: tokenizer(b["text"], truncation=True, max_length=tr.max_length), batched=True,
                      remove_columns=["text"])

    def compute_metrics(pred):
        logits, gold = pred
        return classification_metrics(gold, logits, labels)[0]

    ckpt_dir = run_dir / "checkpoints"
    args = TrainingArguments(
        output_dir=str(ckpt_dir), num_train_epochs=tr.epochs, max_steps=tr.max_steps,
        per_device_train_batch_size=tr.batch_size, per_device_eval_batch_size=tr.eval_batch_size,
        gradient_accumulation_steps=tr.grad_accum, learning_rate=tr.lr, weight_decay=tr.weight_decay,
        warmup_steps=tr.warmup_ratio, eval_strategy="epoch", save_strategy="epoch", logging_strategy="epoch",
        load_best_model_at_end=True, metric_for_best_model=tr.best_metric, greater_is_better=True,
        save_total_limit=None if tr.keep_checkpoints else 2, seed=cfg.seed, data_seed=cfg.seed,
        use_cpu=device == "cpu", train_sampling_strategy="group_by_length", report_to=[], disable_tqdm=False,
        dataloader_num_workers=0, save_only_model=False)
    trainer = Trainer(model=model, args=args, train_dataset=encode(splits["train"]),
                      eval_dataset=encode(splits["validation"]), processing_class=tokenizer,
                      data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=compute_metrics)
    resume = cfg.get("resume_from")
    out = trainer.train(resume_from_checkpoint=resume)
    clf = Classifier(tokenizer, trainer.model, device, tr.max_length)
    clf.save(ckpt_dir / "best")
    if not tr.keep_checkpoints:
        for old in ckpt_dir.glob("checkpoint-*"):
            shutil.rmtree(old, ignore_errors=True)
    info = {"train_samples_per_s": round(out.metrics["train_samples_per_second"], 2),
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "best_checkpoint": trainer.state.best_model_checkpoint}
    return clf, _history(trainer.state.log_history), info


# --- embedding task: the encoder as a sentence embedder (mean of the last hidden states over real tokens) ---

def weights_fingerprint(model) -> str:
    """Short hash of a model's weights: the cache id of a model built here (random init, fine-tuned)."""
    import hashlib

    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def mean_pool(hidden, attention_mask):
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class MeanPooledEncoder:
    """Any HF encoder as an embedder; `id` names it in the embedding cache."""

    def __init__(self, tokenizer, model, device: str, max_length: int, model_id: str, batch_size: int = 64):
        self.tokenizer, self.model, self.device = tokenizer, model.to(device).eval(), device
        self.max_length, self.batch_size, self.built_here = max_length, batch_size, model_id is None
        self.id = f"hf-mean:{model_id}" if model_id else f"hf-mean:built:{weights_fingerprint(model)}"

    def encode(self, texts) -> np.ndarray:
        import torch
        from tqdm.auto import tqdm

        texts = list(texts)
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        with torch.no_grad():
            for start in tqdm(range(0, len(texts), self.batch_size), desc="embed", leave=False, mininterval=2,
                              disable=len(texts) < 2000):
                idx = order[start:start + self.batch_size]
                enc = self.tokenizer([texts[i] for i in idx], truncation=True, max_length=self.max_length,
                                     padding=True, return_tensors="pt").to(self.device)
                hidden = self.model(**enc).last_hidden_state
                out[idx] = mean_pool(hidden, enc["attention_mask"]).float().cpu().numpy()
        return out

    def save(self, folder: Path) -> None:
        """Only a model built here needs saving; a named one is rebuilt from its name."""
        if self.built_here:
            self.model.save_pretrained(folder)
            self.tokenizer.save_pretrained(folder)

    def sentence_transformer(self, folder: Path):
        """The same encoder + mean pooling as a SentenceTransformer (for method=finetune)."""
        from sentence_transformers import SentenceTransformer

        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        return SentenceTransformer(str(folder), device=self.device)


def embedder(cfg, train_texts, device: str) -> MeanPooledEncoder:
    """Pretrained encoder by name; null (or a hub id in smoke runs) builds it small on the training texts."""
    import torch
    from transformers import AutoModel, AutoTokenizer, BertConfig

    name = cfg.model.get("pretrained")
    if cfg.get("smoke") and is_hub_id(name):
        name = None
    max_length = cfg.trainer.max_length
    if name is None:
        small = cfg.model.small
        tokenizer = train_wordpiece(train_texts, small.vocab_size)
        config = BertConfig(vocab_size=len(tokenizer), hidden_size=small.hidden_size,
                            num_hidden_layers=small.num_hidden_layers, num_attention_heads=small.num_attention_heads,
                            intermediate_size=small.intermediate_size, max_position_embeddings=max(max_length, 64) + 2,
                            pad_token_id=tokenizer.pad_token_id)
        return MeanPooledEncoder(tokenizer, AutoModel.from_config(config), device, max_length, None)
    path = packaged_model_path(str(name)) or str(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError, ConnectionError) as err:
        raise hub_error(str(name), err) from None
    return MeanPooledEncoder(tokenizer, model, device, max_length, str(name))


def load_embedder(saved_cfg, folder: Path, device: str) -> MeanPooledEncoder:
    from transformers import AutoModel, AutoTokenizer

    if (folder / "config.json").exists():
        return MeanPooledEncoder(AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder), device,
                                 saved_cfg.trainer.max_length, None)
    return embedder(saved_cfg, [], device)
