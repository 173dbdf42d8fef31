"""The smoke matrix over every wing (python -m nlpexp.smoke), under bf16 and gradient accumulation."""
import json

import pytest


@pytest.mark.slow  # the smoke matrix in subprocesses (minutes): not in `make test-fast`
def test_every_trainable_cell_runs_bf16_with_accumulation_or_refuses_it_in_one_line(tmp_path):
    """The smoke matrix with trainer.precision=bf16 trainer.grad_accum=2: every cell either trains with both (and
    metrics.json says so) or refuses them in one line naming the key and what it reads instead. One task per wing
    here (every model and training loop; the other classification tasks run the same adapters): the whole
    matrix is `python -m nlpexp.smoke trainer.precision=bf16 trainer.grad_accum=2`. oneDNN is capped at AVX2 (as
    on a CPU without AVX-512, e.g. AMD EPYC), so the emulated path runs on every machine: there the run says
    once that bf16 is emulated, and the LSTM runs in fp32 instead of failing inside oneDNN.
    Each wing at the least size that still trains with accumulation (one optimizer step of two micro-batches) and
    evaluates: emulated bf16 is slow (MiniLM's real weights at the smoke batch of 16 took 90 s of this test, the
    story and novel cells' decoding most of the rest)."""
    import subprocess
    import sys

    from nlpexp.smoke import refused

    out, stderr = tmp_path / "smoke", ""
    one_step = "trainer.max_steps=1"  # posenc trains nothing: it refuses trainer.* either way
    least = {"finsent": [one_step, "trainer.batch_size=4", "data.max_train_samples=16", "data.max_eval_samples=8"],
             "story": [one_step, "data.max_eval_samples=8", "generate.max_new_tokens=4"],
             "novel": [one_step, "data.max_eval_samples=8", "generate.eval_length=8"], "embedding": [one_step],
             "posenc": []}
    for task, extra in least.items():
        proc = subprocess.run([sys.executable, "-m", "nlpexp.smoke", "--out", str(out), "--n-jobs", "1",
                               "--tasks", task, "trainer.precision=bf16", "trainer.grad_accum=2", *extra],
                              capture_output=True, text=True, timeout=900, check=False,
                              cwd=tmp_path, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1",
                                                      "ONEDNN_MAX_CPU_ISA": "AVX2"})
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        stderr += proc.stderr
    assert "the LSTM runs in fp32" in stderr and "this CPU has no native bf16" in stderr
    ran, refusals = [], []
    for path in sorted(out.glob("*/*/metrics.json")):
        summary = json.loads(path.read_text())
        if summary["status"] == "complete":
            assert (summary.get("precision"), summary.get("grad_accum")) == ("bf16", 2), path
            assert summary["provenance"]["environment"]["native_bf16"] is False, path
            ran.append(path.parent.name)
        else:
            assert refused(summary["error"]) and "\n" not in summary["error"], summary["error"]
            refusals.append(path.parent.name)
    # gensim's Doc2Vec classifier reads no trainer.* key; task=posenc trains nothing
    assert len(ran) == 21 and sorted(n.split("_", 1)[1] for n in refusals) == ["doc2vec", "transformer"]
