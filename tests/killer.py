"""A script that runs `nlpexp <args>` and SIGKILLs itself right after our loop writes checkpoint-6 (with
trainer.save_steps=2 and 4 steps an epoch: epoch 2, step 2), for the kill -9 / resume tests."""

KILL_AFTER_CHECKPOINT_6 = """
import os, signal, sys
from nlpexp import loop
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
