import pytest
import torch

from textvae.encoders import ENCODERS, GCNNEncoder, GRUEncoder, LSTMEncoder, SlotPooling, banded_slot_logits

V, PAD = 20, 0
TINY = {"embed_dim": 12, "hidden_dim": 10, "num_layers": 2, "pad_id": PAD}


def make(cls):
    torch.manual_seed(0)
    return cls(V, **TINY).eval()


def batch(lengths, T=None):
    """Random ids with padding on the right -> ids (B, T), mask (B, T)."""
    T = T or max(lengths)
    mask = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
    ids = torch.randint(2, V, (len(lengths), T)).masked_fill(~mask, PAD)
    return ids, mask


def test_registry():
    assert ENCODERS == {"gru": GRUEncoder, "lstm": LSTMEncoder, "gcnn": GCNNEncoder}


@pytest.mark.parametrize("cls", [GRUEncoder, LSTMEncoder, GCNNEncoder])
def test_output_shape(cls):
    enc = make(cls)
    ids, mask = batch([5, 3, 1])
    assert enc.output_dim == 2 * TINY["hidden_dim"]
    assert enc(ids, mask).shape == (3, enc.output_dim)


@pytest.mark.parametrize("cls", [GRUEncoder, LSTMEncoder, GCNNEncoder])
def test_extra_padding_changes_nothing(cls):
    enc = make(cls)
    ids, mask = batch([5, 3, 1])
    more_ids = torch.cat([ids, torch.full((3, 4), PAD)], dim=1)
    more_mask = torch.cat([mask, torch.zeros(3, 4, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(enc(more_ids, more_mask), enc(ids, mask), atol=1e-6, rtol=0)


@pytest.mark.parametrize("cls", [GRUEncoder, LSTMEncoder, GCNNEncoder])
def test_masked_positions_are_ignored_whatever_they_hold(cls):
    enc = make(cls)
    ids, mask = batch([5, 3, 1])
    junk = ids.masked_scatter(~mask, torch.randint(2, V, (int((~mask).sum()),)))
    torch.testing.assert_close(enc(junk, mask), enc(ids, mask), atol=1e-6, rtol=0)


@pytest.mark.parametrize("cls", [GRUEncoder, LSTMEncoder, GCNNEncoder])
def test_batch_equals_each_sentence_alone(cls):
    enc = make(cls)
    lengths = [6, 2, 4, 1]
    ids, mask = batch(lengths)
    together = enc(ids, mask)
    for i, n in enumerate(lengths):
        alone = enc(ids[i:i + 1, :n], mask[i:i + 1, :n])
        torch.testing.assert_close(together[i:i + 1], alone, atol=1e-6, rtol=0)


@pytest.mark.parametrize("cls", [GRUEncoder, LSTMEncoder, GCNNEncoder])
@pytest.mark.parametrize("position", ["first", "last"])
def test_every_real_token_matters(cls, position):
    # guards against reading the final state at the wrong place (a classic packing bug)
    enc = make(cls)
    ids, mask = batch([5, 3])
    changed = ids.clone()
    t = 0 if position == "first" else 2
    changed[1, t] = 2 if ids[1, t] != 2 else 3
    out, out_changed = enc(ids, mask), enc(changed, mask)
    torch.testing.assert_close(out_changed[0], out[0])
    assert (out_changed[1] - out[1]).abs().max() > 1e-4

# --- slot pooling (latent_slots) ------------------------------------------------------------------------------


def make_slotted(cls, slots=3):
    torch.manual_seed(0)
    return cls(V, **TINY, slots=slots, max_len=16).eval()


@pytest.mark.parametrize("cls", [GRUEncoder, LSTMEncoder])
def test_slot_pooling_keeps_the_padding_and_batching_properties(cls):
    enc = make_slotted(cls)
    lengths = [6, 2, 4, 1]
    ids, mask = batch(lengths)
    out = enc(ids, mask)
    assert out.shape == (4, enc.output_dim) == (4, 2 * TINY["hidden_dim"] + 3 * (TINY["hidden_dim"] // 4))
    more_ids = torch.cat([ids, torch.full((4, 3), PAD)], dim=1)
    more_mask = torch.cat([mask, torch.zeros(4, 3, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(enc(more_ids, more_mask), out, atol=1e-6, rtol=0)
    for i, n in enumerate(lengths):
        torch.testing.assert_close(enc(ids[i:i + 1, :n], mask[i:i + 1, :n]), out[i:i + 1], atol=1e-6, rtol=0)


def test_slot_pooling_sums_each_place_by_its_share():
    # brute force: slot r receives softmax(logits[t])[r] of token t's projected state, summed over the tokens
    torch.manual_seed(0)
    pool = SlotPooling(input_dim=5, dim=4, slots=3, max_len=10)
    states, mask = torch.randn(2, 7, 5), torch.arange(7)[None, :] < torch.tensor([[7], [4]])
    expected = torch.zeros(2, 3, 4)
    for b in range(2):
        for t in range(int(mask[b].sum())):
            expected[b] += torch.softmax(pool.logits[t], dim=0)[:, None] * pool.proj(states[b, t])[None, :]
    torch.testing.assert_close(pool(states, mask), expected.flatten(1))


def test_banded_slot_logits_start_each_slot_on_its_own_stretch():
    logits = banded_slot_logits(max_len=20, slots=3, width=4)
    # token t's nearest slot is t / 4 (a tie goes to the lower one), and the last slot takes every t past 8
    assert logits.argmax(dim=1).tolist() == [(min(t, 8) + 1) // 4 for t in range(20)]
