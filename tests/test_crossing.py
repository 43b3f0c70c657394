import pytest
import torch

from textvae import data
from textvae.crossing import crossing_loss, crossings, line_index, same_shape_pairs
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
    assert pairs == {(2, 0), (4, 1)}  # row 3 has no partner left; rows 5 and 6 have none of their shape
    assert all(ids[j].tolist() < ids[i].tolist() for i, j in pairs)  # b comes first: one way to cross each pair
    twins, _ = pad_batch([_poem(4, 5, 100)] * 2)
    assert same_shape_pairs(twins, SEPARATORS)[0].numel() == 0  # a poem is not crossed with itself


@pytest.mark.parametrize("switched", [0, 1, 2, 3, 4])
def test_a_crossing_takes_b_s_first_lines_and_a_s_others(switched):
    ids, _ = pad_batch([_poem(4, 5, 100), _poem(4, 5, 300)])
    mixed = crossings(ids[:1], ids[1:], torch.tensor([switched]), SEPARATORS)[0]
    lines = line_index(ids[:1], SEPARATORS)[0]
    assert torch.equal(mixed[lines < switched], ids[1][lines < switched])
    assert torch.equal(mixed[lines >= switched], ids[0][lines >= switched])


def test_the_loss_is_the_crossing_s_nll_plus_its_distance_from_its_point_on_the_path():
    texts = ["春山秋水，夏月冬花。風雲雨鳥，花月山水。", "秋月春花，冬山夏水。雨鳥風雲，水山月花。", "山水，花月。"]
    dataset, tokenizer = data.build([dict(text=t) for t in texts * 4], kind="char", vocab_size=300)
    torch.manual_seed(0)
    model = TextVAE(VAEConfig.from_dict(dict(embed_dim=16, encoder_hidden=16, decoder_hidden=32, latent_dim=4,
                                             max_len=40, segment_marks="，。")), tokenizer).eval()
    separators = tuple(tokenizer.piece_to_id(mark) for mark in "，。")
    ids, mask = pad_batch(tokenizer.encode_batch(texts))
    q = model.encode(ids, mask)
    torch.manual_seed(1)
    loss = crossing_loss(model, q, ids, separators, torch.Generator().manual_seed(7))
    # by hand: B is the text whose ids come first; m is drawn from 1..3 of the 4 lines
    m = 1 + int(torch.rand(1, generator=torch.Generator().manual_seed(7)) * 3)
    first = 0 if ids[0].tolist() < ids[1].tolist() else 1
    text_a, text_b = texts[1 - first], texts[first]
    lines_a, lines_b = text_a.replace("。", "，").split("，")[:4], text_b.replace("。", "，").split("，")[:4]
    mixed_lines = lines_b[:m] + lines_a[m:]
    mixed_text = "".join(line + "，。"[i % 2] for i, line in enumerate(mixed_lines))
    mixed_ids, mixed_mask = pad_batch(tokenizer.encode_batch([mixed_text]))
    q_mixed = model.encode(mixed_ids, mixed_mask)
    target = (1 - m / 4) * q.mean[1 - first] + m / 4 * q.mean[first]
    distance = 0.5 * (((q_mixed.mean - target) / q_mixed.stddev) ** 2).sum()
    torch.manual_seed(1)
    nll = model.reconstruction_nll(q_mixed.rsample(), mixed_ids)
    assert torch.allclose(loss, (nll + distance).squeeze(), rtol=1e-5)
    assert crossing_loss(model, model.encode(ids[2:], mask[2:]), ids[2:], separators) is None  # no pair
