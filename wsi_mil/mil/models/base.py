"""What every MIL model shares: tile embedding, attention pooling with masks, the tile-level
segmentation head, and bounded-memory prediction on bags of any size.

A model is three pieces, so that one forward pass serves padded training batches and a chunked
pass serves a 200 000-tile slide: ``embed`` (per tile), ``attention_scores`` (per tile, ``K``
branches: 1, or one per class for CLAM-MB) and ``classify`` (per bag, from the ``K`` pooled
vectors). Pooling is the softmax over a bag's real tiles of the raw scores, so padded tiles get
exactly zero weight and the result does not depend on tile order.

**One output head for every task.** A model has ``n_classes`` outputs, whatever they mean: a
classification's class logits, a multilabel run's target logits, a Cox risk, a discrete-time
survival model's hazard logits, a regression's value (the task, :mod:`wsi_mil.mil.tasks`, reads
them). The head is a linear map of the pooled vector, or, with ``branch_per_output``, one
attention branch and one linear unit per output (CLAM-MB's layout, :meth:`add_output_head`), so
every registered model supports every task. Only the attention-pooling models can take a branch
per output (``supports_branches``: ``abmil``, ``gated_abmil``, ``clam_mb`` always): a
transformer has one class token, the pooling baselines no learned attention to split, and
``clam_sb`` is single-branch by definition; they serve multilabel and subtype runs with one
shared pooled vector. ``segmentation_head=False`` (survival and regression, which have no tile classes) drops
the tile-level head: the per-tile scores are then the output head applied to each tile alone
(:meth:`tile_scores`), whose attention-weighted mean is the slide's output for the attention
models (the head is linear).

Every model's ``forward`` and ``predict_chunked`` accept the tiles' grid positions
(``coords``, see :func:`wsi_mil.mil.bags.grid_coords`); a model that uses them sets
:attr:`MILModel.uses_coords` (so the loaders know to read them), every other model ignores them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
from torch import nn

from wsi_mil.mil.params import TrainParams


class MILOutput(NamedTuple):
    """What a model says about a batch of ``B`` bags of up to ``N`` tiles and ``C`` classes."""

    logits: torch.Tensor  # [B, C] slide outputs (logits of classes or targets, risk, value)
    attention: torch.Tensor  # [B, N] softmax over real tiles, 0 on padding (predicted branch)
    raw_attention: torch.Tensor  # [B, N] scores before the softmax, 0 on padding
    tile_logits: torch.Tensor  # [B, N, C] segmentation head (or the output head) per tile
    branch_attention: torch.Tensor  # [B, N, K] softmax weights of every attention branch
    instance_loss: torch.Tensor | None  # CLAM's instance-clustering loss, when a label is given


def embedding_mlp(in_dim: int, hidden_dims: Sequence[int], dropout: float) -> nn.Sequential:
    """Linear + ReLU + dropout per hidden width (CLAM's ``fc`` block, Ilse's feature layers)."""
    layers: list[nn.Module] = []
    for width in hidden_dims:
        layers += [nn.Linear(in_dim, width), nn.ReLU(), nn.Dropout(dropout)]
        in_dim = width
    return nn.Sequential(*layers)


class MILModel(nn.Module, ABC):
    """Base class: subclasses set ``branches`` and implement ``attention_scores``/``classify``."""

    name: str = ""
    #: whether attention ranks tiles well enough to pick pseudo-labelled tiles for the
    #: segmentation head (mean/max pooling rank by the head's own scores instead).
    ranks_by_attention: bool = True
    #: one attention branch per class (CLAM-MB) rather than one shared branch.
    one_branch_per_class: bool = False
    #: whether ``forward`` needs the tiles' grid positions (``coords``); a model may set it per
    #: instance (``transformer_mil`` with ``positional="sincos2d"``). Loaders read the bags'
    #: coordinates only for such a model; every other model ignores ``coords``.
    uses_coords: bool = False
    #: whether the model can give each output its own attention branch (``branch_per_output``)
    supports_branches: bool = False
    #: set inside :meth:`lrp_rules` only: pooling treats its weights as constants
    lrp_rule: bool = False

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        hidden_dims: Sequence[int] = TrainParams.hidden_dims,
        attention_dim: int = TrainParams.attention_dim,
        dropout: float = TrainParams.dropout,
        *,
        branch_per_output: bool = False,
        segmentation_head: bool = True,
    ) -> None:
        """The defaults are :class:`wsi_mil.mil.params.TrainParams`' (one definition each).

        ``n_classes``: the number of outputs (the module docstring says what they can be).
        """
        super().__init__()
        if n_classes < 1:
            raise ValueError(f"a MIL model needs at least 1 output, got {n_classes}")
        hidden_dims = tuple(int(w) for w in hidden_dims)
        if not hidden_dims:
            raise ValueError("hidden_dims needs at least one width")
        if branch_per_output and not (self.supports_branches or self.one_branch_per_class):
            raise ValueError(
                f"{self.name}: cannot give each output its own attention branch "
                f"(only abmil, gated_abmil and clam_mb can)"
            )
        self.in_dim, self.n_classes = int(in_dim), int(n_classes)
        self.hidden_dim = hidden_dims[-1]
        self.hparams: dict[str, Any] = {
            "hidden_dims": list(hidden_dims),
            "attention_dim": int(attention_dim),
            "dropout": float(dropout),
        }
        if branch_per_output:  # recorded only when set, so older runs' model.json still match
            self.one_branch_per_class = True
            self.hparams["branch_per_output"] = True
        if not segmentation_head:
            self.hparams["segmentation_head"] = False
        self.embed = embedding_mlp(in_dim, hidden_dims, dropout)
        self.tile_head = nn.Linear(self.hidden_dim, n_classes) if segmentation_head else None

    @property
    def branches(self) -> int:
        """Attention branches: one per output (CLAM-MB layout) or one."""
        return self.n_classes if self.one_branch_per_class else 1

    def add_output_head(self) -> None:
        """The output head (the module docstring): ``classifier``, a linear map of the one
        pooled vector, or ``classifiers``, one linear unit per output's branch. A subclass calls
        it where it built its classifier before, so seeded initialisation is unchanged."""
        if self.one_branch_per_class:
            self.classifiers = nn.ModuleList(
                nn.Linear(self.hidden_dim, 1) for _ in range(self.n_classes)
            )
        else:
            self.classifier = nn.Linear(self.hidden_dim, self.n_classes)

    def head_outputs(self, pooled: torch.Tensor) -> torch.Tensor:
        """Outputs ``[..., C]`` of the output head on pooled vectors ``[..., K, H]``."""
        if self.one_branch_per_class:
            return torch.cat(
                [head(pooled[..., c, :]) for c, head in enumerate(self.classifiers)], dim=-1
            )
        return self.classifier(pooled[..., 0, :])

    def tile_scores(self, h: torch.Tensor) -> torch.Tensor:
        """Per-tile scores ``[..., N, C]`` from tile embeddings (or tokens) ``[..., N, H]``: the
        segmentation head's logits, or, without one, the output head on each tile alone."""
        if self.tile_head is not None:
            return self.tile_head(h)
        return self.head_outputs(h.unsqueeze(-2).expand(*h.shape[:-1], self.branches, h.shape[-1]))

    # -- pieces a subclass defines ---------------------------------------------------------
    @abstractmethod
    def attention_scores(self, h: torch.Tensor) -> torch.Tensor:
        """Raw scores ``[..., N, K]`` from tile embeddings ``[..., N, H]``."""

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """Slide outputs ``[B, C]`` from pooled vectors ``[B, K, H]`` (the output head)."""
        return self.head_outputs(pooled)

    def instance_loss(
        self, h: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor | None:
        """An auxiliary loss on tile embeddings (CLAM); none by default."""
        return None

    # -- shared machinery ------------------------------------------------------------------
    @contextmanager
    def lrp_rules(self) -> Iterator[None]:
        """The forward pass under the xMIL rules of layer-wise relevance propagation, inside the
        ``with`` block (Hense et al., "xMIL", NeurIPS 2024; their ``AttentionMILModel.
        activations(detach_attn=True)`` and ``TransMIL.activations``): the values are unchanged,
        but the backward pass treats as constants the attention weights (the AH-rule: attention
        is a gate, relevance flows through the values only), every LayerNorm's scale (the
        LN-rule, Ali et al., ICML 2022) and the slope of every element-wise non-linearity other
        than ReLU (relevance passes it unchanged). Every remaining operation is linear or ReLU,
        so gradient x input of the logit is LRP-0 relevance (:mod:`wsi_mil.explain.lrp`).
        Every module with an ``lrp_rule`` flag takes part; never used in training."""
        # modules of several classes share the flag; Any: nn.Module types unknown attributes
        # as tensors or modules
        flagged: list[Any] = [m for m in self.modules() if hasattr(m, "lrp_rule")]
        for m in flagged:
            m.lrp_rule = True
        try:
            yield
        finally:
            for m in flagged:
                m.lrp_rule = False

    def config(self) -> dict[str, Any]:
        """What :func:`create_model` needs to rebuild this model (saved beside the weights)."""
        return {
            "model": self.name,
            "in_dim": self.in_dim,
            "n_classes": self.n_classes,
            "kwargs": dict(self.hparams),
        }

    def check_coords(self, x: torch.Tensor, coords: torch.Tensor | None) -> torch.Tensor | None:
        """``coords`` shaped as ``x``'s tiles (``[B, N, 2]``, or ``[N, 2]`` for one bag ``[N, D]``).

        A model that uses coordinates and gets none raises, rather than silently predicting
        without them; a model that does not use them returns None (they are ignored).
        """
        if not self.uses_coords:
            return None
        if coords is None:
            built = (
                f" with positional={self.hparams['positional']!r}"
                if "positional" in self.hparams
                else ""
            )
            raise ValueError(
                f"{self.name}{built} uses the tiles' positions but was called without them: "
                f"pass coords= (float [B, N, 2], or [N, 2] for one bag: level-0 px divided by "
                f"the tile stride, as wsi_mil.mil.bags.grid_coords gives)"
            )
        coords = torch.as_tensor(coords)
        if tuple(coords.shape) != (*x.shape[:-1], 2):
            raise ValueError(
                f"{self.name}: coords of shape {tuple(coords.shape)} for features "
                f"of shape {tuple(x.shape)}: expected {(*x.shape[:-1], 2)}"
            )
        return coords.to(device=x.device, dtype=torch.float32)

    def pool(
        self, h: torch.Tensor, raw: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Softmax over real tiles; returns (weights ``[B, N, K]``, pooled ``[B, K, H]``).

        Under :meth:`lrp_rules` the weights enter the pooled vectors as constants (a gate)."""
        scores = raw.float().masked_fill(~mask.unsqueeze(-1), float("-inf"))
        weights = torch.softmax(scores, dim=1) * mask.unsqueeze(-1)
        gate = weights.detach() if self.lrp_rule else weights
        pooled = torch.einsum("bnk,bnh->bkh", gate.to(h.dtype), h)
        return weights, pooled

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        coords: torch.Tensor | None = None,
    ) -> MILOutput:
        """``x`` ``[B, N, D]`` (or one bag ``[N, D]``), ``mask`` ``[B, N]`` True on real tiles.

        ``labels`` ``[B]`` (training only) lets CLAM compute its instance loss. ``coords``
        ``[B, N, 2]`` (or ``[N, 2]``): the tiles' grid positions, used only by a model with
        :attr:`uses_coords` (the attention models here ignore them).
        """
        self.check_coords(x, coords)
        if x.dim() == 2:
            x = x.unsqueeze(0)
            mask = None if mask is None else mask.reshape(1, -1)
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        h = self.embed(x)
        raw = self.attention_scores(h)
        weights, pooled = self.pool(h, raw, mask)
        logits = self.classify(pooled)
        branch = self._branch(logits)
        attention = weights.gather(2, branch.view(-1, 1, 1).expand(-1, h.shape[1], 1))[..., 0]
        raw_attention = raw.float().gather(2, branch.view(-1, 1, 1).expand(-1, h.shape[1], 1))
        raw_attention = raw_attention[..., 0].masked_fill(~mask, 0.0)
        inst = None if labels is None else self.instance_loss(h, weights, mask, labels)
        return MILOutput(logits, attention, raw_attention, self.tile_scores(h), weights, inst)

    def _branch(self, logits: torch.Tensor) -> torch.Tensor:
        """The attention branch reported per bag: the only one, or the predicted class's."""
        if self.one_branch_per_class:
            return logits.argmax(dim=1)
        return torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)

    @torch.no_grad()
    def predict_chunked(
        self,
        read: Callable[[int, int], torch.Tensor],
        num_tiles: int,
        chunk_size: int = 16384,
        coords: torch.Tensor | None = None,
    ) -> MILOutput:
        """One bag read ``chunk_size`` tiles at a time: memory stays bounded whatever its size.

        ``coords`` ``[num_tiles, 2]``: the bag's grid positions (ignored here: attention
        pooling does not use them). Pass 1 computes each tile's raw scores and segmentation
        logits; the softmax is then taken over the whole bag; pass 2 re-embeds each chunk and
        accumulates the weighted sum.
        The result equals ``forward`` on the whole bag (in eval mode).
        """
        raws, tile_logits = [], []
        for start in range(0, num_tiles, chunk_size):
            h = self.embed(read(start, min(start + chunk_size, num_tiles)).float())
            raws.append(self.attention_scores(h).float())
            tile_logits.append(self.tile_scores(h).float())
        raw = torch.cat(raws)  # [N, K]
        weights = torch.softmax(raw, dim=0)
        pooled = torch.zeros(raw.shape[1], self.hidden_dim, device=raw.device)
        for start in range(0, num_tiles, chunk_size):
            end = min(start + chunk_size, num_tiles)
            h = self.embed(read(start, end).float())
            pooled += weights[start:end].T @ h
        logits = self.classify(pooled.unsqueeze(0))
        branch = int(self._branch(logits)[0])
        return MILOutput(
            logits,
            weights[:, branch].unsqueeze(0),
            raw[:, branch].unsqueeze(0),
            torch.cat(tile_logits).unsqueeze(0),
            weights.unsqueeze(0),
            None,
        )


def logits_fn(
    model: MILModel, coords: torch.Tensor | None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The logits of a batch of copies of the bag (Captum's calls), at the bag's positions: the
    forward function every gradient explanation attributes (:mod:`wsi_mil.explain`)."""

    def forward(batch: torch.Tensor) -> torch.Tensor:
        c = None if coords is None else coords.expand(batch.shape[0], -1, -1)
        return model(batch, coords=c).logits

    return forward
