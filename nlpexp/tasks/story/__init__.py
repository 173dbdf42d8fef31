"""Story generation: the first sentence of a ROCStories-format story in, the next four out."""
from nlpexp.tasks import Adapter, Task

TASKS = (Task("story", ("transformer_encdec", "transformer", "gpt2", "bert2bert"), ("train", "eval", "generate"),
              "story generation, first sentence in, four out"),)
ADAPTERS = tuple(Adapter(name, name, "story") for name in ("transformer", "transformer_encdec", "bert2bert", "gpt2"))
