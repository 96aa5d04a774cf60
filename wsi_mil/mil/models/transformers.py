"""Transformer MIL: ``transmil`` (Shao et al., NeurIPS 2021) and ``transformer_mil``.

Both put a class token in front of the tile embeddings, run transformer layers over the whole
bag and classify the class token's output; the tile tokens' outputs feed the segmentation head
(so its tile scores are contextualised, unlike the attention models' head on each tile alone).

* ``transformer_mil``: a plain pre-norm encoder (``x + MHA(LN x)``, ``x + MLP(LN x)``) with
  exact softmax attention, so its attention matrices, rollout and relevance are exact. By
  default (``positional="none"``) it has no positional information; with
  ``positional="sincos2d"`` a fixed 2-D sine-cosine embedding of each tile's grid position
  (:func:`sincos_2d`, relative to the corner of the bag's bounding box) is added to its token,
  so it sees where tiles lie relative to each other. Either way its slide prediction is
  **permutation-invariant** (the tile outputs are permutation-equivariant): a position travels
  with its tile, so reordering the tiles with their coordinates changes nothing. Padding never
  reaches the encoder (each bag runs on its real tiles).
* ``transmil``: the authors' architecture (``TransMIL.py`` of szc19990412/TransMIL): two
  Nyström-attention layers (the ``nystrom-attention`` package, as the authors use, with their
  settings: 8 heads, ``dim/2`` landmarks, 6 pseudo-inverse iterations, the depth-wise
  convolution residual) around the PPEG module, which lays the tile sequence out on a square
  (padded by repeating the first tiles) and mixes neighbours with 7/5/3 depth-wise
  convolutions. PPEG, Nyström's landmarks (means of consecutive segments of the sequence) and
  the residual convolution all depend on tile **order**, so ``transmil`` is **not**
  permutation-invariant: its prediction depends on the order of the bag (the order of the
  tiles file, row-major on the slide). Bags of a padded batch are run one at a time on their
  real tiles, as the authors' code runs batches of one, so padding never changes a prediction.

Chunked prediction is impossible for both (every tile attends to every other tile), so
``predict_chunked`` reads the whole bag once. What bounds memory instead: ``transformer_mil``
uses :func:`torch.nn.functional.scaled_dot_product_attention`, whose fused kernels never hold the
``n x n`` matrix (memory linear in the bag size) except for the last layer's class-token row,
which is ``n`` values; ``transmil``'s Nyström attention holds ``heads x n x landmarks``
matrices, also linear in ``n``. The explanation methods that need whole attention matrices
(``record=True``: rollout, relevance) are quadratic in ``n``; see :mod:`wsi_mil.explain.methods`.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from wsi_mil.mil.models.base import MILModel, MILOutput
from wsi_mil.mil.models.registry import register_model
from wsi_mil.mil.params import POSITIONAL


@dataclass
class AttentionRecord:
    """One layer's attention over the token sequence ``[cls, tiles...]`` of one bag.

    ``matrix`` ``[heads, T, T]`` is part of the autograd graph (the layer's output was computed
    from it), so the gradient of a logit with respect to it can be taken (Chefer et al.).
    ``tiles`` ``[T - 1]`` maps each token after the class token to its tile in the bag (TransMIL's
    square padding repeats tiles; otherwise it is ``0..n-1``).
    """

    matrix: torch.Tensor
    tiles: torch.Tensor


class ScaleDetachableLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` (same parameters and output) whose normalising scale can be treated as a
    constant in the backward pass: the LN-rule of Ali et al., "XAI for Transformers: Better
    Explanations through Conservative Propagation" (ICML 2022).

    Why: the gradient of ``LN(z)`` removes the component along ``z`` itself, so a first-order
    explanation through a LayerNorm gives ~0 to exactly the inputs that dominate ``z`` (in a
    trained MIL transformer, the lesion tiles the class token attends to). With the scale
    detached, the gradient is that of the affine map the forward pass applied. Set through
    :meth:`_TransformerMIL.detached_norm_scale`; never during training.
    """

    detach_scale: bool = False
    #: set by :meth:`MILModel.lrp_rules`: the same LN-rule, as part of the LRP rules
    lrp_rule: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.detach_scale or self.lrp_rule):
            return super().forward(x)
        centred = x - x.mean(-1, keepdim=True)
        scale = (centred.pow(2).mean(-1, keepdim=True) + self.eps).rsqrt().detach()
        return centred * scale * self.weight + self.bias


class _TransformerMIL(MILModel):
    """Shared output assembly: class-token logits, tile-token segmentation, class-token attention."""

    ranks_by_attention = True

    def __init__(self, in_dim: int, n_classes: int, **kwargs: Any) -> None:
        super().__init__(in_dim, n_classes, **kwargs)
        self.cls_token = nn.Parameter(torch.randn(1, 1, self.hidden_dim) * 0.02)
        self.norm = ScaleDetachableLayerNorm(self.hidden_dim)
        self.add_output_head()
        #: filled by ``forward(..., record=True)``: one :class:`AttentionRecord` per layer, for
        #: the last bag of the batch (explanations run on one bag at a time).
        self.records: list[AttentionRecord] = []

    @contextmanager
    def detached_norm_scale(self) -> Iterator[None]:
        """Every LayerNorm's scale a constant in the backward pass, inside the ``with`` block
        (see :class:`ScaleDetachableLayerNorm`); the forward values are unchanged."""
        norms = [m for m in self.modules() if isinstance(m, ScaleDetachableLayerNorm)]
        for m in norms:
            m.detach_scale = True
        try:
            yield
        finally:
            for m in norms:
                m.detach_scale = False

    def attention_scores(self, h: torch.Tensor) -> torch.Tensor:
        """Not defined: a tile's attention depends on the whole bag, not on its embedding alone
        (the transformer's ``forward`` replaces the base class's per-tile pooling)."""
        raise TypeError(f"{self.name}: attention is computed over the whole bag in forward()")

    @abstractmethod
    def encode(
        self, x: torch.Tensor, record: bool, coords: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One bag ``[n, D]`` (and its grid positions ``[n, 2]`` when the model uses them) ->
        (token outputs ``[1 + n, H]``, class-token attention ``[n]``)."""

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        coords: torch.Tensor | None = None,
        record: bool = False,
    ) -> MILOutput:
        """As :meth:`MILModel.forward`; ``record`` keeps every layer's attention matrix (of the
        last bag) in :attr:`records` for rollout and relevance."""
        coords = self.check_coords(x, coords)
        if x.dim() == 2:
            x = x.unsqueeze(0)
            mask = None if mask is None else mask.reshape(1, -1)
            coords = None if coords is None else coords.unsqueeze(0)
        b, n = x.shape[:2]
        if mask is None:
            mask = torch.ones((b, n), dtype=torch.bool, device=x.device)
        logits, tile_logits = [], x.new_zeros((b, n, self.n_classes))
        attention = x.new_zeros((b, n))
        for i in range(b):
            real = mask[i].nonzero().flatten()
            tokens, att = self.encode(
                x[i, real], record, None if coords is None else coords[i, real]
            )
            tokens = self.norm(tokens)
            logits.append(self.classify(tokens[:1].unsqueeze(0)))
            tile_logits[i, real] = self.tile_scores(tokens[1:]).to(tile_logits.dtype)
            attention[i, real] = att.to(attention.dtype)
        raw = torch.log(attention.clamp_min(1e-30)).masked_fill(~mask, 0.0)
        return MILOutput(
            torch.cat(logits), attention, raw, tile_logits, attention.unsqueeze(-1), None
        )

    @torch.no_grad()
    def predict_chunked(
        self,
        read: Callable[[int, int], torch.Tensor],
        num_tiles: int,
        chunk_size: int = 16384,
        coords: torch.Tensor | None = None,
    ) -> MILOutput:
        """The whole bag at once: self-attention cannot be split into chunks of tiles (see the
        module docstring for what bounds memory instead); ``chunk_size`` bounds the read.
        ``coords`` ``[num_tiles, 2]``: the bag's grid positions (needed when the model uses
        them)."""
        parts = [
            read(s, min(s + chunk_size, num_tiles)).float() for s in range(0, num_tiles, chunk_size)
        ]
        return self.forward(torch.cat(parts), coords=coords)


class ExactSelfAttention(nn.Module):
    """Multi-head softmax self-attention whose matrix can be recorded (and differentiated).

    Under :meth:`MILModel.lrp_rules` (``lrp_rule``) the attention is a gate (xMIL's AH-rule):
    queries and keys are detached, so the backward pass reaches the tokens through the values
    only; the fused kernel still runs (memory linear in the bag). A matrix recorded then is a
    leaf of the graph, so the LRP relevance of the attention itself can be read from its
    gradient (Chefer et al., CVPR 2021: :mod:`wsi_mil.explain.methods`).
    """

    lrp_rule: bool = False

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, record: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``x`` ``[..., T, H]`` -> (output ``[..., T, H]``, class-token row ``[..., heads,
        T]``, matrix ``[..., heads, T, T]`` or None); leading dimensions are separate sequences
        (the forward pass runs one bag at a time; a batch of one-tile bags runs at once in
        :func:`wsi_mil.explain.perturbation.keep_one`)."""
        *lead, t, dim = x.shape
        q, k, v = (
            self.qkv(x)
            .view(*lead, t, 3, self.heads, dim // self.heads)
            .movedim(-3, 0)
            .transpose(-2, -3)
        )
        if self.lrp_rule:
            q, k = q.detach(), k.detach()
        scale = 1.0 / math.sqrt(dim // self.heads)
        drop = self.dropout if self.training else 0.0
        if record:
            matrix = torch.softmax((q @ k.transpose(-1, -2)) * scale, dim=-1)
            if self.lrp_rule:
                matrix.requires_grad_(True)
            out = F.dropout(matrix, drop, self.training) @ v
            cls_row = matrix[..., 0, :]
        else:
            matrix = None
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
            cls_row = torch.softmax(
                (q[..., :1, :] @ k.transpose(-1, -2))[..., 0, :] * scale, dim=-1
            )
        return self.out(out.transpose(-2, -3).reshape(*lead, t, dim)), cls_row, matrix


class RelevanceGELU(nn.GELU):
    """``nn.GELU`` (same output, no parameters) that passes relevance unchanged under the LRP
    rules: written ``x * (gelu(x) / x)`` with the ratio held constant, its gradient x input is
    ``gelu(x)`` itself, the identity rule LRP applies to element-wise activations (the plain
    gradient, ``x gelu'(x)``, would not conserve relevance)."""

    lrp_rule: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        if not self.lrp_rule:
            return y
        ratio = torch.where(x.abs() > 1e-12, y / torch.where(x == 0, 1.0, x), 0.5)
        return x * ratio.detach()


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer: ``x + MHA(LN x)``, then ``x + MLP(LN x)``."""

    def __init__(self, dim: int, heads: int, dropout: float, mlp_ratio: int = 2) -> None:
        super().__init__()
        self.norm1, self.norm2 = ScaleDetachableLayerNorm(dim), ScaleDetachableLayerNorm(dim)
        self.attn = ExactSelfAttention(dim, heads, dropout)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim),
            RelevanceGELU(),
            nn.Dropout(dropout),
            nn.Linear(mlp_ratio * dim, dim),
        )

    def forward(
        self, x: torch.Tensor, record: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        out, cls_row, matrix = self.attn(self.norm1(x), record)
        x = x + out
        return x + self.mlp(self.norm2(x)), cls_row, matrix


def sincos_1d(pos: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """``[n]`` positions -> ``[n, dim]``: ``sin(p w_k)`` then ``cos(p w_k)``, ``w_k =
    temperature^(-k / (dim / 2))`` for ``k < dim / 2`` (Vaswani et al.; MAE's
    ``get_1d_sincos_pos_embed_from_grid``)."""
    omega = torch.arange(dim // 2, dtype=torch.float32, device=pos.device) / (dim / 2)
    angles = pos.float()[:, None] * temperature**-omega
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(coords: torch.Tensor, dim: int) -> torch.Tensor:
    """``[n, 2]`` grid positions (column, row) -> ``[n, dim]`` fixed 2-D sine-cosine embedding,
    as MAE's / ViT's ``get_2d_sincos_pos_embed``: the first half of the channels encodes the
    column, the second half the row. ``dim`` must be divisible by 4."""
    if dim % 4:
        raise ValueError(f"a 2-D sine-cosine embedding needs a width divisible by 4, got {dim}")
    return torch.cat([sincos_1d(coords[:, 0], dim // 2), sincos_1d(coords[:, 1], dim // 2)], dim=1)


@register_model("transformer_mil")
class TransformerMIL(_TransformerMIL):
    """Class token + ``layers`` exact-attention pre-norm encoder layers; permutation-invariant.

    ``positional``: ``"none"`` (no positional information) or ``"sincos2d"``: the tokens of the
    tiles get :func:`sincos_2d` of their grid positions (``coords``: level-0 px / stride, see
    :func:`wsi_mil.mil.bags.grid_coords`) added after the embedding MLP. Positions are taken
    relative to the bag's smallest column and row (of its real tiles), so shifting every tile
    by the same offset (where the tissue sits on the slide) changes nothing; moving one tile
    relative to the others does. The position travels with its tile, so the slide prediction
    stays permutation-invariant. Such a model sets :attr:`uses_coords` and refuses to run
    without ``coords``. (With ``max_train_tiles`` the origin is the sampled tiles' corner.)
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        layers: int = 2,
        heads: int = 8,
        positional: str = "none",
        **kwargs: Any,
    ) -> None:
        super().__init__(in_dim, n_classes, **kwargs)
        if positional not in POSITIONAL:
            raise ValueError(
                f"transformer_mil: positional={positional!r}, expected one of {POSITIONAL}"
            )
        if positional == "sincos2d" and self.hidden_dim % 4:
            raise ValueError(
                f"transformer_mil: positional='sincos2d' needs a width divisible "
                f"by 4, got hidden_dims[-1] = {self.hidden_dim}"
            )
        self.hparams.update(layers=int(layers), heads=int(heads), positional=positional)
        self.uses_coords = positional != "none"
        self.layers = nn.ModuleList(
            EncoderLayer(self.hidden_dim, int(heads), self.hparams["dropout"])
            for _ in range(int(layers))
        )

    def position(self, coords: torch.Tensor) -> torch.Tensor:
        """``[n, 2]`` grid positions -> ``[n, H]`` embedding, relative to the bag's corner."""
        return sincos_2d(coords - coords.min(dim=0).values, self.hidden_dim)

    def encode(
        self, x: torch.Tensor, record: bool, coords: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.embed(x)
        if self.uses_coords:
            assert coords is not None  # forward's check_coords refuses a bag without them
            h = h + self.position(coords).to(h.dtype)
        tokens = torch.cat([self.cls_token[0].to(x.dtype), h])
        if record:
            self.records = []
        cls_row = tokens.new_ones((1, 1))
        tiles = torch.arange(x.shape[0], device=x.device)
        for layer in self.layers:
            tokens, cls_row, matrix = layer(tokens, record)
            if record:
                self.records.append(AttentionRecord(matrix, tiles))
        return tokens, tile_share(cls_row.mean(0))


def tile_share(row: torch.Tensor) -> torch.Tensor:
    """A class-token attention row ``[1 + n]`` -> the tiles' shares, renormalised to sum to 1
    (the class token's attention to itself is no tile's)."""
    tiles = row[1:].clamp_min(0)
    total = tiles.sum()
    return torch.where(
        total > 0, tiles / total.clamp_min(1e-30), torch.full_like(tiles, 1.0 / tiles.numel())
    )


class PPEG(nn.Module):
    """TransMIL's Pyramid Position Encoding Generator: 7x7, 5x5 and 3x3 depth-wise convolutions
    (plus identity) over the tile tokens laid out on a ``side x side`` square."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, 7, 1, 3, groups=dim)
        self.proj1 = nn.Conv2d(dim, dim, 5, 1, 2, groups=dim)
        self.proj2 = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, side: int) -> torch.Tensor:
        """``x`` ``[1 + side^2, H]`` (class token first), or ``[B, 1 + side^2, H]``: bags of
        the same size at once (one-tile bags in :func:`wsi_mil.explain.perturbation.keep_one`)."""
        batch = x if x.dim() == 3 else x.unsqueeze(0)
        cls, feat = batch[:, :1], batch[:, 1:]
        grid = feat.transpose(1, 2).reshape(len(batch), -1, side, side)
        grid = self.proj(grid) + grid + self.proj1(grid) + self.proj2(grid)
        out = torch.cat([cls, grid.flatten(2).transpose(1, 2)], dim=1)
        return out if x.dim() == 3 else out[0]


class NystromLayer(nn.Module):
    """TransMIL's ``TransLayer``: ``x + NystromAttention(LN x)`` with the authors' settings.

    ``record=True`` recomputes the same attention with the package's own projections and
    pseudo-inverse, but materialises the ``T x T`` Nyström matrix ``softmax(Q L_k) pinv(softmax(
    L_q L_k)) softmax(L_q K)`` and computes the output from it, so that the matrix is in the
    autograd graph (the package only returns it detached from the output); the output equals the
    package's (tested). It is the approximation the model uses, not an exact softmax: rows need
    not sum to 1 and entries can be slightly negative.

    Under :meth:`MILModel.lrp_rules` the Nyström attention is a gate, as in xMIL's
    ``Attention.xforward``: its three softmax factors and the pseudo-inverse are computed from
    detached queries and keys, and the output is ``factors @ V`` plus the depth-wise residual
    convolution of ``V`` (which mixes neighbouring tokens: relevance flows through it); without
    ``record`` the factors are multiplied right to left, never forming the ``T x T`` matrix.
    """

    lrp_rule: bool = False

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        from wsi_mil.extras import require_extra

        require_extra("transmil", "the transmil model")
        from nystrom_attention import NystromAttention

        self.norm = ScaleDetachableLayerNorm(dim)
        self.attn = NystromAttention(
            dim=dim,
            dim_head=dim // 8,
            heads=8,
            num_landmarks=dim // 2,
            pinv_iterations=6,
            residual=True,
            dropout=dropout,
        )

    def forward(
        self, x: torch.Tensor, record: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``x`` ``[T, H]``, or ``[B, T, H]``: bags of the same size at once (not with
        ``record`` or the LRP rules, which explain one bag)."""
        batched = x.dim() == 3
        y = self.norm(x) if batched else self.norm(x).unsqueeze(0)
        if record or self.lrp_rule:
            out, cls_row, matrix = self._explicit(y, record)
            return x + out, cls_row, matrix
        # the class token's row from the factors: n x landmarks, never n x n
        out, (attn1, attn2_inv, attn3) = self.attn(y, return_attn_matrices=True)
        pad = attn1.shape[2] - x.shape[-2]
        cls_row = (attn1[:, :, pad : pad + 1] @ attn2_inv @ attn3)[:, :, 0, pad:]
        return (x + out, cls_row, None) if batched else (x + out[0], cls_row[0], None)

    def _explicit(
        self, x: torch.Tensor, materialise: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The package's attention recomputed from its own projections and pseudo-inverse:
        (output ``[n, H]``, class-token row ``[heads, n]``, the ``[heads, n, n]`` matrix when
        ``materialise``, else None). Queries and keys are detached under the LRP rules."""
        from nystrom_attention.nystrom_attention import moore_penrose_iter_pinv

        a = self.attn
        n, m = x.shape[1], a.num_landmarks
        pad = (m - n % m) % m
        x = F.pad(x, (0, 0, pad, 0))
        q, k, v = a.to_qkv(x).chunk(3, dim=-1)
        q, k, v = (t.reshape(1, t.shape[1], a.heads, -1).transpose(1, 2) for t in (q, k, v))
        if self.lrp_rule:
            q, k = q.detach(), k.detach()
        q = q * a.scale
        segment = math.ceil(n / m)
        q_l = q.reshape(1, a.heads, m, segment, -1).sum(3) / segment
        k_l = k.reshape(1, a.heads, m, segment, -1).sum(3) / segment
        attn1 = torch.softmax(q @ k_l.transpose(-1, -2), dim=-1)
        attn2 = torch.softmax(q_l @ k_l.transpose(-1, -2), dim=-1)
        attn3 = torch.softmax(q_l @ k.transpose(-1, -2), dim=-1)
        inverse = moore_penrose_iter_pinv(attn2, a.pinv_iterations)
        # the front padding's values are 0 (to_qkv has no bias): only the real tokens' block
        # of the matrix reaches the output, so it is the block used
        residual = a.res_conv(v)[0, :, pad:]
        if materialise:
            matrix = (attn1 @ inverse @ attn3)[0, :, pad:, pad:]
            if self.lrp_rule:
                matrix.requires_grad_(True)
            out, cls_row = matrix @ v[0, :, pad:] + residual, matrix[:, 0]
        else:
            left, right = attn1[0, :, pad:], attn3[0, :, :, pad:]
            out = left @ (inverse[0] @ (right @ v[0, :, pad:])) + residual
            cls_row, matrix = (left[:, :1] @ inverse[0] @ right)[:, 0], None
        return a.to_out(out.transpose(0, 1).reshape(n, -1)), cls_row, matrix


@register_model("transmil")
class TransMIL(_TransformerMIL):
    """TransMIL: class token, Nyström layer, PPEG on the square-padded bag, Nyström layer.

    Not permutation-invariant (PPEG and Nyström's landmarks follow the tile order). The square
    padding repeats the first tiles; a repeated tile's attention is added to its original's.
    """

    def __init__(self, in_dim: int, n_classes: int, **kwargs: Any) -> None:
        super().__init__(in_dim, n_classes, **kwargs)
        if self.hidden_dim % 8:
            raise ValueError(f"transmil needs a width divisible by 8, got {self.hidden_dim}")
        self.layer1 = NystromLayer(self.hidden_dim, self.hparams["dropout"])
        self.ppeg = PPEG(self.hidden_dim)
        self.layer2 = NystromLayer(self.hidden_dim, self.hparams["dropout"])

    @staticmethod
    def square_index(n: int) -> torch.Tensor:
        """Sequence position -> tile index on the padded square (the first tiles repeated)."""
        side = math.ceil(math.sqrt(n))
        return torch.arange(side * side) % n

    def encode(
        self, x: torch.Tensor, record: bool, coords: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        index = self.square_index(n).to(x.device)
        side = math.isqrt(index.numel())
        tokens = torch.cat([self.cls_token[0].to(x.dtype), self.embed(x)[index]])
        if record:
            self.records = []
        tokens, _, m1 = self.layer1(tokens, record)
        tokens = self.ppeg(tokens, side)
        tokens, cls_row, m2 = self.layer2(tokens, record)
        if record:
            self.records = [AttentionRecord(m1, index), AttentionRecord(m2, index)]
        share = tile_share(cls_row.mean(0))
        attention = share.new_zeros(n).index_add(0, index, share)
        return tokens[: n + 1], attention
