import pytest
import torch

from textvae import data
from textvae.crossing import crossing_nll, crossings, line_index, same_shape_pairs
from textvae.data import pad_batch
from textvae.vae import TextVAE, VAEConfig

COMMA, STOP = 90, 91
SEPARATORS = (COMMA, STOP)


def _poem(lines, width, start):
    return [token for i in range(lines) for token in [*range(start + i * width, start + (i + 1) * width),
                                                      COMMA if i % 2 == 0 else STOP]]


def test_line_index_counts_the_marks_before_each_token():
    ids, _ = pad_batch([[10, 11, COMMA, 12, 13, STOP]])
    assert line_index(ids, SEPARATORS).tolist() == [[0, 0, 0, 0, 1, 1, 1, 2]]  # BOS, two lines, EOS


def test_pairs_join_only_rows_of_the_same_shape_and_never_reuse_one():
    rows = [_poem(4, 5, 100), _poem(4, 7, 200), _poem(4, 5, 300), _poem(4, 5, 400), _poem(4, 7, 500),
            [10, 11, 12, COMMA, 13, 14, STOP, 15], _poem(2, 5, 600)]
    ids, _ = pad_batch(rows)
    a, b = same_shape_pairs(ids, SEPARATORS)
    pairs = set(zip(a.tolist(), b.tolist()))
    assert pairs == {(0, 2), (1, 4)}  # row 3 has no partner left; rows 5 and 6 have none of their shape


@pytest.mark.parametrize("t, switched", [(0.0, 0), (0.1, 0), (0.3, 1), (0.5, 2), (0.7, 3), (1.0, 4)])
def test_a_crossing_takes_round_t_l_lines_from_b(t, switched):
    ids, _ = pad_batch([_poem(4, 5, 100), _poem(4, 5, 300)])
    mixed = crossings(ids[:1], ids[1:], torch.tensor([t]), SEPARATORS)[0]
    lines = line_index(ids[:1], SEPARATORS)[0]
    assert torch.equal(mixed[lines < switched], ids[1][lines < switched])
    assert torch.equal(mixed[lines >= switched], ids[0][lines >= switched])


def test_the_loss_is_the_nll_of_the_crossing_at_the_mixed_code():
    texts = ["春山秋水，夏月冬花。風雲雨鳥，花月山水。", "秋月春花，冬山夏水。雨鳥風雲，水山月花。", "山水，花月。"]
    dataset, tokenizer = data.build([dict(text=t) for t in texts * 4], kind="char", vocab_size=300)
    torch.manual_seed(0)
    model = TextVAE(VAEConfig(embed_dim=16, encoder_hidden=16, decoder_hidden=32, latent_dim=4, max_len=40,
                              segment_marks="，。"), tokenizer).eval()
    separators = tuple(tokenizer.piece_to_id(mark) for mark in "，。")
    ids, _ = pad_batch(tokenizer.encode_batch(texts))
    z = torch.randn(3, 4)
    loss = crossing_nll(model, z, ids, separators, torch.Generator().manual_seed(7))
    t = torch.rand(1, generator=torch.Generator().manual_seed(7))
    target = crossings(ids[:1], ids[1:2], t, separators)
    expected = model.reconstruction_nll((1 - t) * z[:1] + t * z[1:2], target).mean()
    assert torch.allclose(loss, expected)
    assert crossing_nll(model, z[2:], ids[2:], separators) is None  # no pair in a one-poem batch
