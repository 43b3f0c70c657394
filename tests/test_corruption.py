import pytest
import torch

from textvae.corruption import Corruption, corrupt, text_positions
from textvae.data import pad_batch
from textvae.errors import TextVAEError
from textvae.tokenizer import BOS_ID, EOS_ID, PAD_ID
from textvae.train import TrainConfig
from textvae.vae import TextVAE, VAEConfig


def _batch(rows=64, low=5, high=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high, (rows,), generator=g)
    return pad_batch([torch.randint(10, 500, (int(n),), generator=g).tolist() for n in lengths])


def _texts(ids, mask):
    return [row[1:int(m.sum()) - 1].tolist() for row, m in zip(ids, mask)]


def test_text_positions_leave_bos_eos_and_padding():
    ids, mask = pad_batch([[7, 8, 9], [5]])
    assert text_positions(mask).tolist() == [[False, True, True, True, False], [False, True, False, False, False]]


def test_off_is_the_identity():
    ids, mask = _batch()
    new_ids, new_mask = corrupt(ids, mask, Corruption(), torch.Generator().manual_seed(0))
    assert torch.equal(new_ids, ids) and torch.equal(new_mask, mask)


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.6])
def test_drop_deletes_that_share_and_keeps_the_order(rate):
    ids, mask = _batch(rows=400)
    new_ids, new_mask = corrupt(ids, mask, Corruption(drop=rate), torch.Generator().manual_seed(1))
    before, after = _texts(ids, mask), _texts(new_ids, new_mask)
    total = sum(map(len, before))
    assert sum(map(len, after)) / total == pytest.approx(1 - rate, abs=4 * (rate * (1 - rate) / total) ** 0.5)
    for old, new in zip(before, after):  # a subsequence: deletion only
        it = iter(old)
        assert all(token in it for token in new)
    assert (new_ids[:, 0] == BOS_ID).all()
    lengths = new_mask.sum(dim=1)
    assert (new_ids[torch.arange(len(lengths)), lengths - 1] == EOS_ID).all()
    assert (new_ids[~new_mask] == PAD_ID).all()


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_substitution_replaces_that_share_with_batch_tokens(rate):
    ids, mask = _batch(rows=400)
    new_ids, new_mask = corrupt(ids, mask, Corruption(substitute=rate), torch.Generator().manual_seed(2))
    assert torch.equal(new_mask, mask)
    text = text_positions(mask)
    changed = (new_ids != ids) & text
    # a draw from the batch can return the same token: the changed share is rate x (1 - the chance of a repeat)
    counts = torch.bincount(ids[text]).double()
    repeat = float(((counts / counts.sum()) ** 2).sum())
    assert changed.sum() / text.sum() == pytest.approx(rate * (1 - repeat), abs=0.02)
    assert set(new_ids[changed].tolist()) <= set(ids[text].tolist())
    assert torch.equal(new_ids[~text], ids[~text])


def test_shuffle_is_local_and_keeps_the_tokens():
    ids, mask = _batch(rows=300)
    new_ids, new_mask = corrupt(ids, mask, Corruption(shuffle=0.5), torch.Generator().manual_seed(3))
    assert torch.equal(new_mask, mask)
    moved, places = 0, 0
    for old, new in zip(_texts(ids, mask), _texts(new_ids, new_mask)):
        assert sorted(old) == sorted(new)
        moved += sum(x != y for x, y in zip(old, new))
        places += len(old)
        if len(set(old)) == len(old):  # each token lands within two places of where it was
            assert all(abs(new.index(token) - i) <= 2 for i, token in enumerate(old))
    assert 0.3 < moved / places < 0.9
    assert torch.equal(new_ids[~text_positions(mask)], ids[~text_positions(mask)])  # BOS, EOS, padding stay


def test_seeded_draws_repeat_and_the_input_is_untouched():
    ids, mask = _batch()
    kept = ids.clone()
    corruption = Corruption(drop=0.2, substitute=0.1, shuffle=0.1)
    first = corrupt(ids, mask, corruption, torch.Generator().manual_seed(5))
    second = corrupt(ids, mask, corruption, torch.Generator().manual_seed(5))
    third = corrupt(ids, mask, corruption, torch.Generator().manual_seed(6))
    assert all(torch.equal(x, y) for x, y in zip(first, second))
    assert not torch.equal(first[0], third[0])
    assert torch.equal(ids, kept)


@pytest.mark.parametrize("name, value", [("corrupt_drop", 1.0), ("corrupt_substitute", -0.1),
                                         ("corrupt_shuffle", 1.5), ("corrupt_drop", float("nan"))])
def test_rates_outside_zero_one_are_refused(name, value):
    with pytest.raises(TextVAEError, match=name):
        TrainConfig(**{name: value})


def test_the_encoder_reads_the_corrupted_copy_and_the_decoder_writes_the_clean_text():
    torch.manual_seed(0)
    model = TextVAE(VAEConfig(vocab_size=500, embed_dim=16, encoder_hidden=16, decoder_hidden=32, latent_dim=4,
                              max_len=64)).eval()
    ids, mask = _batch(rows=8)
    damaged = corrupt(ids, mask, Corruption(drop=0.3, substitute=0.2), torch.Generator().manual_seed(0))
    out = model(ids, mask, sample=False, encoder_input=damaged)
    z = model.encode(*damaged).mode
    assert torch.allclose(out.z, z) and not torch.allclose(out.z, model.encode(ids, mask).mode)
    assert torch.allclose(out.rec, model.reconstruction_nll(z, ids))

