"""
Autoregressive decoders p(x|z): a latent z and teacher-forced inputs -> next-token logits.

Shapes: B batch, T tokens, V vocab, E embedding size, H hidden size, C transformer width, D latent size,
L layers.
`forward(z, ids) -> logits (B, T, V)`, where ids (B, T) are the decoder inputs (BOS + tokens, padding on
the right) and logits[:, t] predicts token t + 1. z is (B, D), or None when latent_dim == 0 (the plain
language-model baseline). Generation runs one token at a time: `init_state(z, batch_size)`, then
`step(ids_t, state) -> (logits (B, V), state)`, which is `advance(ids_t, state) -> (features (B, H or C),
state)` followed by `output(features) -> logits`: a caller that already knows the next token (a forced
position of a poem form) skips the output layer, the largest matrix product of a step.
`reorder_state(state, index)` picks batch rows for beam search.

References: Bowman et al. 2016 (z initialises the RNN and joins every input; word dropout);
Radford et al. 2019, GPT-2 (pre-LN causal transformer); Li et al. 2020, Optimus (z as a memory vector that
every position attends to, and added to the embeddings; here the memory is one prefix token run through
the blocks rather than a separate key/value projection per layer); Press & Wolf 2017 (tied output layer).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

# -----------------------------------------------------------------------------
# Word dropout


def word_dropout(ids, p, unk_id, pad_id):
    """
    Replace each input token by unk_id with probability p (Bowman et al. 2016), except the first
    token (BOS, so the decoder always knows where a sentence starts) and padding. A weaker view of the
    history pushes the decoder to rely on z.
    """
    if p == 0.0:
        return ids
    drop = torch.rand(ids.shape, device=ids.device) < p  # (B, T)
    drop[:, 0] = False
    drop &= ids != pad_id
    return ids.masked_fill(drop, unk_id)

# -----------------------------------------------------------------------------
# GRU decoder


class GRUDecoder(nn.Module):
    """
    GRU language model conditioned on z twice: tanh(W z) is the initial hidden state of every layer and z
    is concatenated to every input embedding. The generation state is a dict {"h": (L, B, H), "z": (B, D)
    or None}; z rides along because each step's input needs it.
    """

    def __init__(self, vocab_size, embed_dim=256, hidden_dim=512, latent_dim=32, num_layers=1, dropout=0.0,
                 word_dropout=0.0, pad_id=0, unk_id=1):
        super().__init__()
        self.latent_dim = latent_dim
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.word_dropout = word_dropout
        self.pad_id = pad_id
        self.unk_id = unk_id
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.drop = nn.Dropout(dropout)
        self.z_to_hidden = nn.Linear(latent_dim, num_layers * hidden_dim) if latent_dim > 0 else None
        self.rnn = nn.GRU(embed_dim + latent_dim, hidden_dim, num_layers, batch_first=True,
                          dropout=dropout if num_layers > 1 else 0.0)
        self.lm_head = nn.Linear(hidden_dim, vocab_size)

    def _inputs(self, z, ids):
        """Embeddings of ids (B, T) with z appended to each -> (B, T, E + D)."""
        x = self.drop(self.embed(ids))  # (B, T, E); z is left undropped, it is noisy enough already
        if z is not None:
            x = torch.cat([x, z[:, None, :].expand(-1, ids.size(1), -1)], dim=-1)  # (B, T, E + D)
        return x

    def forward(self, z, ids):
        if self.training:
            ids = word_dropout(ids, self.word_dropout, self.unk_id, self.pad_id)
        h0 = self.init_state(z, ids.size(0))["h"]
        out, _ = self.rnn(self._inputs(z, ids), h0)  # (B, T, H)
        return self.lm_head(self.drop(out))  # (B, T, V)

    def init_state(self, z, batch_size):
        assert (z is None) == (self.latent_dim == 0), "z must be given exactly when latent_dim > 0"
        if z is None:
            h = self.lm_head.weight.new_zeros(self.num_layers, batch_size, self.hidden_dim)
        else:
            assert z.size(0) == batch_size
            h = torch.tanh(self.z_to_hidden(z))  # (B, L * H)
            h = h.view(batch_size, self.num_layers, self.hidden_dim).transpose(0, 1).contiguous()  # (L, B, H)
        return {"h": h, "z": z}

    def advance(self, ids_t, state):
        out, h = self.rnn(self._inputs(state["z"], ids_t[:, None]), state["h"])  # (B, 1, H), (L, B, H)
        return out[:, 0], {"h": h, "z": state["z"]}

    def output(self, features):
        return self.lm_head(self.drop(features))  # (B, V)

    def step(self, ids_t, state):
        features, state = self.advance(ids_t, state)
        return self.output(features), state

    def reorder_state(self, state, index):
        z = state["z"]
        return {"h": state["h"][:, index], "z": None if z is None else z[index]}

# -----------------------------------------------------------------------------
# Transformer decoder


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention that can extend a cache of earlier keys and values."""

    def __init__(self, d_model, num_heads, dropout):
        super().__init__()
        assert d_model % num_heads == 0
        self.num_heads = num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, past=None):
        """
        x (B, T, C) -> (y (B, T, C), (k, v)), with k and v (B, heads, S + T, C / heads) to cache. Without
        past, x is a whole causal sequence; with past (k, v) of S earlier positions, x is one new position
        (T == 1), which may attend to everything cached.
        """
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.num_heads, C // self.num_heads).transpose(1, 2) for t in (q, k, v))
        if past is not None:
            assert T == 1, "cached attention takes one position at a time"
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        # is_causal would mask from the top-left corner, hiding the cache from a single new query
        y = F.scaled_dot_product_attention(q, k, v, is_causal=past is None,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.drop(self.proj(y)), (k, v)


class MLP(nn.Module):

    def __init__(self, d_model, dropout):
        super().__init__()
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.proj = nn.Linear(4 * d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LN transformer block; returns the new keys and values alongside its output."""

    def __init__(self, d_model, num_heads, dropout):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, num_heads, dropout)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, dropout)

    def forward(self, x, past=None):
        a, kv = self.attn(self.ln_1(x), past)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, kv


class TransformerDecoder(nn.Module):
    """
    Pre-LN causal transformer with learned positions. z enters twice: as a prefix token placed before the
    inputs (a memory slot every position attends to, in every layer) and added to every input embedding.
    With latent_dim == 0 neither happens and this is a plain language model. The output layer is tied to
    the token embedding. The generation state is a dict {"kv": per-layer (k, v) of shape
    (B, heads, S, C / heads) for the S positions so far (prefix included), "pos": index of the next input
    position, "z_emb": projected z (B, C) to add to each new embedding, or None}.
    """

    def __init__(self, vocab_size, d_model=256, num_layers=4, num_heads=4, latent_dim=32, max_len=128,
                 dropout=0.0, word_dropout=0.0, pad_id=0, unk_id=1):
        super().__init__()
        self.latent_dim = latent_dim
        self.max_len = max_len
        self.num_heads = num_heads
        self.word_dropout = word_dropout
        self.pad_id = pad_id
        self.unk_id = unk_id
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos_embed = nn.Embedding(max_len, d_model)
        self.z_to_prefix = nn.Linear(latent_dim, d_model) if latent_dim > 0 else None
        self.z_to_embed = nn.Linear(latent_dim, d_model) if latent_dim > 0 else None
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, num_heads, dropout) for _ in range(num_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        # tying saves V * C parameters, most of a small model's, and tends to help perplexity
        self.lm_head.weight = self.embed.weight
        self.apply(self._init_weights)

    def _init_weights(self, module):
        # PyTorch's N(0, 1) embedding init would give huge initial logits through the tied output layer
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, z, ids):
        assert (z is None) == (self.latent_dim == 0), "z must be given exactly when latent_dim > 0"
        B, T = ids.shape
        if T > self.max_len:
            raise ValueError(f"{T} input tokens but max_len is {self.max_len}")
        if self.training:
            ids = word_dropout(ids, self.word_dropout, self.unk_id, self.pad_id)
        x = self.embed(ids) + self.pos_embed.weight[:T]  # (B, T, C)
        if z is not None:
            x = x + self.z_to_embed(z)[:, None, :]
            x = torch.cat([self.z_to_prefix(z)[:, None, :], x], dim=1)  # (B, 1 + T, C)
        x = self.drop(x)
        for block in self.blocks:
            x, _ = block(x)
        x = self.ln_f(x[:, -T:])  # (B, T, C): the prefix predicts nothing
        return self.lm_head(x)  # (B, T, V)

    def init_state(self, z, batch_size):
        assert (z is None) == (self.latent_dim == 0), "z must be given exactly when latent_dim > 0"
        if z is None:
            head_dim = self.embed.embedding_dim // self.num_heads
            empty = self.embed.weight.new_zeros(batch_size, self.num_heads, 0, head_dim)
            return {"kv": [(empty, empty)] * len(self.blocks), "pos": 0, "z_emb": None}
        assert z.size(0) == batch_size
        # run the prefix through the blocks once; its keys and values are all later steps need of it
        x = self.drop(self.z_to_prefix(z)[:, None, :])  # (B, 1, C)
        kv = []
        for block in self.blocks:
            x, layer_kv = block(x)
            kv.append(layer_kv)
        return {"kv": kv, "pos": 0, "z_emb": self.z_to_embed(z)}

    def advance(self, ids_t, state):
        pos = state["pos"]
        if pos >= self.max_len:
            raise ValueError(f"cannot decode past max_len = {self.max_len}")
        x = self.embed(ids_t) + self.pos_embed.weight[pos]  # (B, C)
        if state["z_emb"] is not None:
            x = x + state["z_emb"]
        x = self.drop(x[:, None, :])  # (B, 1, C)
        kv = []
        for block, past in zip(self.blocks, state["kv"]):
            x, layer_kv = block(x, past)
            kv.append(layer_kv)
        return x[:, 0], {"kv": kv, "pos": pos + 1, "z_emb": state["z_emb"]}

    def output(self, features):
        return self.lm_head(self.ln_f(features))  # (B, V)

    def step(self, ids_t, state):
        features, state = self.advance(ids_t, state)
        return self.output(features), state

    def reorder_state(self, state, index):
        z_emb = state["z_emb"]
        return {"kv": [(k[index], v[index]) for k, v in state["kv"]], "pos": state["pos"],
                "z_emb": None if z_emb is None else z_emb[index]}

# -----------------------------------------------------------------------------

DECODERS = {"gru": GRUDecoder, "transformer": TransformerDecoder}
