"""Single-tile perturbations, and re-scoring a bag restricted to subsets of its tiles.

* :func:`drop_one`: ``logit(bag) - logit(bag without tile i)``, xMIL's "perturbation drop"
  (Hense et al., NeurIPS 2024, ``xMIL.perturbation_scores``; an occlusion method, Zeiler &
  Fergus 2014, with a tile as the occluded unit): how much the prediction needs each tile.
* :func:`keep_one`: ``logit({i}) - logit({0})``, xMIL's "perturbation keep": what each tile says
  alone, less a bag of one all-zero tile (the "no tissue signal" of integrated gradients) so
  that a positive score is evidence for the target. xMIL's scores are ``logit({i})``: the
  ranking is the same.
* :func:`bag_scorer`: the target probability of the bag restricted to any subsets of its tiles
  (an empty subset is the all-zero bag of the same size, xMIL's end of a patch-flipping
  curve), for :func:`wsi_mil.metrics.explain.patch_flipping`.

Left-out and subset bags of a model that pools per-tile embeddings (attention MIL, CLAM, mean
and max pooling) are computed in closed form from one pass of the embedding network, never by
re-running the model on ``N`` bags (the reason for hand-written code where Captum's
``FeatureAblation`` would run the model once per tile): for softmax pooling with per-tile
exponentials ``e_j`` and embeddings ``h_j``, the pooled vector without tile ``i`` is ``(S -
e_i h_i) / (Z - e_i)`` (``S = sum e_j h_j``, ``Z = sum e_j``, in float64; the at most one tile
per branch holding over half the weight is recomputed directly, so no cancellation); for max
pooling it is the largest value of each dimension among the other tiles (the second largest
where tile ``i`` alone holds the maximum). A 100 000-tile bag takes seconds. A transformer
mixes every tile with every other, so each left-out bag is a forward pass: ``N`` passes of
``N - 1`` tiles (cubic in the bag for exact attention), which
:func:`wsi_mil.explain.methods.explain` bounds by ``max_perturbation_tiles``. The one-tile
bags of :func:`keep_one` (two tokens each) run in batches through the transformer's layers
(TransMIL pads each to its 128 Nyström landmarks, whose pseudo-inverse dominates: in small
batches, and still a bounded method, :func:`wsi_mil.explain.methods.explain`; the Nyström
package starts its iterative pseudo-inverse from the largest row and column sums of the whole
batch, so a batched TransMIL logit differs from a one-at-a-time pass by about 1e-4, tested).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from wsi_mil.mil.models import MILModel
from wsi_mil.mil.models.pooling import MaxPoolMIL
from wsi_mil.mil.models.transformers import TransformerMIL, _TransformerMIL

#: tiles whose left-out bags are pooled at once in the closed forms (bounds their memory).
CHUNK = 4096
#: one-tile TransMIL bags run at once (each is padded to the Nyström landmarks, 128 tokens, and
#: their pseudo-inverses: 256 at once took 7 GB).
TRANSMIL_CHUNK = 32


def _softmax_pooling(model: MILModel) -> bool:
    return not isinstance(model, _TransformerMIL) and type(model).pool is MILModel.pool


def _forward_logit(
    model: MILModel, x: torch.Tensor, coords: torch.Tensor | None, target: int
) -> float:
    return float(model(x, coords=coords).logits[0, target])


@torch.no_grad()
def drop_one(
    model: MILModel, x: torch.Tensor, coords: torch.Tensor | None, target: int
) -> np.ndarray:
    """``logit(bag) - logit(bag without tile i)`` for every tile ``i`` of ``x`` ``[N, D]``.

    A one-tile bag without its tile is the all-zero tile (a model cannot score an empty bag).
    """
    n = x.shape[0]
    full = _forward_logit(model, x, coords, target)
    if n == 1:
        return np.array([full - _forward_logit(model, torch.zeros_like(x), coords, target)])
    if _softmax_pooling(model):
        without = _drop_one_softmax(model, x, target)
    elif isinstance(model, MaxPoolMIL):
        without = _drop_one_max(model, x, target)
    else:
        keep = torch.ones(n, dtype=torch.bool, device=x.device)
        without = np.empty(n)
        for i in range(n):
            keep[i] = False
            without[i] = _forward_logit(
                model, x[keep], None if coords is None else coords[keep], target
            )
            keep[i] = True
    return full - without


def _drop_one_softmax(model: MILModel, x: torch.Tensor, target: int) -> np.ndarray:
    h = model.embed(x).double()  # [N, H]
    raw = model.attention_scores(h.float()).double()  # [N, K]
    e = torch.exp(raw - raw.max(dim=0).values)  # [N, K]
    z, s = e.sum(0), e.T @ h  # [K], [K, H]
    logits = []
    for start in range(0, x.shape[0], CHUNK):
        ei, hi = e[start : start + CHUNK], h[start : start + CHUNK]
        pooled = (s - ei.unsqueeze(-1) * hi.unsqueeze(1)) / (z - ei).unsqueeze(-1)  # [c, K, H]
        logits.append(model.classify(pooled.float())[:, target].double())
    without = torch.cat(logits)
    for branch in range(e.shape[1]):  # a tile with over half the weight: recompute directly
        for i in torch.nonzero(e[:, branch] > 0.5 * z[branch]).flatten().tolist():
            others = torch.cat([raw[:i], raw[i + 1 :]])
            weights = torch.softmax(others, dim=0)  # [N - 1, K]
            pooled = weights.T @ torch.cat([h[:i], h[i + 1 :]])  # [K, H]
            without[i] = model.classify(pooled.float().unsqueeze(0))[0, target].double()
    return without.cpu().numpy()


def _drop_one_max(model: MaxPoolMIL, x: torch.Tensor, target: int) -> np.ndarray:
    h = model.embed(x).float()  # [N, H]
    top = torch.topk(h, 2, dim=0).values  # [2, H]
    alone = (h == top[0]) & ((h == top[0]).sum(0) == 1)  # tile i holds the maximum alone
    logits = []
    for start in range(0, x.shape[0], CHUNK):
        pooled = torch.where(alone[start : start + CHUNK], top[1], top[0])  # [c, H]
        logits.append(model.classify(pooled.unsqueeze(1))[:, target])
    return torch.cat(logits).double().cpu().numpy()


@torch.no_grad()
def keep_one(
    model: MILModel, x: torch.Tensor, coords: torch.Tensor | None, target: int
) -> np.ndarray:
    """``logit({i}) - logit({0})`` for every tile ``i``: each tile alone, against one zero tile."""
    zero = _forward_logit(
        model, torch.zeros_like(x[:1]), None if coords is None else coords[:1], target
    )
    if not isinstance(model, _TransformerMIL):  # a one-tile bag pools to the tile's embedding
        logits = []
        for start in range(0, x.shape[0], CHUNK):
            h = model.embed(x[start : start + CHUNK])
            k = model.attention_scores(h).shape[-1] if _softmax_pooling(model) else 1
            logits.append(model.classify(h.unsqueeze(1).expand(-1, k, -1))[:, target])
        return torch.cat(logits).double().cpu().numpy() - zero
    # every one-tile bag at once, [class token, tile]: the model's layers take a batch of them
    chunk = CHUNK if isinstance(model, TransformerMIL) else TRANSMIL_CHUNK
    logits = []
    for start in range(0, x.shape[0], chunk):
        h = model.embed(x[start : start + chunk])
        if model.uses_coords:  # a one-tile bag's position, relative to its corner, is 0
            h = h + model.position(h.new_zeros((1, 2))).to(h.dtype)  # type: ignore[operator]
        tokens = torch.cat(
            [model.cls_token.expand(len(h), 1, -1).to(h.dtype), h.unsqueeze(1)], dim=1
        )
        if isinstance(model, TransformerMIL):
            for layer in model.layers:
                tokens = layer(tokens, False)[0]
        else:  # TransMIL: a one-tile bag is a 1 x 1 square (no padding tiles)
            mixed = model.ppeg(model.layer1(tokens, False)[0], 1)  # type: ignore[operator]
            tokens = model.layer2(mixed, False)[0]  # type: ignore[operator]
        logits.append(model.classify(model.norm(tokens)[:, :1])[:, target])
    return torch.cat(logits).double().cpu().numpy() - zero


def bag_scorer(
    model: MILModel,
    x: torch.Tensor,
    coords: torch.Tensor | None,
    target: int,
    max_batch_values: int = 1 << 24,
    output: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Callable[[list[np.ndarray]], np.ndarray]:
    """A :data:`wsi_mil.metrics.explain.ScoreFn`: the softmax probability of ``target`` for the
    bag restricted to each subset of tile indices (an empty subset: the all-zero bag).
    ``output`` reads the logits ``[B, C]`` otherwise (another task's outputs:
    :func:`wsi_mil.mil.tasks.explained_output`).

    Per-tile models pool the subset from embeddings computed once (in padded, masked batches
    of at most ``max_batch_values`` values); transformers run a forward pass per subset. Each
    distinct subset is scored once.
    """
    read = output or (lambda logits: logits.float().softmax(1))
    model.eval()
    with torch.no_grad():
        zero = float(read(model(torch.zeros_like(x), coords=coords).logits)[0, target])
        per_tile = not isinstance(model, _TransformerMIL)
        if per_tile:
            h = model.embed(x)
            raw = model.attention_scores(h) if _softmax_pooling(model) else h[:, :1] * 0
    cache: dict[bytes, float] = {}

    @torch.no_grad()
    def pooled_probability(subsets: list[np.ndarray]) -> list[float]:
        length = max(len(s) for s in subsets)
        batch = h.new_zeros((len(subsets), length, h.shape[1]))
        scores = raw.new_zeros((len(subsets), length, raw.shape[1]))
        mask = torch.zeros((len(subsets), length), dtype=torch.bool, device=h.device)
        for i, subset in enumerate(subsets):
            index = torch.from_numpy(np.asarray(subset, dtype=np.int64)).to(h.device)
            batch[i, : len(subset)], scores[i, : len(subset)] = h[index], raw[index]
            mask[i, : len(subset)] = True
        _, pooled = model.pool(batch, scores, mask)
        return read(model.classify(pooled))[:, target].float().tolist()

    @torch.no_grad()
    def forward_probability(subset: np.ndarray) -> float:
        index = torch.from_numpy(np.asarray(subset, dtype=np.int64)).to(x.device)
        grid = None if coords is None else coords[index]
        return float(read(model(x[index], coords=grid).logits)[0, target])

    def score(subsets: list[np.ndarray]) -> np.ndarray:
        keys = [np.asarray(s, dtype=np.int64).tobytes() for s in subsets]
        todo = {
            k: np.asarray(s, dtype=np.int64)
            for k, s in zip(keys, subsets)
            if k not in cache and len(s) > 0
        }
        for k, s in zip(keys, subsets):
            if len(s) == 0:
                cache[k] = zero
        pending = list(todo.items())
        if per_tile:
            start = 0
            while start < len(pending):  # grow the batch while it stays within budget
                end = start + 1
                while (
                    end < len(pending)
                    and (end + 1 - start)
                    * max(len(s) for _, s in pending[start : end + 1])
                    * h.shape[1]
                    <= max_batch_values
                ):
                    end += 1
                part = pending[start:end]
                cache.update(zip([k for k, _ in part], pooled_probability([s for _, s in part])))
                start = end
        else:
            for k, s in pending:
                cache[k] = forward_probability(s)
        return np.array([cache[k] for k in keys])

    return score
