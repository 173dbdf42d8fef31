"""nlpexp.training.hf_trainer, the Trainer glue any wing may use: averaging the weights of saved checkpoints."""


def test_average_weights():
    import torch

    from nlpexp.training.hf_trainer import average_weights

    states = [{"w": torch.tensor([1.0, 0.0]), "n": torch.tensor(2)}, {"w": torch.tensor([3.0, 2.0]),
                                                                      "n": torch.tensor(4)}]
    avg = average_weights(states)
    assert torch.equal(avg["w"], torch.tensor([2.0, 1.0])) and avg["n"].dtype == torch.int64 and avg["n"] == 3
