"""The moving average of the weights (`train.ema_decay`): its arithmetic, and that evaluating with it
leaves the raw training weights untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recog.train import WeightAverage


def constant_linear(value: float) -> nn.Linear:
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.fill_(value)
        layer.bias.fill_(value)
    return layer


def test_the_average_follows_the_weights_with_the_configured_decay():
    model = constant_linear(0.0)
    average = WeightAverage(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(1.0)
    average.update(model, step=1000)  # decay 0.5: halfway from 0 to 1
    assert torch.allclose(average.shadow["weight"], torch.full((1, 2), 0.5))
    average.update(model, step=1001)
    assert torch.allclose(average.shadow["bias"], torch.full((1,), 0.75))


def test_early_steps_use_a_smaller_decay_so_the_initial_weights_fade_fast():
    model = constant_linear(0.0)
    average = WeightAverage(model, decay=0.999)
    model.weight.data.fill_(1.0)
    average.update(model, step=0)  # decay min(0.999, 1/10) = 0.1
    assert average.shadow["weight"][0, 0].item() == pytest.approx(0.9)


def test_applied_swaps_the_average_in_and_restores_the_raw_weights_even_after_an_error():
    model = constant_linear(0.0)
    average = WeightAverage(model, decay=0.5)
    model.weight.data.fill_(4.0)
    model.bias.data.fill_(4.0)
    average.update(model, step=1000)  # shadow 2.0
    with average.applied(model):
        assert model.weight.data[0, 0].item() == 2.0
        output = model(torch.ones(1, 2))
    assert output.item() == pytest.approx(2.0 * 2 + 2.0)  # the bias is averaged too
    assert model.weight.data[0, 0].item() == 4.0
    with pytest.raises(RuntimeError), average.applied(model):
        raise RuntimeError("evaluation failed")
    assert model.weight.data[0, 0].item() == 4.0 and model.bias.data[0].item() == 4.0


def test_the_average_is_kept_in_fp32_and_reloads_from_a_state_dict():
    model = constant_linear(1.0).to(torch.bfloat16)
    average = WeightAverage(model, decay=0.9)
    assert all(value.dtype == torch.float32 for value in average.shadow.values())
    other = WeightAverage(constant_linear(0.0), decay=0.9)
    other.load({name: value.clone() for name, value in average.shadow.items()})
    assert all(torch.equal(other.shadow[name], average.shadow[name]) for name in average.shadow)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.1, 1.5])
def test_a_decay_outside_the_open_unit_interval_is_refused(decay):
    with pytest.raises(ValueError, match="ema_decay"):
        WeightAverage(constant_linear(0.0), decay=decay)
