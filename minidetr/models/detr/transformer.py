"""DETR's encoder-decoder transformer (post-norm, positions added to queries and keys at every layer).

Shapes use batch-first sequences: image tokens ``[B, HW, D]``, object queries ``[B, Q, D]``.

- Encoder layer: self-attention over the image tokens, then an FFN; each followed by dropout, a residual
  and LayerNorm ("post-norm", as in DETR and the original Transformer).
- Decoder layer: self-attention between the queries (so they can agree on who predicts what), cross-
  attention from the queries to the image tokens, then an FFN.
- Positions are never part of the values: the fixed sine code is added to the image tokens' queries and
  keys, the learned query embedding to the object queries' queries and keys. The decoder starts from zeros:
  the query embedding is all that tells the Q slots apart.
- The decoder returns every layer's output (each passed through the shared final LayerNorm) stacked
  ``[L, B, Q, D]``: the heads run on all of them for the auxiliary losses.

With ``return_attention=True`` every layer also returns its attention weights averaged over the heads.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["EncoderLayer", "DecoderLayer", "Transformer"]


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, nheads: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, nheads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(dim, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.activation = nn.ReLU()

    def forward(self, src: Tensor, pos: Tensor, return_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        """``src``, ``pos``: ``[B, HW, D]`` -> ``([B, HW, D], attention [B, HW, HW] or None)``."""
        q = k = src + pos
        out, attn = self.self_attn(q, k, src, need_weights=return_attention)
        src = self.norm1(src + self.dropout(out))
        out = self.linear2(self.dropout(self.activation(self.linear1(src))))
        src = self.norm2(src + self.dropout(out))
        return src, attn


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, nheads: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, nheads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, nheads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(dim, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.activation = nn.ReLU()

    def forward(
        self, tgt: Tensor, memory: Tensor, pos: Tensor, query_pos: Tensor, return_attention: bool = False
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``tgt``, ``query_pos``: ``[B, Q, D]``; ``memory``, ``pos``: ``[B, HW, D]``.

        Returns ``([B, Q, D], self-attention [B, Q, Q], cross-attention [B, Q, HW])`` (attention None unless
        asked for).
        """
        q = k = tgt + query_pos
        out, self_attn = self.self_attn(q, k, tgt, need_weights=return_attention)
        tgt = self.norm1(tgt + self.dropout(out))
        out, cross_attn = self.cross_attn(tgt + query_pos, memory + pos, memory, need_weights=return_attention)
        tgt = self.norm2(tgt + self.dropout(out))
        out = self.linear2(self.dropout(self.activation(self.linear1(tgt))))
        tgt = self.norm3(tgt + self.dropout(out))
        return tgt, self_attn, cross_attn


class Transformer(nn.Module):
    """``enc_layers`` encoder layers and ``dec_layers`` decoder layers of width ``dim``."""

    def __init__(
        self,
        dim: int = 256,
        nheads: int = 8,
        enc_layers: int = 6,
        dec_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.encoder = nn.ModuleList(EncoderLayer(dim, nheads, dim_feedforward, dropout) for _ in range(enc_layers))
        self.decoder = nn.ModuleList(DecoderLayer(dim, nheads, dim_feedforward, dropout) for _ in range(dec_layers))
        self.decoder_norm = nn.LayerNorm(dim)  # post-norm encoder layers end normed; decoder outputs get this
        self.dim, self.nheads = dim, nheads
        for p in self.parameters():  # DETR's init: Xavier for every matrix
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(
        self, src: Tensor, pos: Tensor, query_embed: Tensor, return_attention: bool = False
    ) -> tuple[Tensor, Tensor, dict[str, list[Tensor]]]:
        """Encode the image tokens, decode the queries.

        ``src``, ``pos``: ``[B, HW, D]``; ``query_embed``: ``[Q, D]`` (learned, shared by all images).
        Returns ``(hs [L, B, Q, D], memory [B, HW, D], attention)`` where ``attention`` holds lists (one
        entry per layer) under ``"encoder"`` ``[B, HW, HW]``, ``"decoder_self"`` ``[B, Q, Q]`` and
        ``"decoder_cross"`` ``[B, Q, HW]``, or is empty without ``return_attention``.
        """
        attention: dict[str, list[Tensor]] = {"encoder": [], "decoder_self": [], "decoder_cross": []}
        memory = src
        for layer in self.encoder:
            memory, attn = layer(memory, pos, return_attention)
            attention["encoder"].append(attn)
        query_pos = query_embed[None].expand(src.shape[0], -1, -1)  # (B, Q, D)
        tgt = query_pos.new_zeros(query_pos.shape)  # decoding starts from nothing but positions
        hs = []
        for layer in self.decoder:
            tgt, self_attn, cross_attn = layer(tgt, memory, pos, query_pos, return_attention)
            hs.append(self.decoder_norm(tgt))
            attention["decoder_self"].append(self_attn)
            attention["decoder_cross"].append(cross_attn)
        if not return_attention:
            attention = {}
        return torch.stack(hs), memory, attention
