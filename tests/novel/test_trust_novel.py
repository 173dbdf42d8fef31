"""Runs you can trust, novel: a saved run's model folder without its saved_files.json is refused."""
from nlpexp.runs import MANIFEST
from refusals import one_line  # tests/ is on sys.path
from saved_runs import MISSING, copy_of, train  # tests/ is on sys.path


# -- novel --------------------------------------------------------------------------------------------------
def test_novel_run_without_its_file_list_is_refused(nlpexp, tmp_path_factory, tmp_path):
    run = copy_of(train(tmp_path_factory.mktemp("novel"), "run", "task=novel", "model=transformer"), tmp_path)
    args = ("task=novel", "model=transformer", "mode=generate", f"ckpt={run}", "prompt=小川背着竹篓", "length=5")
    assert nlpexp(*args, f"hydra.run.dir={tmp_path / 'ok'}").code == 0  # as saved: loads
    (run / "checkpoints" / "best" / MANIFEST).unlink()
    assert f"checkpoints/best: {MISSING}" in one_line(nlpexp(*args, f"hydra.run.dir={tmp_path / 'g'}"))
