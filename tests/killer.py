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
