"""The recurrent CTC model: padded batches equal packed sequences, cells, lengths, and overfitting real speech."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
from torch import nn

from recog.config import FeatureConfig, ModelConfig, config_from_dict, load_config
from recog.decode.greedy import GreedyDecoder
from recog.features.speech import CMVN, SpeechFeatures
from recog.metrics import cer
from recog.model import CELLS, BidirectionalLayer, CTCModel, reverse_within_length, stack_frames
from recog.precision import cpu_bf16_supported
from recog.vocab import Vocab


def padded_batch(lengths: list[int], feat: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randn(len(lengths), max(lengths), feat, generator=generator)  # (batch, time, feat)
    for row, length in enumerate(lengths):
        frames[row, length:] = 99.0  # loud garbage in the padding: must not leak into the outputs
    return frames, torch.tensor(lengths)


def test_reverse_within_length_keeps_padding_in_place():
    sequences = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    reversed_ = reverse_within_length(sequences, torch.tensor([3, 2]))
    assert reversed_.tolist() == [[3, 2, 1, 0], [5, 4, 0, 0]]
    assert torch.equal(reverse_within_length(reversed_, torch.tensor([3, 2])), sequences)


def test_reverse_within_length_gradient_matches_gather():
    """The row-pick reversal's gradient is the reference `gather`'s (checked numerically too)."""
    torch.manual_seed(0)
    lengths = torch.tensor([7, 4, 1])
    values = torch.randn(3, 7, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: reverse_within_length(x, lengths), (values,))
    steps = torch.arange(7).unsqueeze(0)
    index = torch.where(steps < lengths.unsqueeze(1), lengths.unsqueeze(1) - 1 - steps, steps)
    reference = values.gather(1, index.unsqueeze(-1).expand_as(values))
    weights = torch.randn(3, 7, 5, dtype=torch.float64)
    ours = reverse_within_length(values, lengths)
    assert torch.equal(ours, reference)
    (ours_grad,) = torch.autograd.grad((ours * weights).sum(), values)
    (reference_grad,) = torch.autograd.grad((reference * weights).sum(), values)
    assert torch.equal(ours_grad, reference_grad)
    # a non-contiguous input (a slice of a wider tensor) and a bf16 one go through the same way
    wide = torch.randn(3, 7, 10)
    torch.testing.assert_close(
        reverse_within_length(wide[..., :5], lengths), reverse_within_length(wide, lengths)[..., :5]
    )
    half = values.detach().to(torch.bfloat16)
    assert torch.equal(reverse_within_length(half, lengths), reference.detach().to(torch.bfloat16))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_padded_bidirectional_layer_equals_packed_sequences(cell):
    torch.manual_seed(0)
    layer = BidirectionalLayer(cell, 5, 7).eval()
    lengths = [9, 6, 1, 4]
    frames, length_tensor = padded_batch(lengths, 5)
    with torch.no_grad():
        outputs = layer(frames, length_tensor)  # (batch, time, 2 * hidden)

        # reference 1: PyTorch's own bidirectional RNN on packed sequences, with the same weights
        reference = CELLS[cell](5, 7, batch_first=True, bidirectional=True)
        for name, value in layer.forward_rnn.named_parameters():
            getattr(reference, name).copy_(value)
        for name, value in layer.backward_rnn.named_parameters():
            getattr(reference, name + "_reverse").copy_(value)
        packed = nn.utils.rnn.pack_padded_sequence(
            frames, length_tensor, batch_first=True, enforce_sorted=False
        )
        packed_out, _ = reference(packed)
        expected, _ = nn.utils.rnn.pad_packed_sequence(
            packed_out, batch_first=True, total_length=max(lengths)
        )

        # reference 2: each sequence on its own, without any padding
        for row, length in enumerate(lengths):
            alone = layer(frames[row : row + 1, :length], torch.tensor([length]))[0]
            torch.testing.assert_close(outputs[row, :length], alone, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(outputs[row, :length], expected[row, :length], atol=1e-5, rtol=1e-4)
    assert outputs.shape == (4, 9, 14)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_model_output_shapes_and_lengths(cell):
    config = ModelConfig(cell=cell, hidden=8, layers=2, dropout=0.0, stack=3)
    model = CTCModel(config, input_dim=6, vocab_size=29).eval()
    lengths = [31, 17, 3]
    frames, length_tensor = padded_batch(lengths, 6)
    with torch.no_grad():
        log_probs, out_lengths = model(frames, length_tensor)
    assert log_probs.shape == (3, 31 // 3, 29)
    assert out_lengths.tolist() == [31 // 3, 17 // 3, 3 // 3]
    assert torch.equal(model.output_lengths(length_tensor), out_lengths)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(3, 10))
    # the valid part of each row does not depend on the padding or the batch it is in
    with torch.no_grad():
        for row, length in enumerate(lengths):
            alone, _ = model(frames[row : row + 1, :length], torch.tensor([length]))
            torch.testing.assert_close(log_probs[row, : length // 3], alone[0], atol=1e-5, rtol=1e-4)
    # a recurrent cell of the named kind is actually used
    assert isinstance(model.layers[0].forward_rnn, CELLS[cell])
    assert model.layers[0].forward_rnn.input_size == 6 * 3
    assert model.layers[1].forward_rnn.input_size == 2 * 8


def test_inputs_shorter_than_one_output_frame_give_empty_outputs():
    """A batch of only such inputs (a lone tiny file in transcription) has no steps for the RNNs."""
    model = CTCModel(ModelConfig(hidden=8, layers=2, stack=3), input_dim=6, vocab_size=29).eval()
    frames, lengths = padded_batch([2, 1], 6)
    with torch.no_grad():
        log_probs, out_lengths = model(frames, lengths)
    assert log_probs.shape == (2, 0, 29) and log_probs.dtype == torch.float32
    assert out_lengths.tolist() == [0, 0]
    frames, lengths = padded_batch([2, 9], 6)  # beside a longer input: padded, as before
    with torch.no_grad():
        log_probs, out_lengths = model(frames, lengths)
    assert log_probs.shape == (2, 3, 29) and out_lengths.tolist() == [0, 3]


def test_unknown_cell_is_refused():
    with pytest.raises(ValueError, match=r"model.cell.*'transformer'"):
        CTCModel(ModelConfig(cell="transformer", hidden=4, layers=1), input_dim=3, vocab_size=5)


def test_conv_norm_instance_is_padding_independent_and_old_configs_load_without_it():
    torch.manual_seed(0)
    config = ModelConfig(
        hidden=16, layers=2, dropout=0.0, stack=2, conv_channels=(4, 8), conv_norm="instance"
    )
    model = CTCModel(config, input_dim=24, vocab_size=10).eval()
    assert [name for name in model.state_dict() if name.startswith("front.norms.")] == [
        f"front.norms.{block}.{part}" for block in (0, 1) for part in ("weight", "bias")
    ]
    lengths = [40, 23, 9]
    frames, length_tensor = padded_batch(lengths, 24)
    with torch.no_grad():
        log_probs, out_lengths = model(frames, length_tensor)
        for row, length in enumerate(lengths):
            alone, _ = model(frames[row : row + 1, :length], torch.tensor([length]))
            torch.testing.assert_close(log_probs[row, : length // 2], alone[0], atol=1e-5, rtol=1e-4)
        # the normalisation acts: each channel of a line has zero mean and unit variance over its columns
        mask = (torch.arange(40) < length_tensor[:, None])[:, None, None, :].float()
        normalised = model.front.norms[0](
            model.front.blocks[0](frames.transpose(1, 2).unsqueeze(1) * mask), mask
        )
        count = mask.sum(dim=3, keepdim=True) * 24
        mean = (normalised * mask).sum(dim=(2, 3), keepdim=True) / count
        torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-5, rtol=0)
    assert out_lengths.tolist() == [20, 11, 4] and log_probs.isfinite().all()
    with pytest.raises(ValueError, match=r"model.conv_norm.*'batch'"):
        CTCModel(ModelConfig(conv_channels=(4,), conv_norm="batch"), input_dim=8, vocab_size=5)

    # a checkpoint saved before the option existed: no conv_norm key, no norm weights; loads as before
    old = CTCModel(ModelConfig(hidden=8, layers=1, stack=2, conv_channels=(4, 8)), 24, 10)
    saved = {key: value for key, value in asdict(old.config).items() if key != "conv_norm"}
    restored = config_from_dict(ModelConfig, saved)
    assert restored.conv_norm == "none"
    CTCModel(restored, 24, 10).load_state_dict(old.state_dict())  # strict: the same keys
    assert load_config(None, ["model.conv_norm=instance"]).model.conv_norm == "instance"


def test_stack_frames_concatenates_neighbours():
    frames = torch.arange(2 * 7 * 2, dtype=torch.float32).reshape(2, 7, 2)
    stacked, lengths = stack_frames(frames, torch.tensor([7, 5]), 3)
    assert stacked.shape == (2, 2, 6)
    assert lengths.tolist() == [2, 1]
    assert stacked[0, 1].tolist() == frames[0, 3:6].reshape(-1).tolist()
    same, same_lengths = stack_frames(frames, torch.tensor([7, 5]), 1)
    assert same is frames and same_lengths.tolist() == [7, 5]


OVERFIT_TEXTS = ["open the door", "a big red fish", "good morning", "she sells shells", "seven black cats"]


def test_ctc_model_overfits_five_real_utterances_to_zero_cer(speak):
    torch.manual_seed(0)
    vocab = Vocab.speech()
    features = SpeechFeatures(FeatureConfig())
    utterances = [features(speak(text)) for text in OVERFIT_TEXTS]
    cmvn = CMVN.fit("global", utterances)
    frames = [cmvn(item) for item in utterances]
    lengths = torch.tensor([item.shape[0] for item in frames])
    padded = nn.utils.rnn.pad_sequence(frames, batch_first=True)  # (batch, time, feat)
    labels = torch.cat([torch.tensor(vocab.encode(text)) for text in OVERFIT_TEXTS])
    label_lengths = torch.tensor([len(text) for text in OVERFIT_TEXTS])

    model = CTCModel(ModelConfig(hidden=64, layers=2, dropout=0.0, stack=3), features.dim, len(vocab))
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    decoder = GreedyDecoder(vocab)

    def transcribe() -> list[str]:
        model.eval()
        with torch.no_grad():
            hypotheses = [t.text for t in decoder(*model(padded, lengths))]
        model.train()
        return hypotheses

    assert cer(OVERFIT_TEXTS, transcribe()) > 0.5  # untrained: nowhere near
    hypotheses, first_loss = [], None
    for step in range(1, 401):
        log_probs, out_lengths = model(padded, lengths)
        loss = ctc(log_probs.transpose(0, 1), labels, out_lengths, label_lengths)
        first_loss = first_loss if first_loss is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        if step % 20 == 0:
            hypotheses = transcribe()
            if cer(OVERFIT_TEXTS, hypotheses) == 0.0:
                break
    assert hypotheses == OVERFIT_TEXTS, f"after {step} steps (loss {float(loss):.3f} from {first_loss:.3f})"
    assert loss.item() < 0.2 * first_loss


def _outputs_and_gradients(model: CTCModel, frames, lengths, bf16: bool):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        log_probs, _ = model(frames, lengths)
    weights = torch.arange(log_probs.shape[-1], dtype=torch.float32)
    (log_probs.float().exp() * weights).sum().backward()
    return log_probs.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize(
    "bf16",
    [
        False,
        pytest.param(
            True,
            marks=pytest.mark.skipif(
                not cpu_bf16_supported(), reason="this CPU has no oneDNN bf16 recurrent kernels"
            ),
        ),
    ],
)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_concurrent_directions_equal_the_sequential_layer(monkeypatch, cell, bf16):
    """Both directions on two threads give the outputs and every parameter gradient of the plain
    sequential layer, in training (autograd through the threads) and under no_grad."""
    import recog.model as model_module

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = CTCModel(ModelConfig(cell=cell, hidden=16, layers=3, dropout=0.0, stack=3), 6, 9)
    frames, lengths = padded_batch([60, 45, 31, 12], 6)
    assert model_module.concurrent_directions(frames)
    pairs = []
    run_pair = model_module._run_pair
    monkeypatch.setattr(model_module, "_run_pair", lambda *a, **k: pairs.append(1) or run_pair(*a, **k))
    results = {}
    for concurrent in (False, True):
        monkeypatch.setattr(model_module, "CONCURRENT_DIRECTIONS", concurrent)
        pairs.clear()
        outputs, grads = _outputs_and_gradients(model, frames, lengths, bf16)
        with torch.no_grad():
            inference, _ = model(frames, lengths)
        results[concurrent] = outputs, grads, inference
        # 3 layers: forward and backward pass in training, forward under no_grad
        assert len(pairs) == (9 if concurrent else 0)
    (seq_out, seq_grads, seq_inf), (con_out, con_grads, con_inf) = results[False], results[True]
    assert seq_grads[0].abs().sum() > 0 and all(g.abs().sum() > 0 for g in con_grads)
    torch.testing.assert_close(con_out, seq_out, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(con_inf, seq_inf, atol=1e-5, rtol=1e-4)
    for concurrent_grad, sequential_grad in zip(con_grads, seq_grads, strict=True):
        # bf16 products summed in another order (one thread instead of two) round differently
        scale = float(sequential_grad.abs().max()) * (1e-2 if bf16 else 1e-5)
        torch.testing.assert_close(concurrent_grad, sequential_grad, atol=scale, rtol=1e-2 if bf16 else 1e-4)
    assert torch.get_num_threads() == 2  # the caller's thread count is restored


def test_concurrent_directions_pass_gradients_to_the_inputs():
    torch.set_num_threads(2)
    torch.manual_seed(1)
    layer = BidirectionalLayer("lstm", 4, 5)
    frames, lengths = padded_batch([7, 5], 4)
    frames = frames.clamp(-3, 3).requires_grad_()
    valid = (torch.arange(7).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1)  # (batch, time, 1)
    (layer(frames, lengths) * valid).pow(2).sum().backward()
    concurrent_grad = frames.grad.clone()
    frames.grad = None
    forward_out, _ = layer.forward_rnn(frames)
    backward_out, _ = layer.backward_rnn(reverse_within_length(frames, lengths))
    outputs = torch.cat([forward_out, reverse_within_length(backward_out, lengths)], dim=-1)
    (outputs * valid).pow(2).sum().backward()
    torch.testing.assert_close(concurrent_grad, frames.grad)
    assert frames.grad[1, 5:].abs().sum() == 0  # padding gets no gradient


def test_direction_pool_is_made_again_in_a_forked_child(monkeypatch):
    """A forked child (transcription workers) inherits the pool object but not its threads: reusing it
    would hang, so the pool is keyed by process id."""
    import recog.model as model_module

    parent_pool = model_module._direction_pool()
    assert model_module._direction_pool() is parent_pool
    monkeypatch.setattr(model_module.os, "getpid", lambda: -1)
    child_pool = model_module._direction_pool()
    assert child_pool is not parent_pool
    assert child_pool.submit(lambda: 7).result(timeout=10) == 7


def test_dropout_drops_at_its_rate_keeps_the_expectation_and_is_off_in_eval():
    from recog.model import Dropout

    torch.manual_seed(0)
    dropout = Dropout(0.15).train()
    ones = torch.ones(400, 1000, requires_grad=True)
    out = dropout(ones)
    dropped = (out == 0).float().mean().item()
    assert abs(dropped - 38 / 256) < 0.003  # 0.15 rounded to 38/256
    assert abs(out.mean().item() - 1.0) < 0.005
    assert torch.unique(out).tolist() == pytest.approx([0.0, 256 / 218])
    out.sum().backward()
    assert torch.equal(ones.grad, out.detach())  # gradient: the same mask and scale
    columns = (out == 0).float().mean(dim=0)  # independent per element, not one mask per row
    assert columns.std() > 0.005
    bf16 = dropout(torch.ones(1000, 100, dtype=torch.bfloat16))
    assert bf16.dtype == torch.bfloat16 and abs((bf16 == 0).float().mean().item() - 0.148) < 0.01
    assert torch.equal(dropout.eval()(ones), ones)
    assert torch.equal(Dropout(0.0).train()(ones), ones)
    with pytest.raises(ValueError, match="model.dropout"):
        Dropout(1.0)
