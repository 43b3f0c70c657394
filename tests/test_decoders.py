import pytest
import torch

from textvae.decoders import (DECODERS, GRUDecoder, LSTMDecoder, SegmentPositions, SlotReader, TransformerDecoder,
                              word_dropout)

V, PAD, UNK, BOS = 20, 0, 1, 2
TINY = {
    GRUDecoder: {"embed_dim": 12, "hidden_dim": 16, "num_layers": 2},
    LSTMDecoder: {"embed_dim": 12, "hidden_dim": 16, "num_layers": 2},
    TransformerDecoder: {"d_model": 16, "num_layers": 2, "num_heads": 2, "max_len": 16},
}
CLASSES = [GRUDecoder, LSTMDecoder, TransformerDecoder]
both = pytest.mark.parametrize("cls", CLASSES)
latents = pytest.mark.parametrize("latent_dim", [0, 8])


def make(cls, latent_dim, **kwargs):
    torch.manual_seed(0)
    return cls(V, latent_dim=latent_dim, pad_id=PAD, unk_id=UNK, **TINY[cls], **kwargs).eval()


def inputs(B=3, T=6, latent_dim=8):
    """BOS + random tokens -> z (B, D) or None, ids (B, T)."""
    ids = torch.randint(3, V, (B, T))
    ids[:, 0] = BOS
    z = torch.randn(B, latent_dim) if latent_dim > 0 else None
    return z, ids


def decode_stepwise(dec, z, ids):
    """Logits from init_state + one step per input token -> (B, T, V)."""
    state = dec.init_state(z, ids.size(0))
    logits = []
    for t in range(ids.size(1)):
        logits_t, state = dec.step(ids[:, t], state)
        logits.append(logits_t)
    return torch.stack(logits, dim=1), state


def test_registry():
    assert DECODERS == {"gru": GRUDecoder, "lstm": LSTMDecoder, "transformer": TransformerDecoder}


@both
@latents
def test_output_shape(cls, latent_dim):
    dec = make(cls, latent_dim)
    z, ids = inputs(latent_dim=latent_dim)
    assert dec(z, ids).shape == (3, 6, V)


@both
@latents
def test_causality(cls, latent_dim):
    dec = make(cls, latent_dim)
    z, ids = inputs(latent_dim=latent_dim)
    logits = dec(z, ids)
    for t in range(ids.size(1) - 1):
        changed = ids.clone()
        changed[:, t + 1] = torch.where(ids[:, t + 1] == 3, 4, 3)
        logits_changed = dec(z, changed)
        torch.testing.assert_close(logits_changed[:, :t + 1], logits[:, :t + 1], atol=1e-6, rtol=0)
        assert (logits_changed[:, t + 1] - logits[:, t + 1]).abs().max() > 1e-5


@both
@latents
def test_stepwise_decoding_matches_forward(cls, latent_dim):
    dec = make(cls, latent_dim)
    z, ids = inputs(latent_dim=latent_dim)
    stepwise, _ = decode_stepwise(dec, z, ids)
    torch.testing.assert_close(stepwise, dec(z, ids), atol=1e-5, rtol=0)


@both
def test_z_influences_every_position(cls):
    dec = make(cls, latent_dim=8)
    z, ids = inputs()
    diff = (dec(z, ids) - dec(torch.randn_like(z), ids)).abs().amax(dim=(0, 2))  # (T,)
    assert (diff > 1e-4).all()


@both
def test_gradient_reaches_z(cls):
    dec = make(cls, latent_dim=8)
    z, ids = inputs()
    z.requires_grad_(True)
    logits = dec(z, ids)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
    loss.backward()
    assert z.grad is not None and (z.grad.abs().sum(dim=1) > 0).all()


def test_word_dropout_rate_and_what_it_spares():
    torch.manual_seed(0)
    ids = torch.randint(3, V, (400, 50))
    ids[:, 0] = BOS
    ids[:, 40:] = PAD
    dropped = word_dropout(ids, 0.3, UNK, PAD)
    changed = dropped != ids
    assert (dropped[changed] == UNK).all()
    assert not changed[:, 0].any() and not changed[:, 40:].any()
    assert abs(changed[:, 1:40].float().mean().item() - 0.3) < 0.02
    assert word_dropout(ids, 0.0, UNK, PAD) is ids


@both
@latents
def test_word_dropout_applies_in_training_only(cls, latent_dim):
    # with p = 1 every eligible token becomes unk, so training mode must equal eval on the all-unk inputs
    dec = make(cls, latent_dim, word_dropout=1.0)
    z, ids = inputs(latent_dim=latent_dim)
    ids[:, 4:] = PAD
    all_unk = ids.clone()
    all_unk[:, 1:4] = UNK
    reference = dec(z, all_unk)
    with torch.no_grad():
        dec.train()
        trained = dec(z, ids)
        dec.eval()
    torch.testing.assert_close(trained, reference)
    dec.word_dropout = 0.0
    untouched = dec(z, ids)
    dec.word_dropout = 1.0
    torch.testing.assert_close(dec(z, ids), untouched)


@both
@latents
def test_reorder_state_selects_rows(cls, latent_dim):
    dec = make(cls, latent_dim)
    z, ids = inputs(latent_dim=latent_dim)
    index = torch.tensor([2, 0, 2, 1])  # a beam step: rows may repeat and drop out
    _, state = decode_stepwise(dec, z, ids[:, :4])
    logits, _ = dec.step(ids[index, 4], dec.reorder_state(state, index))
    _, reference_state = decode_stepwise(dec, None if z is None else z[index], ids[index, :4])
    reference, _ = dec.step(ids[index, 4], reference_state)
    torch.testing.assert_close(logits, reference, atol=1e-6, rtol=0)


def test_lstm_starts_from_cell_w_z_and_hidden_its_tanh():
    # He et al. 2019's decoder: c0 = W z + b, h0 = tanh(c0) in every layer; zeros without a latent
    dec = make(LSTMDecoder, latent_dim=8)
    z, _ = inputs()
    h, c = dec.init_state(z, 3).h
    W, b = dec.z_to_hidden.weight, dec.z_to_hidden.bias  # (L * H, D), (L * H,)
    for layer in range(2):
        rows = slice(layer * 16, (layer + 1) * 16)
        expected = z @ W[rows].T + b[rows]  # (B, H)
        torch.testing.assert_close(c[layer], expected)
        torch.testing.assert_close(h[layer], torch.tanh(expected))
    h, c = make(LSTMDecoder, latent_dim=0).init_state(None, 3).h
    assert h.shape == c.shape == (2, 3, 16) and not h.any() and not c.any()


def test_transformer_refuses_inputs_past_max_len():
    dec = make(TransformerDecoder, latent_dim=0)
    with pytest.raises(ValueError):
        dec(None, torch.full((1, 17), BOS))

# --- segment positions (a poem's line and place in it) -------------------------------------------------------

SEPARATORS = (3, 4)


def brute_force_positions(ids: list[int]) -> list[tuple[int, int]]:
    """(segment, position) of each input by walking it: a separator opens the next segment at position 0."""
    out, segment, position = [], 0, -1
    for token in ids:
        segment, position = (segment + 1, 0) if token in SEPARATORS else (segment, position + 1)
        out.append((segment, position))
    return out


def test_segment_positions_match_a_walk_through_the_tokens():
    torch.manual_seed(0)
    positions = SegmentPositions(SEPARATORS, dim=4)
    _, ids = inputs(B=5, T=24)
    segment, position = positions.indices(ids)
    for row in range(5):
        assert list(zip(segment[row].tolist(), position[row].tolist())) == brute_force_positions(ids[row].tolist())


@pytest.mark.parametrize("cls", [GRUDecoder, LSTMDecoder])
@latents
def test_rnn_with_segment_positions_decodes_stepwise_as_forward_and_uses_them(cls, latent_dim):
    dec = make(cls, latent_dim, separators=SEPARATORS)
    z, ids = inputs(T=12, latent_dim=latent_dim)
    stepwise, state = decode_stepwise(dec, z, ids)
    torch.testing.assert_close(stepwise, dec(z, ids), atol=1e-5, rtol=0)
    index = torch.tensor([2, 0])
    reordered = dec.reorder_state(state, index)
    assert torch.equal(reordered.where.segment, state.where.segment[index])
    with torch.no_grad():
        dec.positions.position.weight.add_(1.0)  # the features feed the output: moving them moves it
    assert (dec(z, ids) - stepwise).abs().max() > 1e-4

# --- slot reads of z (latent_slots) ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [GRUDecoder, LSTMDecoder])
def test_rnn_with_slot_reads_decodes_stepwise_as_forward_and_reorders(cls):
    dec = make(cls, 8, separators=SEPARATORS, slots=3, max_len=16)
    z, ids = inputs(T=12)
    stepwise, state = decode_stepwise(dec, z, ids)
    torch.testing.assert_close(stepwise, dec(z, ids), atol=1e-5, rtol=0)
    index = torch.tensor([2, 0, 2])
    logits, _ = dec.step(ids[index, 0], dec.reorder_state(state, index))
    _, reference_state = decode_stepwise(dec, z[index], ids[index])
    reference, _ = dec.step(ids[index, 0], reference_state)
    torch.testing.assert_close(logits, reference, atol=1e-6, rtol=0)


def test_slot_reads_mix_the_slots_of_z_by_place():
    # brute force: input t reads sum_r softmax(logits[t])[r] * (W z + b)[r]
    torch.manual_seed(0)
    reader = SlotReader(latent_dim=5, dim=4, slots=3, max_len=10)
    z = torch.randn(2, 5)
    values = (z @ reader.to_slots.weight.T + reader.to_slots.bias).view(2, 3, 4)
    reads = reader.read(reader.values(z), start=2, length=5)  # inputs 2 .. 6
    for t in range(5):
        share = torch.softmax(reader.logits[2 + t], dim=0)  # (slots,)
        torch.testing.assert_close(reads[:, t], (share[None, :, None] * values).sum(dim=1))


def test_slot_reads_reach_the_output():
    dec = make(GRUDecoder, 8, slots=3, max_len=16)
    z, ids = inputs(T=10)
    before = dec(z, ids)
    with torch.no_grad():
        dec.reader.to_slots.bias.add_(1.0)
    assert (dec(z, ids) - before)[:, 1:].abs().amax(dim=-1).min() > 1e-4  # every place moved
