"""Classification of the user's own data (task=classify: labels from the data), and its presets: financial
sentiment, emotions, Chinese sentiment, CLUE-style."""
from nlpexp.config.schema import HFTrainerLoop
from nlpexp.tasks import Adapter, Task
from nlpexp.tasks.classify import config

MODES = ("train", "eval", "predict", "soup", "prepare")
CLASSIFIERS = ("minilm", "bert", "finbert", "bert_chinese", "bert_fc", "bert_lstm", "transformer", "gpt2",
               "gpt2_prompt", "bert_chinese_mlm", "doc2vec")
TASKS = (
    Task("classify", CLASSIFIERS, MODES, "your own labelled texts: csv, tsv, jsonl, parquet or a hub dataset"),
    Task("finsent", ("minilm", "finbert", "bert", "doc2vec", "bert_fc", "bert_lstm", "transformer", "gpt2",
                     "gpt2_prompt"), MODES, "financial news sentiment"),
    Task("emotion", ("minilm", "bert", "finbert", "doc2vec", "gpt2", "gpt2_prompt", "bert_fc", "bert_lstm",
                     "transformer"), MODES, "English emotions, 6 or 13 labels"),
    Task("chnsenti", ("bert_chinese", "bert_chinese_mlm", "bert_fc", "bert_lstm", "transformer", "gpt2"), MODES,
         "Chinese sentiment"),
    Task("zh_emotion", ("bert_chinese", "bert_chinese_mlm", "bert_fc", "bert_lstm", "transformer", "gpt2"), MODES,
         "Chinese emotions, 7 labels"),
    Task("clue", ("bert_fc", "bert_chinese", "bert_lstm", "transformer", "gpt2"), MODES,
         "CLUE-style classification, labels from the data"),
)
# loops: "trainer" (transformers' Trainer, trainer.py), "lm" (gpt2_prompt's language-model loop), "gensim" (none)
ADAPTERS = (
    *(Adapter(name, "hf", config.HFClassifier, HFTrainerLoop, data_parallel=True)
      for name in ("minilm", "bert", "finbert", "bert_chinese")),
    Adapter("bert_chinese_mlm", "mlm_prompt", config.MLMPromptClassifier, HFTrainerLoop),
    Adapter("bert_fc", "bert_heads", config.BertHeadClassifier, HFTrainerLoop),
    Adapter("bert_lstm", "bert_heads", config.BertLSTMClassifier, HFTrainerLoop),
    Adapter("transformer", "transformer", config.TransformerClassifier, HFTrainerLoop),
    Adapter("gpt2", "gpt2", config.GPT2Classifier, HFTrainerLoop),
    Adapter("gpt2_prompt", "gpt2_prompt", config.GPT2PromptClassifier, config.PromptLoop),
    Adapter("doc2vec", "doc2vec", config.Doc2VecClassifier),
)
