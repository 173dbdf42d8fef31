"""trainer.precision by what the CPU does: no test here assumes a CPU feature (the flags are given, or oneDNN is
capped below bf16 with ONEDNN_MAX_CPU_ISA, as on a CPU without AVX-512)."""
import pytest
import torch

from nlpexp.training import precision
from nlpexp.errors import UserError


@pytest.fixture
def cpu(monkeypatch):
    """cpu(native): this process's CPU has (True) or lacks (False) native bf16; the said-once notices reset."""
    monkeypatch.setattr(precision, "_SAID", set())

    def make(native: bool):
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    return make


def test_auto_is_bf16_only_on_a_cpu_with_native_bf16(cpu):
    cpu(True)
    assert precision.resolve("auto", "cpu") == "bf16"
    cpu(False)
    assert precision.resolve("auto", "cpu") == "fp32"
    assert precision.resolve("auto", "mps") == "fp32"


def test_a_onednn_cap_below_bf16_means_no_native_bf16(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert precision.cpu_has_native_bf16() is False
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core")
    assert precision.cpu_has_native_bf16() is False


def test_explicit_bf16_without_native_bf16_runs_and_says_so_once(cpu, capsys):
    cpu(False)
    assert precision.resolve("bf16", "cpu") == "bf16"
    assert precision.resolve("bf16", "cpu") == "bf16"
    err = capsys.readouterr().err
    assert err.count("no native bf16") == 1 and "\n" == err[-1] and err.count("\n") == 1
    cpu(True)
    precision._SAID.clear()
    precision.resolve("bf16", "cpu")
    assert capsys.readouterr().err == ""


def test_fp16_on_a_cpu_is_refused_in_one_line():
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        precision.resolve("fp16", "cpu")
    assert precision.resolve("fp16", "cpu", strict=False) == "fp32"


def test_the_lstm_runs_in_fp32_under_bf16_autocast_without_native_bf16(cpu, capsys):
    cpu(False)
    torch.manual_seed(0)
    lstm, x = torch.nn.LSTM(8, 4, batch_first=True), torch.randn(2, 5, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, (h, c) = precision.run_lstm(lstm, x)
        stepped, _ = precision.run_lstm(lstm, x[:, :1], (h, c))
    # fp32 weights on the fp32 copy of the same inputs: what the LSTM computes without autocast
    assert out.dtype == stepped.dtype == torch.float32 and torch.equal(out, lstm(x.float())[0])
    assert capsys.readouterr().err.count("the LSTM runs in fp32") == 1


def test_the_lstm_is_left_to_autocast_with_native_bf16_or_without_autocast(cpu, capsys):
    """(The LSTM is a stand-in that records its input: a real bf16 LSTM fails on CPUs without native bf16.)"""
    seen = []

    def lstm(inputs, state=None):
        seen.append((inputs.dtype, torch.is_autocast_enabled("cpu")))
        return inputs, state

    x = torch.randn(2, 5, 8).bfloat16()
    cpu(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        precision.run_lstm(lstm, x)
    cpu(False)
    precision.run_lstm(lstm, x)
    assert seen == [(torch.bfloat16, True), (torch.bfloat16, False)] and capsys.readouterr().err == ""
