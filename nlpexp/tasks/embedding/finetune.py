"""task.method=finetune: the encoder itself trained on the training pairs with a sentence-transformers pair loss
(cosine, CoSENT, AnglE, contrastive) in our loop, and the fine-tuned encoder loaded back. Any embedder that can
become a SentenceTransformer (`embedder.sentence_transformer(folder)`) fine-tunes here; the recipe names no adapter."""
from pathlib import Path

import numpy as np

from nlpexp.runs import loading, write_dir
from nlpexp.tasks.embedding.sentence_transformers import SentenceEmbedder, check_modules


class PairJob:
    """Labelled text pairs for nlpexp.training.loop with a sentence-transformers pair loss: a batch is a list of pair
    indices, tokenised when scored."""

    unit = "pairs"

    def __init__(self, st_model, loss_fn, text_1, text_2, score, batch_size: int, seed: int):
        self.model, self.loss_fn, self.text_1, self.text_2 = st_model, loss_fn, text_1, text_2
        self.score, self.batch_size, self.seed = score, batch_size, seed

    def batches(self, epoch: int):
        from nlpexp.training.loop import seeded_order

        order = seeded_order(len(self.text_1), self.seed, epoch)
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def units(self, batch) -> int:
        return len(batch)

    def loss_sum(self, idx):
        import torch

        from nlpexp.training.loop import to_device

        device = next(self.model.parameters()).device
        features = [to_device(dict(self.model.preprocess([texts[i] for i in idx])), device)
                    for texts in (self.text_1, self.text_2)]
        return self.loss_fn(features, torch.from_numpy(self.score[idx]).to(device)) * len(idx)


def finetune(st_model, pairs, ft, trainer, seed: int, out_dir: Path, device: str, resume_from=None):
    """Train the encoder itself on (text_1, text_2, label) pairs with a sentence-transformers pair loss in
    nlpexp.training.loop (task.finetune.* holds its epochs, batch size, rate, warm-up, weight decay and step cap;
    trainer.* its accumulation, precision, deadline and step checkpoints); returns (embedder, per-epoch history).

    The library's loss modules in our loop rather than SentenceTransformerTrainer: that trainer ran at 40-130 s
    per 16-pair step on the shared CPU, where a hand-timed step of the same model took 3-5 s (not a clean
    comparison: the machine's load changed between the two timings)."""
    from sentence_transformers.sentence_transformer import losses

    from nlpexp.training import loop

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
    settings = loop.Settings.of(trainer, device, epochs=int(ft.epochs), batch_size=int(ft.batch_size),
                                lr=float(ft.lr), warmup_ratio=float(ft.warmup_ratio), max_steps=int(ft.max_steps),
                                weight_decay=float(ft.weight_decay))
    job = PairJob(st_model, loss_fn, list(pairs["text_1"]), list(pairs["text_2"]), score, settings.batch_size, seed)
    history, info = loop.fit(job, settings, device, run_dir=out_dir.parent, resume_from=resume_from, desc="finetune")
    st_model.eval()
    with write_dir(out_dir / "encoder") as tmp:  # written whole or not at all
        st_model.save(str(tmp))
    return SentenceEmbedder(st_model, "finetuned", precision=settings.precision), history, info


def load_finetuned(folder: Path, device: str) -> SentenceEmbedder:
    """A fine-tuned run's encoder: its modules.json checked first, weights from safetensors only, no remote code."""
    from sentence_transformers import SentenceTransformer

    check_modules(folder)
    with loading(folder):
        model = SentenceTransformer(str(folder), device=device, trust_remote_code=False,
                                    model_kwargs={"use_safetensors": True})
    return SentenceEmbedder(model, "finetuned")
