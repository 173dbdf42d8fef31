"""What a run reads: local data files, one decoding and one set of refusals for all (readers.py), and pretrained
models, tokenizers and datasets from the hub, a local folder or a package, loaded in one way (hub.py)."""
