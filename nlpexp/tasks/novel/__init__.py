"""Chinese novel continuation: the next character over a sliding window, then generation."""
from nlpexp.tasks import Adapter, Task

TASKS = (Task("novel", ("bert_lstm", "bert_fc", "transformer", "gpt2"), ("train", "generate"),
              "Chinese novel continuation, next character"),)
ADAPTERS = (Adapter("bert_fc", "bert", "novel"), Adapter("bert_lstm", "bert", "novel"),
            Adapter("transformer", "transformer", "novel"), Adapter("gpt2", "gpt2", "novel"))
