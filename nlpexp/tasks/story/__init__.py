"""Story generation: the first sentence of a ROCStories-format story in, the next four out."""
from nlpexp.tasks import Adapter, Task
from nlpexp.tasks.story import config

TASKS = (Task("story", ("transformer_encdec", "transformer", "gpt2", "bert2bert"), ("train", "eval", "generate"),
              "story generation, first sentence in, four out"),)
ADAPTERS = (Adapter("transformer", "transformer", config.StoryTransformer, config.StoryLoop),
            Adapter("transformer_encdec", "transformer_encdec", config.StoryEncDec, config.StoryLoop),
            Adapter("bert2bert", "bert2bert", config.Bert2Bert, config.StoryLoop),
            Adapter("gpt2", "gpt2", config.StoryGPT2, config.StoryLoop))
