"""`python -m nlpexp ...` (what torchrun / torch.distributed.run workers start)."""
from nlpexp.cli import main

main()
