"""TEMI's clustering loss on a cached feature matrix, for comparison with SCAN (not part of the package).

    python benchmarks/temi_features.py FEATURES.npy LABELS.npy ["{'epochs': 50}" ...]

TEMI (Adaloglou, Michels, Kalb & Kollmann, "Exploring the limits of deep image clustering using pretrained
models", BMVC 2023), written here from the paper's description on SCAN's heads (``_Heads``, linear by
default): a student and an EMA teacher; for a row x and a random one of its ``n_neighbors`` cosine
neighbours x', each head minimises ``-w * log sum_k (q_s(k|x) q_t(k|x'))^beta / m(k)`` (symmetrised),
where m is a running mean of the teacher's predictions and w the heads' mean teacher agreement on the
pair. The head with the lowest loss on all rows and all their neighbours is kept. Each argument is a
dict of overrides of :func:`temi`'s keywords (plus ``seeds``); prints ACC / NMI of the kept head and the
ACC of every head.
"""

from __future__ import annotations

import ast
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from deepclust.cluster.scan import _Heads, _random_neighbor, l2_normalize, mine_neighbors  # noqa: E402
from deepclust.metrics import clustering_accuracy, normalized_mutual_info  # noqa: E402


def temi(X: np.ndarray, k: int, seed: int, n_neighbors: int = 50, n_heads: int = 10, hidden: int = 0,
         epochs: int = 100, batch: int = 256, lr: float = 1e-3, beta: float = 0.6, tau_s: float = 0.1,
         tau_t: float = 0.04, ema: float = 0.996, marginal_momentum: float = 0.9):
    """Train TEMI heads; return the kept head's labels and every head's labels (n_heads, n)."""
    gen = torch.Generator().manual_seed(seed)
    Xn = l2_normalize(torch.from_numpy(X))
    nb = mine_neighbors(Xn, n_neighbors)
    spec = {"in_features": X.shape[1], "n_clusters": k, "n_heads": n_heads, "hidden": hidden}
    student = _Heads(spec, gen)
    teacher = copy.deepcopy(student).requires_grad_(False)
    marginal = torch.full((n_heads, 1, k), 1.0 / k)
    opt = torch.optim.Adam(student.parameters(), lr=lr)

    def pmi(log_qs: torch.Tensor, qt: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        # log sum_k (q_s q_t)^beta / m_k, computed in log space: (heads, batch)
        return torch.logsumexp(beta * (log_qs + qt.clamp(min=1e-12).log()) - m.log(), dim=-1)

    n = len(Xn)
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for s in range(0, n, batch):
            idx = order[s:s + batch]
            jdx = _random_neighbor(nb, idx, gen)
            b = len(idx)
            x = torch.cat([Xn[idx], Xn[jdx]])
            log_qs = (student(x) / tau_s).log_softmax(-1)
            with torch.no_grad():
                qt = (teacher(x) / tau_t).softmax(-1)
                marginal = marginal_momentum * marginal + (1 - marginal_momentum) * qt.mean(1, keepdim=True)
                w = (qt[:, :b] * qt[:, b:]).sum(-1).mean(0)  # (batch,) the heads' agreement on the pair
            loss = -0.5 * (w * (pmi(log_qs[:, :b], qt[:, b:], marginal)
                                + pmi(log_qs[:, b:], qt[:, :b], marginal))).mean(-1)
            opt.zero_grad()
            loss.sum().backward()
            opt.step()
            with torch.no_grad():
                for pt, ps in zip(teacher.parameters(), student.parameters(), strict=True):
                    pt.mul_(ema).add_((1 - ema) * ps)
    with torch.no_grad():
        log_qs = (student(Xn) / tau_s).log_softmax(-1)
        qt = (teacher(Xn) / tau_t).softmax(-1)
        m = qt.mean(1, keepdim=True)
        losses = sum(-pmi(log_qs, qt[:, nb[:, c]], m).mean(-1) for c in range(nb.shape[1]))
        labels = teacher(Xn).argmax(-1).numpy()
    return labels[int(losses.argmin())], labels


def main() -> None:
    X = np.load(sys.argv[1]).astype(np.float32)
    y = np.load(sys.argv[2])
    k = int(np.unique(y).size)
    for spec in sys.argv[3:] or ["{}"]:
        params = ast.literal_eval(spec)
        for seed in params.pop("seeds", [0]):
            start = time.perf_counter()
            kept, heads = temi(X, k, seed, **params)
            seconds = time.perf_counter() - start
            print(f"TEMI {spec} seed {seed}: ACC {clustering_accuracy(y, kept):.4f} "
                  f"NMI {normalized_mutual_info(y, kept):.4f} ({seconds:.0f} s); heads ACC "
                  + " ".join(f"{clustering_accuracy(y, h):.3f}" for h in heads), flush=True)


if __name__ == "__main__":
    main()
