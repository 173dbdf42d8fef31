"""Optuna search spaces whose parameters depend on the model (hydra-optuna-sweeper's `custom_search_space`: a
function of the sweep's config and the trial). A model refuses the keys it does not read, so one flat
`hydra.sweeper.params` cannot serve a Doc2Vec and a fine-tuned encoder alike."""
from nlpexp.config import registry


def classify(cfg, trial) -> None:
    """Classification: gensim's Doc2Vec tunes its embedding and classifier; every other model its optimiser
    (the Trainer loop's and gpt2_prompt's LM loop read the same four keys)."""
    if registry.MODELS[cfg.model.name].adapters["classify"].trainer is None:  # gensim: no trainer.* read
        trial.suggest_int("model.vector_size", 50, 300, log=True)
        trial.suggest_int("model.window", 2, 10)
        trial.suggest_int("model.epochs", 10, 40)
        trial.suggest_float("model.C", 0.01, 100.0, log=True)
        return
    trial.suggest_float("trainer.lr", 1e-5, 1e-3, log=True)
    trial.suggest_categorical("trainer.batch_size", [8, 16, 32])
    trial.suggest_int("trainer.epochs", 1, 4)
    trial.suggest_float("trainer.weight_decay", 0.0, 0.1)
