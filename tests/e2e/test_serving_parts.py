"""Fast checks of the parts `dlops serve` is made of (the real server is in test_after_training.py)."""


import pytest


@pytest.mark.slow  # the exporter's first use in a process takes ~10-40 s
def test_a_model_the_exporter_cannot_take_gets_one_message_saying_why(tmp_path):
    import torch

    from dlops.errors import ConfigError
    from dlops.inference.export import to_onnx

    class ValueDependent(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2 if x.sum() > 0 else x  # control flow on tensor values: no static graph

    with pytest.raises(ConfigError, match="ValueDependent cannot be exported to ONNX: .+"):
        to_onnx(ValueDependent(), torch.ones(2, 3), tmp_path / "m.onnx", ("input", "output"))
    assert not (tmp_path / "m.onnx").exists()
