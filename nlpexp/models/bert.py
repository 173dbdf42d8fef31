"""What the BERT-based adapters of several tasks share (classify's bert_fc/bert_lstm, novel's next-character heads)."""
from nlpexp.errors import UserError


def freeze_encoder(bert, freeze) -> None:
    """What stays fixed while training. none/false/0: nothing; all/true: the whole encoder; all_but_pooler: the
    whole encoder except its pooler (the classifiers' [CLS] projection); an integer N: embeddings and the first
    N layers."""
    if freeze is None or freeze is False or freeze in ("none", 0):
        return
    if freeze is True or freeze in ("all", "all_but_pooler"):
        for p in bert.parameters():
            p.requires_grad = False
        if freeze == "all_but_pooler" and getattr(bert, "pooler", None) is not None:
            for p in bert.pooler.parameters():
                p.requires_grad = True
        return
    if int(freeze) > len(bert.encoder.layer):
        raise UserError(f"model.freeze={freeze}: the encoder has only {len(bert.encoder.layer)} layers")
    for p in bert.embeddings.parameters():
        p.requires_grad = False
    for layer in bert.encoder.layer[: int(freeze)]:
        for p in layer.parameters():
            p.requires_grad = False
