"""Chinese novel continuation: the next character over a sliding window, then generation."""
from nlpexp.tasks import Adapter, Task
from nlpexp.tasks.novel import config

TASKS = (Task("novel", ("bert_lstm", "bert_fc", "transformer", "gpt2"), ("train", "generate"),
              "Chinese novel continuation, next character"),)
ADAPTERS = (Adapter("bert_fc", "bert", config.NextCharBertFC, config.NovelLoop),
            Adapter("bert_lstm", "bert", config.NextCharBertLSTM, config.NovelLoop),
            Adapter("transformer", "transformer", config.NextCharTransformer, config.NovelLoop),
            Adapter("gpt2", "gpt2", config.NextCharGPT2, config.NovelLoop))
