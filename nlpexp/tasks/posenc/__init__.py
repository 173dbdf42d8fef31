"""The sinusoidal positional encoding of our Transformer, drawn: no adapter, no training."""
from nlpexp.tasks import Task

TASKS = (Task("posenc", ("transformer",), ("train",), "the sinusoidal positional encoding, plotted"),)
ADAPTERS = ()
