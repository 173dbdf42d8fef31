"""Training, shared by every wing: our loop (loop.py), the transformers Trainer glue (hf_trainer.py), numeric
precision (precision.py), data parallel over processes and nodes (distributed.py) and the one decoder (decoding.py)."""
