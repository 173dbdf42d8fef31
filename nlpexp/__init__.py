"""nlpexp: a config-driven experiment runner for NLP research."""

__version__ = "0.1.0"
