"""nlpexp.models.doc2vec, shared by the classify and embedding wings: inference does not depend on the process."""


def test_doc2vec_inference_is_the_same_in_every_process(tmp_path):
    """gensim's start vector came from Python's per-process hash(): two shells scored one saved run differently."""
    import os
    import subprocess
    import sys

    script = ("import sys; from omegaconf import OmegaConf; from nlpexp.models.doc2vec import infer_vector, "
              "train_doc2vec; cfg = OmegaConf.create({'vector_size': 8, 'window': 2, 'min_count': 1, 'epochs': 2, "
              "'dm': 0, 'dbow_words': 1, 'lowercase': True}); d2v = train_doc2vec(['profit rose', 'sales fell'] * 5, "
              "cfg, 0); d2v.random.seed(0); print(infer_vector(d2v, ['profit', 'fell', 'again'], 5).tolist())")
    outs = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(outs) == 1 and outs.pop().startswith("[")
