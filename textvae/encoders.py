"""
Sentence encoders: token ids -> one fixed-size vector per sentence, which a posterior head turns into q(z|x).

Shapes: B batch, T tokens, E embedding size, H hidden size. Every encoder takes `ids` (B, T) LongTensor and
`mask` (B, T) bool (True = real token, padding on the right), returns (B, output_dim), and ignores masked
positions entirely, so appending padding never changes the result. Each row needs at least one real token.
Each encoder class names the dataclass of its own knobs in `settings` (GCNNSettings for the GCNN's kernel
width); `build_encoder` makes one from its kind, the knobs every encoder shares and its settings.

References: Bowman et al. 2016 (recurrent encoder of a text VAE); Dauphin et al. 2017, "Language Modeling
with Gated Convolutional Networks" (GLU convolutions).
"""

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from textvae.fields import NoSettings, check_int, setting

# -----------------------------------------------------------------------------
# Bidirectional GRU or LSTM


def banded_slot_logits(max_len, slots, width=4):
    """Initial (max_len, slots) logits that give token t mostly to the slot nearest t / width (the last slot
    takes the rest): each slot starts on its own stretch of the text, so the slots' gradients differ from step one."""
    centre = torch.arange(max_len)[:, None].clamp(max=width * (slots - 1)) / width  # (max_len, 1)
    return -2.0 * (centre - torch.arange(slots)[None, :]).abs()  # (max_len, slots)


class SlotPooling(nn.Module):
    """
    Pooling by place: token t's state, projected to `dim`, is shared out among `slots` by a learned softmax
    over a table indexed by t, and each slot sums what it receives -> (B, slots * dim). Unlike a last state,
    which must carry the whole text through one recurrence, each place keeps a direct path to z; the
    decoder's SlotReader reads z back by place the same way.
    """

    def __init__(self, input_dim, dim, slots, max_len):
        super().__init__()
        self.proj = nn.Linear(input_dim, dim)
        self.logits = nn.Parameter(banded_slot_logits(max_len, slots))
        self.output_dim = slots * dim

    def forward(self, states, mask):
        T = states.size(1)
        share = torch.softmax(self.logits[:T], dim=-1) * mask[:, :, None]  # (B, T, slots): 0 on padding
        pooled = torch.einsum("bts,btd->bsd", share.to(states.dtype), self.proj(states))  # (B, slots, dim)
        return pooled.flatten(1)  # (B, slots * dim)


class GRUEncoder(nn.Module):
    """Bidirectional GRU; the sentence vector is the top layer's last forward and last backward state, and,
    with `slots`, the slot-pooled states of every token (SlotPooling) after them."""

    cell = nn.GRU
    settings = NoSettings

    def __init__(self, vocab_size, embed_dim=256, hidden_dim=256, num_layers=1, dropout=0.0, pad_id=0,
                 slots=0, max_len=128):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.drop = nn.Dropout(dropout)
        # nn.GRU and nn.LSTM apply their own dropout between stacked layers only, and warn if asked to with one
        self.rnn = self.cell(embed_dim, hidden_dim, num_layers, batch_first=True, bidirectional=True,
                             dropout=dropout if num_layers > 1 else 0.0)
        self.pool = SlotPooling(2 * hidden_dim, hidden_dim // 4, slots, max_len) if slots else None
        self.output_dim = 2 * hidden_dim + (self.pool.output_dim if slots else 0)

    def forward(self, ids, mask):
        x = self.drop(self.embed(ids))  # (B, T, E)
        # packing makes the backward direction start at each row's last real token instead of at the
        # padding; the lengths must live on the CPU
        lengths = mask.sum(dim=1).cpu()  # (B,)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        states, h = self.rnn(packed)  # h (num_layers * 2, B, H), already back in the input's row order
        h = self.hidden_of(h)
        last = torch.cat([h[-2], h[-1]], dim=-1)  # (B, 2H): top layer, forward then backward
        if self.pool is None:
            return last
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=ids.size(1))  # (B, T, 2H)
        return torch.cat([last, self.pool(states, mask)], dim=-1)  # (B, 2H + slots * H / 4)

    @staticmethod
    def hidden_of(final):
        return final


class LSTMEncoder(GRUEncoder):
    """Bidirectional LSTM; the sentence vector is the top layer's last forward and last backward hidden
    state (not the cell state)."""

    cell = nn.LSTM

    @staticmethod
    def hidden_of(final):
        return final[0]  # final is (h, c)

# -----------------------------------------------------------------------------
# Gated convolutions


def masked_mean_max(x, mask):
    """Mean and max over the real positions of x (B, H, T), concatenated -> (B, 2H)."""
    m = mask[:, None, :]  # (B, 1, T)
    mean = x.masked_fill(~m, 0.0).sum(dim=2) / m.sum(dim=2)  # (B, H)
    max_ = x.masked_fill(~m, float("-inf")).amax(dim=2)  # (B, H)
    return torch.cat([mean, max_], dim=1)


class GatedConvLayer(nn.Module):
    """One residual GLU convolution: x + a * sigmoid(b), where a and b are the two halves of one conv."""

    def __init__(self, hidden_dim, kernel_size, dropout):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.conv = nn.Conv1d(hidden_dim, 2 * hidden_dim, kernel_size, padding="same")

    def forward(self, x, mask):
        # zeroing the padding before the conv makes a padded position look exactly like the conv's own
        # zero padding past the end of the sentence, so a real position sees the same input however
        # much padding follows it
        h = self.drop(x.masked_fill(~mask[:, None, :], 0.0))  # (B, H, T)
        return x + F.glu(self.conv(h), dim=1)  # (B, H, T)


@dataclass(frozen=True)
class GCNNSettings:
    kernel_size: int = setting(3, "GCNN convolution width")

    def __post_init__(self):
        check_int(self, "kernel_size", 1, 64)


class GCNNEncoder(nn.Module):
    """Gated convolutions (Dauphin et al. 2017) over the projected embeddings, then mean- and max-pooling."""

    settings = GCNNSettings

    def __init__(self, vocab_size, embed_dim=256, hidden_dim=256, num_layers=4, kernel_size=3, dropout=0.0,
                 pad_id=0):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(embed_dim, hidden_dim)
        self.layers = nn.ModuleList(GatedConvLayer(hidden_dim, kernel_size, dropout) for _ in range(num_layers))
        self.output_dim = 2 * hidden_dim

    def forward(self, ids, mask):
        x = self.proj(self.drop(self.embed(ids)))  # (B, T, H)
        x = x.transpose(1, 2)  # (B, H, T): Conv1d wants channels first
        for layer in self.layers:
            x = layer(x, mask)
        return masked_mean_max(x, mask)  # (B, 2H)

# -----------------------------------------------------------------------------

ENCODERS = {"gru": GRUEncoder, "lstm": LSTMEncoder, "gcnn": GCNNEncoder}
RECURRENT = ("gru", "lstm")  # the encoders that can write z by place (slots)


def build_encoder(kind, settings, vocab_size, *, embed_dim, hidden_dim, num_layers, dropout, pad_id, slots,
                  max_len):
    """The encoder `kind` with its own `settings`; a recurrent one also pools into `slots` places."""
    by_place = dict(slots=slots, max_len=max_len) if kind in RECURRENT else {}
    return ENCODERS[kind](vocab_size, embed_dim=embed_dim, hidden_dim=hidden_dim, num_layers=num_layers,
                          dropout=dropout, pad_id=pad_id, **by_place, **dataclasses.asdict(settings))
