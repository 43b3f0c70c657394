import pytest
import torch

from textvae.decoders import AdaptiveSoftmax, FullSoftmax, GRUDecoder, LSTMDecoder, TransformerDecoder

H, V, CUTOFFS = 16, 40, (10, 25)


def adaptive(div_value=2):
    torch.manual_seed(0)
    return AdaptiveSoftmax(H, V, CUTOFFS, div_value)


def brute_force_log_probs(layer, x):
    """log p(v | x) for every v, one token at a time from the factorisation p(band) * p(v | band)."""
    head = torch.softmax(layer.head(x).double(), dim=-1)  # (N, shortlist + bands)
    out = torch.empty(x.size(0), V, dtype=torch.float64)
    for v in range(V):
        if v < CUTOFFS[0]:
            out[:, v] = head[:, v].log()
            continue
        band = 1 if v < CUTOFFS[1] else 2
        lo = layer.bounds[band - 1]
        tail = torch.softmax(layer.tails[band - 1](x).double(), dim=-1)
        out[:, v] = (head[:, CUTOFFS[0] + band - 1] * tail[:, v - lo]).log()
    return out


@pytest.mark.parametrize("div_value", [1, 2, 4])
def test_adaptive_distribution_is_normalised_and_matches_brute_force(div_value):
    layer = adaptive(div_value)
    x = torch.randn(7, H) * 3
    logp = layer(x)  # (7, V)
    torch.testing.assert_close(logp.double().exp().sum(dim=-1), torch.ones(7, dtype=torch.float64))
    torch.testing.assert_close(logp.double(), brute_force_log_probs(layer, x), rtol=0, atol=1e-5)


def test_adaptive_nll_equals_minus_log_prob_of_every_band():
    layer = adaptive()
    x = torch.randn(4, 9, H)
    targets = torch.randint(0, V, (4, 9))
    targets[0, :3] = torch.tensor([0, 15, 39])  # head, first and last band
    expected = -layer(x).gather(-1, targets[..., None])[..., 0]
    torch.testing.assert_close(layer.nll(x, targets), expected)


def test_adaptive_nll_gradient_matches_the_full_log_prob_gradient():
    layer = adaptive()
    x = torch.randn(12, H)
    targets = torch.arange(12) * 3 % V
    layer.nll(x, targets).sum().backward()
    sparse = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    (-layer(x).gather(-1, targets[:, None])).sum().backward()
    for a, p in zip(sparse, layer.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-5, atol=1e-6)


def test_full_nll_in_row_blocks_equals_the_whole_cross_entropy_and_its_gradient():
    torch.manual_seed(0)
    layer = FullSoftmax(H, V)
    layer.NLL_ROWS = 5
    x, targets = torch.randn(3, 7, H, requires_grad=True), torch.randint(0, V, (3, 7))  # 21 rows: 5 blocks
    blocks = layer.nll(x, targets)
    whole = torch.nn.functional.cross_entropy(layer(x).flatten(0, 1), targets.flatten(), reduction="none")
    torch.testing.assert_close(blocks, whole.view(3, 7))
    (grad_blocks,) = torch.autograd.grad(blocks.sum(), x)
    (grad_whole,) = torch.autograd.grad(whole.sum(), x)
    torch.testing.assert_close(grad_blocks, grad_whole)


def test_nll_stays_fp32_under_bf16_autocast():
    x, targets = torch.randn(5, H), torch.randint(0, V, (5,))
    for layer in (adaptive(), FullSoftmax(H, V)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert layer.nll(x, targets).dtype == torch.float32


@pytest.mark.parametrize("cls,sizes", [(GRUDecoder, dict(embed_dim=8, hidden_dim=H)),
                                       (LSTMDecoder, dict(embed_dim=8, hidden_dim=H)),
                                       (TransformerDecoder, dict(d_model=H, num_heads=2, max_len=16))])
def test_decoder_step_gives_the_adaptive_distribution_of_forward(cls, sizes):
    torch.manual_seed(0)
    dec = cls(V, latent_dim=4, output="adaptive", cutoffs=CUTOFFS, div_value=2, **sizes).eval()
    z, ids = torch.randn(2, 4), torch.randint(3, V, (2, 5))
    full = dec(z, ids)  # (B, T, V) log-probabilities
    state = dec.init_state(z, 2)
    for t in range(ids.size(1)):
        logits, state = dec.step(ids[:, t], state)
        torch.testing.assert_close(logits, full[:, t], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(full.exp().sum(-1), torch.ones(2, 5))
