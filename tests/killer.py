"""Scripts that run `nlpexp <args>` and SIGKILL themselves around a step checkpoint, for the kill -9 / resume tests.
KILL_AFTER_CHECKPOINT_6: right after our loop writes checkpoint-6 (with trainer.save_steps=2 and 4 steps an epoch:
epoch 2, step 2)."""

KILL_AFTER_CHECKPOINT_6 = """
import os, signal, sys
from nlpexp.training import loop
from nlpexp.cli import main

save = loop.save_checkpoint
def save_then_die(ckpt_dir, step, *args, **kwargs):  # SIGKILL right after checkpoint-6: epoch 2, step 2 of 4
    folder = save(ckpt_dir, step, *args, **kwargs)
    if step == 6:
        os.kill(os.getpid(), signal.SIGKILL)
    return folder
loop.save_checkpoint = save_then_die
sys.argv = ["nlpexp", *sys.argv[1:]]
main()
"""

# SIGKILL in the middle of a step checkpoint's write, as a kill -9 (or a full disk) leaves it: the file being written
# is there with 0 bytes, the rest of the checkpoint never comes. `{folder}`: checkpoint-N (under whatever temporary
# name the save writes it), `{file}`: the file's name.
KILL_INSIDE_SAVE = """
import os, signal, sys

def die_inside(real):
    def save(obj, path, *args, **kwargs):
        where = os.path.normpath(str(path))
        if os.path.basename(where) == {file!r} and os.path.basename(os.path.dirname(where)).startswith({folder!r}):
            open(path, "wb").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return real(obj, path, *args, **kwargs)
    return save

import torch, safetensors.torch
torch.save = die_inside(torch.save)  # the Trainer's optimizer.pt
safetensors.torch.save_file = die_inside(safetensors.torch.save_file)  # nlpexp.training.loop's optimizer.safetensors
"""
KILL_TRAINER_INSIDE_CHECKPOINT_6 = KILL_INSIDE_SAVE.format(folder="checkpoint-6", file="optimizer.pt") + """
from nlpexp.cli import main
sys.argv = ["nlpexp", *sys.argv[1:]]
main()
"""

# The Trainer path's KILL_AFTER_CHECKPOINT_6: SIGKILL right after checkpoint-6 is complete (renamed into place)
KILL_AFTER_TRAINER_CHECKPOINT_6 = """
import os, signal, sys
from nlpexp.tasks.classify import trainer
from nlpexp.cli import main

make = trainer.resumable_trainer
def resumable_trainer(seed):
    cls = make(seed)
    save = cls._save_checkpoint
    def save_then_die(self, *args, **kwargs):  # SIGKILL right after checkpoint-6: epoch 2, step 2 of 4
        save(self, *args, **kwargs)
        if self.state.global_step == 6:
            os.kill(os.getpid(), signal.SIGKILL)
    cls._save_checkpoint = save_then_die
    return cls
trainer.resumable_trainer = resumable_trainer
sys.argv = ["nlpexp", *sys.argv[1:]]
main()
"""

# A sitecustomize.py (on PYTHONPATH) that parks a run right after its first Trainer checkpoint is complete, for a
# test to kill it there: in the process whose checkpoints go to $PARK_RUN/checkpoints only (a sweep's job 1, its
# other jobs train through), whichever process that is (the sweep's own, or a job process submitit started with
# the sweep's environment). No race with a run that would otherwise finish before the kill comes.
PARK_AFTER_FIRST_TRAINER_CHECKPOINT = """
import importlib.abc, importlib.util, os, sys, time
from pathlib import Path

def patch(module):  # nlpexp's Trainer subclass: its _save_checkpoint renames checkpoint-N into place
    make = module.resumable_trainer
    def resumable_trainer(seed):
        trainer_class = make(seed)
        save = trainer_class._save_checkpoint
        def save_then_park(self, *args, **kwargs):
            save(self, *args, **kwargs)
            if Path(self.args.output_dir).resolve() == Path(os.environ["PARK_RUN"], "checkpoints").resolve():
                time.sleep(300)  # the test kills this process here
        trainer_class._save_checkpoint = save_then_park
        return trainer_class
    module.resumable_trainer = resumable_trainer

class Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "nlpexp.tasks.classify.trainer":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            patch(module)
        spec.loader.exec_module = exec_module
        return spec

if os.environ.get("PARK_RUN"):
    sys.meta_path.insert(0, Hook())
"""

# `nlpexp <args>` that stops in the middle of writing its final model (checkpoints/best, written whole or not at all:
# the files are in best.tmp-<pid>, not yet sealed and renamed), for a test to kill it there, however fast the model
# saves.
PARK_INSIDE_FINAL_SAVE = """
import sys, time
from pathlib import Path
from nlpexp import runs
from nlpexp.cli import main

seal = runs.seal
def park_then_seal(folder, *args, **kwargs):
    if Path(folder).name.startswith("best.tmp-"):
        time.sleep(300)  # the test kills this process here
    return seal(folder, *args, **kwargs)
runs.seal = park_then_seal
sys.argv = ["nlpexp", *sys.argv[1:]]
main()
"""
