import pytest
import torch

from textvae.encoders import ENCODERS, GCNNEncoder, GRUEncoder, LSTMEncoder

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
