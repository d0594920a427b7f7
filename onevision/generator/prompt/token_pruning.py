"""Visual-token selection of OneVision 3.3 and its curriculum (eq. 12).

Of an image's V_max visual tokens (the generator's encoder output at the visual positions, as
in the paper: "visual tokens are compressed after the encoder"), keep V_sub: k-means++ seeding
and a few Lloyd steps over the tokens' embeddings form V_sub clusters, and each cluster keeps
the one token nearest its centre, so the kept tokens are actual encoder tokens that cover the
image's distinct patterns. Batched over images in torch (no Python loop per image). The seeding
draws one uniform number per step, shared by every image of the batch (inverse-CDF sampling of
the D^2 distribution), so an image's selection never depends on which batch it came in:
training, evaluation and serving select the same tokens for the same image.
"""

from __future__ import annotations

import math

import torch


def curriculum(v_max: int, v_sub: int, epochs: int) -> list[int]:
    """Eq. 12: tokens kept at epochs e = 1..E, floor(V_max - e / E (V_max - V_sub)), ending at V_sub."""
    if not 1 <= v_sub <= v_max:
        raise ValueError(f"need 1 <= V_sub <= V_max, got V_sub={v_sub}, V_max={v_max}")
    if epochs < 1:
        raise ValueError(f"need at least one epoch, got {epochs}")
    return [math.floor(v_max - e / epochs * (v_max - v_sub) + 1e-9) for e in range(1, epochs + 1)]


def _sq_dist(x: torch.Tensor, c: torch.Tensor, x_sq: torch.Tensor | None = None) -> torch.Tensor:
    """(B, V, D), (B, K, D) -> (B, V, K) squared Euclidean distances (`x_sq`: x's squared norms, (B, V, 1))."""
    x_sq = x.pow(2).sum(-1, keepdim=True) if x_sq is None else x_sq
    return (x_sq - 2 * x @ c.transpose(1, 2) + c.pow(2).sum(-1).unsqueeze(1)).clamp_min(0)


def _draw(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """(B, V) non-negative weights, a uniform number u in [0, 1) -> (B,) index drawn per row with
    probability weight / row sum (inverse CDF); the same u for every row keeps rows independent of
    the batch they are in."""
    cdf = weights.double().cumsum(1)
    target = u.double() * cdf[:, -1:]
    idx = torch.searchsorted(cdf, target, right=True).squeeze(1)
    return idx.clamp(max=weights.shape[1] - 1)


def kmeanspp_centres(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding per image: (B, V, D) -> (B, k) token indices of the initial centres."""
    b, v, _ = x.shape
    rows = torch.arange(b, device=x.device)
    # one draw per step, shared by the batch's images; drawn on the host so that every device sees the same
    u = torch.rand(k, generator=generator).to(x.device)
    x_sq = x.pow(2).sum(-1, keepdim=True)
    chosen = torch.empty(b, k, dtype=torch.long, device=x.device)
    chosen[:, 0] = _draw(torch.ones(b, v, device=x.device), u[0])
    d2 = _sq_dist(x, x[rows, chosen[:, 0]].unsqueeze(1), x_sq).squeeze(-1)  # (B, V)
    for j in range(1, k):
        weights = d2.clone()
        weights[rows.unsqueeze(1), chosen[:, :j]] = 0.0
        empty = weights.sum(1) <= 0  # every remaining token duplicates a centre: take any unchosen one
        weights[empty] = 1.0
        weights[empty.nonzero().flatten().unsqueeze(1), chosen[empty, :j]] = 0.0
        chosen[:, j] = _draw(weights, u[j])
        d2 = torch.minimum(d2, _sq_dist(x, x[rows, chosen[:, j]].unsqueeze(1), x_sq).squeeze(-1))
    return chosen


def select_tokens(x: torch.Tensor, k: int, iters: int = 4, seed: int = 0) -> torch.Tensor:
    """(B, V, D) token embeddings -> (B, k) indices of the kept tokens, ascending: one token per
    cluster, the nearest to its centre (a cluster left empty by the Lloyd steps gives its place
    to the nearest token not yet kept). Always in full precision, also inside a mixed-precision
    step: a bf16 distance would change which tokens are kept."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _select_tokens(x, k, iters, seed)


def _select_tokens(x: torch.Tensor, k: int, iters: int, seed: int) -> torch.Tensor:
    b, v, _ = x.shape
    if not 1 <= k <= v:
        raise ValueError(f"cannot keep {k} of {v} tokens")
    if k == v:
        return torch.arange(v, device=x.device).expand(b, v).clone()
    x = x.detach().float()
    rows = torch.arange(b, device=x.device)
    centres = x[rows.unsqueeze(1), kmeanspp_centres(x, k, torch.Generator().manual_seed(seed))]  # (B, k, D)
    x_sq = x.pow(2).sum(-1, keepdim=True)
    for _ in range(iters):
        assign = _sq_dist(x, centres, x_sq).argmin(-1)  # (B, V)
        onehot = torch.nn.functional.one_hot(assign, k).float()  # (B, V, k)
        counts = onehot.sum(1)  # (B, k)
        means = onehot.transpose(1, 2) @ x / counts.clamp_min(1).unsqueeze(-1)
        centres = torch.where(counts.unsqueeze(-1) > 0, means, centres)
    dist = _sq_dist(x.double(), centres.double())  # (B, V, k); float64: the nearest token can be a near tie
    assign = dist.argmin(-1)
    member = torch.nn.functional.one_hot(assign, k).bool()  # token v belongs to cluster c
    keep = dist.masked_fill(~member, float("inf")).argmin(1)  # (B, k) nearest member of each cluster
    has_member = member.any(1)  # (B, k)
    if not has_member.all():  # rare: fill empty clusters with the nearest tokens not yet kept
        for r in (~has_member).any(1).nonzero().flatten().tolist():
            taken = set(keep[r, has_member[r]].tolist())
            for c in (~has_member[r]).nonzero().flatten().tolist():
                order = dist[r, :, c].argsort().tolist()
                keep[r, c] = next(t for t in order if t not in taken)
                taken.add(int(keep[r, c]))
    return keep.sort(1).values


def prune_span(hidden: torch.Tensor, mask: torch.Tensor, start: int, n: int, keep: int,
               seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep `keep` of the `n` tokens at positions start..start+n of every row of encoder states
    (B, S, H) and their mask (B, S): (states (B, S - n + keep, H), mask, kept positions (B, keep)
    within the span). Gradients flow through the kept states; the selection itself does not."""
    if keep >= n:
        return hidden, mask, torch.arange(n, device=hidden.device).expand(len(hidden), n)
    kept = select_tokens(hidden[:, start:start + n], keep, seed=seed)  # (B, keep)
    states = hidden[:, start:start + n].gather(1, kept.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    hidden = torch.cat([hidden[:, :start], states, hidden[:, start + n:]], dim=1)
    mask = torch.cat([mask[:, :start], mask[:, start:start + n].gather(1, kept), mask[:, start + n:]], dim=1)
    return hidden, mask, kept
