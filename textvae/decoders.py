"""
Autoregressive decoders p(x|z): a latent z and teacher-forced inputs -> next-token logits.

Shapes: B batch, T tokens, V vocab, E embedding size, H hidden size, C transformer width, D latent size,
L layers.
`forward(z, ids) -> logits (B, T, V)`, where ids (B, T) are the decoder inputs (BOS + tokens, padding on
the right) and logits[:, t] predicts token t + 1; `features(z, ids) -> (B, T, H or C)` stops before the
output layer `lm_head`, whose `nll(features, targets)` scores targets without all V logits where it
can. z is (B, D), or None when latent_dim == 0 (the plain language-model baseline). Generation runs one token at a time: `init_state(z, batch_size)`, then
`step(ids_t, state) -> (logits (B, V), state)`, which is `advance(ids_t, state) -> (features (B, H or C),
state)` followed by `output(features) -> logits`: a caller that already knows the next token (a forced
position of a poem form) skips the output layer, the largest matrix product of a step.
`reorder_state(state, index)` picks batch rows for beam search.

References: Bowman et al. 2016 (z initialises the RNN and joins every input; word dropout);
Radford et al. 2019, GPT-2 (pre-LN causal transformer); Li et al. 2020, Optimus (z as a memory vector that
every position attends to, and added to the embeddings; here the memory is one prefix token run through
the blocks rather than a separate key/value projection per layer); Press & Wolf 2017 (tied output layer);
Grave et al. 2017 (adaptive softmax); He et al. 2019 (an LSTM decoder whose initial cell state is W z + b).
"""

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from textvae.encoders import banded_slot_logits
from textvae.errors import TextVAEError
from textvae.fields import NoSettings, check_int, setting

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
# Output layers: features (..., H) -> next-token distribution over V. `forward` gives logits whose softmax is
# the model's distribution (log-probabilities for the adaptive layer); `nll(features, targets)` gives the
# per-token NLL in fp32 without building all V logits where the layer can avoid it (the caller masks
# padding).


class FullSoftmax(nn.Linear):
    """One linear map to all V logits (a subclass of nn.Linear, so saved models keep their keys)."""

    settings = NoSettings

    # `nll` builds the logits of at most this many rows at once. IW-NLL decodes hundreds of rows a pass; with
    # whole (N, V) blocks whose N changed from batch to batch, the heap kept by textvae.malloc fragmented
    # (6.6 GB resident on the PTB test split with V = 10,002, 1.9 GB in equal blocks, at the same speed).
    NLL_ROWS = 2048

    def nll(self, features, targets):
        flat, goal = features.reshape(-1, features.size(-1)), targets.reshape(-1)  # (N, H), (N,)
        parts = [token_nll(self(rows), goal_rows)
                 for rows, goal_rows in zip(flat.split(self.NLL_ROWS), goal.split(self.NLL_ROWS))]
        return torch.cat(parts).view(targets.shape)


@dataclass(frozen=True)
class AdaptiveSettings:
    adaptive_cutoffs: tuple = setting((1000, 3000), "band edges; ids below the first are scored by the head")
    adaptive_div: int = setting(4, "band i's tail projects H down to H / adaptive_div ** (i + 1)")

    def __post_init__(self):
        cuts = self.adaptive_cutoffs
        if isinstance(cuts, list):  # JSON gives a list
            object.__setattr__(self, "adaptive_cutoffs", cuts := tuple(cuts))
        if not isinstance(cuts, tuple) or not cuts or any(type(c) is not int for c in cuts) \
                or list(cuts) != sorted(set(cuts)) or cuts[0] < 1:
            raise TextVAEError(f"AdaptiveSettings.adaptive_cutoffs must be increasing positive integers, not {cuts!r}")
        check_int(self, "adaptive_div", 1, 1024)


class AdaptiveSoftmax(nn.Module):
    """
    Adaptive softmax (Grave et al. 2017). Tokens below cutoffs[0] (the frequent ones: SentencePiece ids are
    sorted by frequency) get a head logit each; each later band [cutoffs[i-1], cutoffs[i]) of rarer tokens
    gets one head logit for the band and a tail: a projection to H / div^i and a softmax within the band.
    p(token) = p_head(band) * p_tail(token | band), so the distribution is exact and normalised; training
    computes a tail only for the rows whose target falls in its band.
    """

    settings = AdaptiveSettings

    def __init__(self, hidden_dim, vocab_size, cutoffs=(1000, 3000), div_value=4):
        super().__init__()
        self.bounds = [*cutoffs, vocab_size]  # band i covers [bounds[i], bounds[i+1])
        self.shortlist = cutoffs[0]
        self.register_buffer("cutoffs", torch.tensor(cutoffs), persistent=False)  # for bucketize, on the device
        self.head = nn.Linear(hidden_dim, self.shortlist + len(cutoffs))
        self.tails = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden_dim, hidden_dim // div_value ** (i + 1), bias=False),
                          nn.Linear(hidden_dim // div_value ** (i + 1), hi - lo, bias=False))
            for i, (lo, hi) in enumerate(zip(self.bounds, self.bounds[1:])))

    def forward(self, features):
        """Log-probabilities (..., V) in fp32 over the whole vocabulary."""
        head = F.log_softmax(self.head(features).float(), dim=-1)  # (..., shortlist + bands)
        parts = [head[..., :self.shortlist]]
        for i, tail in enumerate(self.tails):
            parts.append(head[..., self.shortlist + i, None] + F.log_softmax(tail(features).float(), dim=-1))
        return torch.cat(parts, dim=-1)

    def nll(self, features, targets):
        """-log p(targets) (...) in fp32; each tail runs only on the rows it is needed for."""
        flat, goal = features.reshape(-1, features.size(-1)), targets.reshape(-1)  # (N, H), (N,)
        head = F.log_softmax(self.head(flat).float(), dim=-1)  # (N, shortlist + bands)
        band = torch.bucketize(goal, self.cutoffs, right=True)  # (N,) 0: head, i: band i
        column = torch.where(band == 0, goal, self.shortlist + band - 1)
        logp = head.gather(1, column[:, None])[:, 0]  # (N,)
        for i, tail in enumerate(self.tails):
            rows = (band == i + 1).nonzero()[:, 0]
            if rows.numel():
                within = F.log_softmax(tail(flat[rows]).float(), dim=-1)  # (n, band size)
                logp = logp.index_add(0, rows, within.gather(1, (goal[rows] - self.bounds[i])[:, None])[:, 0])
        return -logp.view(targets.shape)


def token_nll(logits, targets):
    """Per-token NLL (...) in fp32 from logits (..., V): softmax statistics stay fp32 under bf16 autocast,
    which would otherwise run log_softmax in bf16 on the CPU."""
    nll = F.cross_entropy(logits.float().flatten(0, -2), targets.flatten(), reduction="none")
    return nll.view(targets.shape)


# the output layers by name; "tied" is the full softmax sharing the decoder's input embedding
OUTPUT_LAYERS = {"full": FullSoftmax, "adaptive": AdaptiveSoftmax, "tied": FullSoftmax}


def output_layer(kind, hidden_dim, vocab_size, cutoffs, div_value, embed=None, bias=True):
    """The output layer `kind`; "tied" is the full softmax whose weight is the input embedding `embed`
    (Press & Wolf 2017), so hidden_dim must equal the embedding size. `bias` is the full softmax's."""
    if kind == "adaptive":
        return AdaptiveSoftmax(hidden_dim, vocab_size, cutoffs, div_value)
    head = FullSoftmax(hidden_dim, vocab_size, bias=bias)
    if kind == "tied":
        head.weight = embed.weight
    return head

# -----------------------------------------------------------------------------
# GRU decoder


class SegmentPlace(NamedTuple):
    """Where the latest input of each row stands (SegmentPositions), in generation."""
    segment: torch.Tensor  # (B,) the index of its segment
    position: torch.Tensor  # (B,) its position within the segment

    def select(self, index) -> "SegmentPlace":
        return SegmentPlace(self.segment[index], self.position[index])


class SegmentPositions(nn.Module):
    """
    Where each input token stands in a text made of segments (a poem's lines) that end in separator tokens:
    embeddings of the segment's index and of the position within it, added to the token embedding, so the
    decoder need not count characters to know where a line (and its rhyme position) ends. The first input
    (BOS) is position 0 of segment 0; a separator starts the next segment at position 0. Indices past the
    tables' ends share the last row. Generation carries the SegmentPlace of the latest input; `advance` gives
    that of the next one.
    """

    def __init__(self, separators, dim, max_segments=16, max_position=32):
        super().__init__()
        self.register_buffer("separators", torch.tensor(list(separators), dtype=torch.long), persistent=False)
        self.segment = nn.Embedding(max_segments, dim)
        self.position = nn.Embedding(max_position, dim)

    def indices(self, ids):
        """(segment, position), each (B, T), of the teacher-forced inputs ids (B, T)."""
        T = ids.size(1)
        is_separator = torch.isin(ids, self.separators)  # (B, T)
        t = torch.arange(T, device=ids.device).expand_as(ids)
        segment_start = torch.where(is_separator, t, 0).cummax(dim=1).values  # (B, T): the latest separator
        return is_separator.cumsum(dim=1), t - segment_start

    def embed(self, segment, position):
        return self.segment(segment.clamp(max=self.segment.num_embeddings - 1)) + \
            self.position(position.clamp(max=self.position.num_embeddings - 1))

    def forward(self, ids):
        return self.embed(*self.indices(ids))  # (B, T, dim)

    def start(self, batch_size, device) -> SegmentPlace:
        """The place before the first input, so that BOS, not a separator, comes out at (0, 0)."""
        zeros = torch.zeros(batch_size, dtype=torch.long, device=device)
        return SegmentPlace(zeros, zeros - 1)

    def advance(self, ids_t, where: SegmentPlace) -> SegmentPlace:
        """The place of input ids_t (B,), given that of the input before it."""
        is_separator = torch.isin(ids_t, self.separators)
        return SegmentPlace(where.segment + is_separator.long(), torch.where(is_separator, 0, where.position + 1))


class SlotReader(nn.Module):
    """
    z read back by place: z is mapped to `slots` vectors of size `dim` once, and input t gets their mix under
    a learned softmax over a table indexed by t (the counterpart of the encoder's SlotPooling). The recurrent
    decoder adds it to the input embedding, so each place sees its own linear read of z instead of having to
    work out from its hidden state which part of z matters now.
    """

    def __init__(self, latent_dim, dim, slots, max_len):
        super().__init__()
        self.to_slots = nn.Linear(latent_dim, slots * dim)
        self.logits = nn.Parameter(banded_slot_logits(max_len, slots))  # (max_len, slots)

    def values(self, z):
        return self.to_slots(z).view(z.size(0), self.logits.size(1), -1)  # (B, slots, dim)

    def read(self, values, start, length):
        """The reads (B, length, dim) of inputs start .. start + length - 1, from values(z)."""
        share = torch.softmax(self.logits[start:start + length], dim=-1)  # (length, slots)
        return torch.einsum("ts,bsd->btd", share.to(values.dtype), values)


class RecurrentState(NamedTuple):
    """The GRU and LSTM decoders' generation state after t inputs."""
    h: torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # (L, B, H); the LSTM's pair (h, c), each (L, B, H)
    z: torch.Tensor | None  # (B, D), joined to every input; None without a latent
    where: SegmentPlace | None  # the latest input's place, None without segment marks
    t: int  # the next input's index
    slots: torch.Tensor | None  # (B, slots, E) the SlotReader's values of z, None without slots


@dataclass(frozen=True)
class RecurrentSettings:
    segment_marks: str = setting("", "tokens that end a segment, e.g. a poem's line-end marks ，。: the decoder is "
                                     "told each input's segment and place in it (\"\" = off)")

    def __post_init__(self):
        if not isinstance(self.segment_marks, str) or len(self.segment_marks) > 16:
            raise TextVAEError(f"RecurrentSettings.segment_marks must be a string of at most 16 characters, not "
                               f"{self.segment_marks!r}")


class GRUDecoder(nn.Module):
    """
    GRU language model conditioned on z twice: tanh(W z) is the initial hidden state of every layer and z
    is concatenated to every input embedding. With `separators`, segment positions (SegmentPositions) are
    added to the input embeddings. The generation state is a RecurrentState; z rides along in it because each
    step's input needs it. With `slots`, each input embedding also gets its place's read of z (SlotReader).
    """

    cell = nn.GRU
    settings = RecurrentSettings

    def __init__(self, vocab_size, embed_dim=256, hidden_dim=512, latent_dim=32, num_layers=1, dropout=0.0,
                 word_dropout=0.0, pad_id=0, unk_id=1, output="full", cutoffs=(1000, 3000), div_value=4,
                 separators=None, slots=0, max_len=128):
        super().__init__()
        self.positions = SegmentPositions(separators, embed_dim) if separators is not None else None
        self.reader = SlotReader(latent_dim, embed_dim, slots, max_len) if slots and latent_dim else None
        self.latent_dim = latent_dim
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.word_dropout = word_dropout
        self.pad_id = pad_id
        self.unk_id = unk_id
        self.embed = nn.Embedding(vocab_size, embed_dim)
        if output == "tied":  # N(0, 1) rows would make the shared output layer's first logits huge
            nn.init.uniform_(self.embed.weight, -0.1, 0.1)
        self.drop = nn.Dropout(dropout)
        self.z_to_hidden = nn.Linear(latent_dim, num_layers * hidden_dim) if latent_dim > 0 else None
        self.rnn = self.cell(embed_dim + latent_dim, hidden_dim, num_layers, batch_first=True,
                             dropout=dropout if num_layers > 1 else 0.0)
        self.lm_head = output_layer(output, hidden_dim, vocab_size, cutoffs, div_value, self.embed)

    def _inputs(self, z, ids, where=None, reads=None):
        """Embeddings of ids (B, T), plus their segment positions `where` and slot reads of z `reads` (each
        (B, T, E) or None), with z appended to each -> (B, T, E + D)."""
        x = self.embed(ids)  # (B, T, E)
        for extra in (where, reads):
            x = x if extra is None else x + extra
        x = self.drop(x)  # z is left undropped, it is noisy enough already
        if z is not None:
            x = torch.cat([x, z[:, None, :].expand(-1, ids.size(1), -1)], dim=-1)  # (B, T, E + D)
        return x

    def features(self, z, ids):
        """The output layer's inputs (B, T, H) for teacher-forced ids (B, T)."""
        where = self.positions(ids) if self.positions is not None else None  # of the true ids: a dropped
        if self.training:                                                     # word keeps its place
            ids = word_dropout(ids, self.word_dropout, self.unk_id, self.pad_id)
        state = self.init_state(z, ids.size(0))
        reads = self.reader.read(state.slots, 0, ids.size(1)) if self.reader is not None else None
        out, _ = self.rnn(self._inputs(z, ids, where, reads), state.h)  # (B, T, H)
        return self.drop(out)

    def forward(self, z, ids):
        return self.lm_head(self.features(z, ids))  # (B, T, V)

    def init_state(self, z, batch_size) -> RecurrentState:
        assert (z is None) == (self.latent_dim == 0), "z must be given exactly when latent_dim > 0"
        assert z is None or z.size(0) == batch_size
        device = self.embed.weight.device
        where = self.positions.start(batch_size, device) if self.positions is not None else None
        slots = self.reader.values(z) if self.reader is not None else None
        return RecurrentState(self.initial_hidden(z, batch_size), z, where, 0, slots)

    def _from_z(self, z, batch_size):
        """W z + b (L, B, H), or zeros without a latent."""
        if z is None:
            return self.embed.weight.new_zeros(self.num_layers, batch_size, self.hidden_dim)
        wz = self.z_to_hidden(z)  # (B, L * H)
        return wz.view(batch_size, self.num_layers, self.hidden_dim).transpose(0, 1).contiguous()  # (L, B, H)

    def initial_hidden(self, z, batch_size):
        return torch.tanh(self._from_z(z, batch_size))  # (L, B, H)

    @staticmethod
    def select_hidden(h, index):
        return h[:, index]

    def advance(self, ids_t, state: RecurrentState) -> tuple[torch.Tensor, RecurrentState]:
        where = self.positions.advance(ids_t, state.where) if state.where is not None else None
        position = self.positions.embed(*where)[:, None] if where is not None else None  # (B, 1, E)
        reads = self.reader.read(state.slots, state.t, 1) if state.slots is not None else None  # (B, 1, E)
        out, h = self.rnn(self._inputs(state.z, ids_t[:, None], position, reads), state.h)  # (B, 1, H)
        return out[:, 0], state._replace(h=h, where=where, t=state.t + 1)

    def output_features(self, features):
        """What the output layer reads of advance's features (B, H)."""
        return self.drop(features)

    def output(self, features):
        return self.lm_head(self.output_features(features))  # (B, V)

    def step(self, ids_t, state: RecurrentState) -> tuple[torch.Tensor, RecurrentState]:
        features, state = self.advance(ids_t, state)
        return self.output(features), state

    def reorder_state(self, state: RecurrentState, index) -> RecurrentState:
        z, where, slots = state.z, state.where, state.slots
        return state._replace(h=self.select_hidden(state.h, index), z=None if z is None else z[index],
                              where=None if where is None else where.select(index),
                              slots=None if slots is None else slots[index])



class LSTMDecoder(GRUDecoder):
    """
    The GRU decoder with an LSTM cell, as in the published PTB sentence VAEs (He et al. 2019; Li et al.
    2019): W z + b is the initial cell state of every layer and its tanh the initial hidden state (zeros
    for both without a latent), and z joins every input. RecurrentState.h is the pair (h, c), each (L, B, H).
    """

    cell = nn.LSTM

    def initial_hidden(self, z, batch_size):
        c = self._from_z(z, batch_size)  # (L, B, H)
        return torch.tanh(c), c

    @staticmethod
    def select_hidden(h, index):
        return tuple(part[:, index] for part in h)

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


class TransformerState(NamedTuple):
    """The Transformer decoder's generation state: the keys and values of the S positions so far."""
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer (k, v), each (B, heads, S, C / heads); prefix included
    pos: int  # the next input's position
    z_emb: torch.Tensor | None  # (B, C) projected z, added to each new embedding; None without a latent


@dataclass(frozen=True)
class TransformerSettings:
    num_heads: int = setting(4, "attention heads")

    def __post_init__(self):
        check_int(self, "num_heads", 1, 256)


class TransformerDecoder(nn.Module):
    """
    Pre-LN causal transformer with learned positions. z enters twice: as a prefix token placed before the
    inputs (a memory slot every position attends to, in every layer) and added to every input embedding.
    With latent_dim == 0 neither happens and this is a plain language model. The output layer is tied to
    the token embedding. The generation state is a TransformerState.
    """

    settings = TransformerSettings

    def __init__(self, vocab_size, d_model=256, num_layers=4, num_heads=4, latent_dim=32, max_len=128,
                 dropout=0.0, word_dropout=0.0, pad_id=0, unk_id=1, output="full", cutoffs=(1000, 3000),
                 div_value=4):
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
        # the Transformer's full output layer is always tied (and has no bias): tying saves V * C parameters,
        # most of a small model's, and tends to help perplexity
        self.lm_head = output_layer("tied" if output == "full" else output, d_model, vocab_size, cutoffs,
                                    div_value, self.embed, bias=False)
        self.apply(self._init_weights)

    def _init_weights(self, module):
        # PyTorch's N(0, 1) embedding init would give huge initial logits through the tied output layer
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def features(self, z, ids):
        """The output layer's inputs (B, T, C) for teacher-forced ids (B, T)."""
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
        return self.ln_f(x[:, -T:])  # (B, T, C): the prefix predicts nothing

    def forward(self, z, ids):
        return self.lm_head(self.features(z, ids))  # (B, T, V)

    def init_state(self, z, batch_size) -> TransformerState:
        assert (z is None) == (self.latent_dim == 0), "z must be given exactly when latent_dim > 0"
        if z is None:
            head_dim = self.embed.embedding_dim // self.num_heads
            empty = self.embed.weight.new_zeros(batch_size, self.num_heads, 0, head_dim)
            return TransformerState([(empty, empty)] * len(self.blocks), 0, None)
        assert z.size(0) == batch_size
        # run the prefix through the blocks once; its keys and values are all later steps need of it
        x = self.drop(self.z_to_prefix(z)[:, None, :])  # (B, 1, C)
        kv = []
        for block in self.blocks:
            x, layer_kv = block(x)
            kv.append(layer_kv)
        return TransformerState(kv, 0, self.z_to_embed(z))

    def advance(self, ids_t, state: TransformerState) -> tuple[torch.Tensor, TransformerState]:
        pos = state.pos
        if pos >= self.max_len:
            raise ValueError(f"cannot decode past max_len = {self.max_len}")
        x = self.embed(ids_t) + self.pos_embed.weight[pos]  # (B, C)
        if state.z_emb is not None:
            x = x + state.z_emb
        x = self.drop(x[:, None, :])  # (B, 1, C)
        kv = []
        for block, past in zip(self.blocks, state.kv):
            x, layer_kv = block(x, past)
            kv.append(layer_kv)
        return x[:, 0], state._replace(kv=kv, pos=pos + 1)

    def output_features(self, features):
        """What the output layer reads of advance's features (B, C)."""
        return self.ln_f(features)

    def output(self, features):
        return self.lm_head(self.output_features(features))  # (B, V)

    def step(self, ids_t, state: TransformerState) -> tuple[torch.Tensor, TransformerState]:
        features, state = self.advance(ids_t, state)
        return self.output(features), state

    def reorder_state(self, state: TransformerState, index) -> TransformerState:
        return state._replace(kv=[(k[index], v[index]) for k, v in state.kv],
                              z_emb=None if state.z_emb is None else state.z_emb[index])

# -----------------------------------------------------------------------------

DECODERS = {"gru": GRUDecoder, "lstm": LSTMDecoder, "transformer": TransformerDecoder}
RECURRENT = ("gru", "lstm")  # the decoders that read z by place (slots) and know a poem's lines


def build_decoder(kind, settings, output, output_settings, vocab_size, *, embed_dim, hidden_dim, latent_dim,
                  num_layers, dropout, word_dropout, pad_id, unk_id, separators, slots, max_len):
    """The decoder `kind` with its own `settings` and the output layer `output` with its settings.
    `separators` are the token ids of the recurrent settings' segment marks (None: off)."""
    common = dict(latent_dim=latent_dim, num_layers=num_layers, dropout=dropout, word_dropout=word_dropout,
                  pad_id=pad_id, unk_id=unk_id, output=output, max_len=max_len)
    if isinstance(output_settings, AdaptiveSettings):
        common |= dict(cutoffs=output_settings.adaptive_cutoffs, div_value=output_settings.adaptive_div)
    if kind in RECURRENT:
        return DECODERS[kind](vocab_size, embed_dim=embed_dim, hidden_dim=hidden_dim, separators=separators,
                              slots=slots, **common)
    return DECODERS[kind](vocab_size, d_model=hidden_dim, **dataclasses.asdict(settings), **common)
