"""FiraAdamW: the authors' package as an oracle, the paper's equations in float64, the limiter."""

import io
import math

import pytest
import torch
from torch import nn

import sst
from sst.optim.fira import FiraAdamW, limit_growth


class TwoShapes(nn.Module):
    """Targets of both orientations: up (20, 12) projects on the right, down (8, 20) on the left."""

    def __init__(self):
        super().__init__()
        self.up = nn.Linear(12, 20)
        self.down = nn.Linear(20, 8)
        self.lm_head = nn.Linear(8, 5)

    def forward(self, x):
        return self.lm_head(torch.tanh(self.down(torch.tanh(self.up(x)))))


def _loss(model, x, y):
    return nn.functional.cross_entropy(model(x), y)


def _batches(steps):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 12, generator=g), torch.randint(0, 5, (16,), generator=g)) for _ in range(steps)]


def _reference_groups(model, rank, every, weight_decay):
    projected = [model.up.weight, model.down.weight]
    ids = {id(p) for p in projected}
    matrices = [p for p in model.parameters() if p.ndim >= 2 and id(p) not in ids]
    vectors = [p for p in model.parameters() if p.ndim < 2]
    return [
        {"params": matrices, "weight_decay": weight_decay},
        {"params": vectors, "weight_decay": 0.0},
        {"params": projected, "weight_decay": weight_decay, "rank": rank, "update_proj_gap": every,
         "alpha": 1.0, "proj_type": "std"},
    ]


def test_trajectory_equals_the_authors_fira_adamw():
    fira = pytest.importorskip("fira")
    torch.manual_seed(0)
    ours = TwoShapes()
    theirs = TwoShapes()
    theirs.load_state_dict(ours.state_dict())
    theirs_start = theirs.up.weight.detach().clone()
    lr, wd, rank, every = 1e-2, 0.1, 3, 3
    ours, method = sst.convert(ours, sst.FiraConfig(rank=rank, proj_update_every=every))
    opt = method.build_optimizer(ours, lr=lr, weight_decay=wd, eps=1e-8)
    ref = fira.FiraAdamW(_reference_groups(theirs, rank, every, wd), lr=lr, eps=1e-8, weight_decay=wd,
                         no_deprecation_warning=True)
    worst = 0.0
    for step, (x, y) in enumerate(_batches(8), start=1):  # projectors recomputed before steps 1, 4, 7
        for model, optimizer in ((ours, opt), (theirs, ref)):
            optimizer.zero_grad()
            _loss(model, x, y).backward()
            optimizer.step()
        method.after_step(ours, opt, step)  # GaLore/Fira only report here; the step guard expects it
        for a, b in zip(ours.parameters(), theirs.parameters()):
            worst = max(worst, float((a - b).detach().abs().max()))
    moved = float((ours.up.weight - theirs_start).detach().abs().max())
    assert moved > 1e-2  # the models did train
    assert worst <= 3e-8, f"largest parameter difference to the authors' FiraAdamW: {worst:.3g}"


def _paper_steps(W, grads, rank, every, lr, betas, eps, gamma):
    """Fira on one matrix written out from the paper's equations, float64 throughout."""
    b1, b2 = betas
    m, n = W.shape
    M = V = P = prev = None
    for t, G in enumerate(grads, start=1):
        if (t - 1) % every == 0:
            U, _, Vh = torch.linalg.svd(G, full_matrices=False)
            P = Vh[:rank].T if m >= n else U[:, :rank]
        R = G @ P if m >= n else P.T @ G
        back = (lambda X: X @ P.T) if m >= n else (lambda X: P @ X)
        M = (1 - b1) * R if M is None else b1 * M + (1 - b1) * R
        V = (1 - b2) * R * R if V is None else b2 * V + (1 - b2) * R * R
        psi = M / (V.sqrt() + eps)
        axis = 1 if m >= n else 0
        phi = psi.norm(dim=axis, keepdim=True) / (R.norm(dim=axis, keepdim=True) + 1e-8)
        S = phi * (G - back(R))
        if prev is not None and S.norm() / prev > gamma:
            S = S * gamma * prev / S.norm()
        prev = S.norm()
        W = W - lr * math.sqrt(1 - b2**t) / (1 - b1**t) * (back(psi) + S)
    return W


@pytest.mark.parametrize("shape", [(10, 6), (6, 10)])
def test_update_follows_the_paper_equations(shape):
    g = torch.Generator().manual_seed(2)
    W0 = torch.randn(*shape, dtype=torch.float64, generator=g)
    # growing gradients, so that the limiter acts on some steps
    grads = [torch.randn(*shape, dtype=torch.float64, generator=g) * (1.5**k) for k in range(6)]
    expected = _paper_steps(W0, grads, rank=2, every=4, lr=0.05, betas=(0.9, 0.999), eps=1e-8, gamma=1.01)
    w = nn.Parameter(W0.clone())
    opt = FiraAdamW([{"params": [w], "rank": 2, "proj_update_every": 4}], lr=0.05, eps=1e-8)
    for G in grads:
        w.grad = G.clone()
        opt.step()
    # the optimizer keeps its moments and projector in float32 (as GaLoreAdamW): float32 agreement
    torch.testing.assert_close(w.detach(), expected, rtol=2e-5, atol=2e-5)
    assert float((w.detach() - W0).abs().max()) > 0.1


def _residual_norms(gamma, steps=4):
    """Residual-term norm ratios when only the out-of-subspace part of G grows (tenfold a step)."""
    g = torch.Generator().manual_seed(3)
    Q1, _ = torch.linalg.qr(torch.randn(12, 2, generator=g))
    Q2, _ = torch.linalg.qr(torch.randn(8, 2, generator=g))
    inside = 100.0 * Q1 @ torch.diag(torch.tensor([2.0, 1.0])) @ Q2.T  # spans the projector's space
    outside = torch.randn(12, 8, generator=g) @ (torch.eye(8) - Q2 @ Q2.T)
    w = nn.Parameter(torch.zeros(12, 8))
    opt = FiraAdamW([{"params": [w], "rank": 2, "proj_update_every": 100}], lr=1e-3, limiter_gamma=gamma)
    norms = []
    for k in range(steps):
        w.grad = inside + 10.0**k * outside
        opt.step()
        norms.append(float(opt.state[w]["residual_norm"]))
    return [b / a for a, b in zip(norms, norms[1:])]


def test_limiter_caps_the_residual_growth_at_gamma():
    assert min(_residual_norms(1e9)) > 5.0  # unlimited, the residual term grows about tenfold
    assert _residual_norms(1.01) == pytest.approx([1.01] * 3, rel=1e-5)


def test_limit_growth_leaves_slower_growth_alone():
    state = {"residual_norm": torch.tensor(2.0)}
    term = torch.full((4,), 0.5)  # norm 1: a shrinking residual
    assert torch.equal(limit_growth(term, state, 1.01), term) and float(state["residual_norm"]) == 1.0
    capped = limit_growth(torch.full((4,), 2.0), state, 1.01)  # norm 4 after 1: capped at 1.01
    assert float(capped.norm()) == pytest.approx(1.01) and float(state["residual_norm"]) == pytest.approx(1.01)
    first = {}
    assert torch.equal(limit_growth(term, first, 1.01), term) and float(first["residual_norm"]) == 1.0


def test_full_rank_projection_leaves_no_residual():
    w = nn.Parameter(torch.randn(9, 5))
    opt = FiraAdamW([{"params": [w], "rank": 5}], lr=1e-3)
    w.grad = torch.randn(9, 5)
    opt.step()
    assert float(opt.state[w]["residual_norm"]) < 1e-5


def test_fira_method_projects_only_targets_and_saves_plain_state(tiny_mlp):
    model, method = sst.convert(tiny_mlp, sst.FiraConfig(rank=3, proj_update_every=2))
    opt = method.build_optimizer(model, lr=1e-3)
    x, y = torch.randn(8, 12, dtype=torch.float64), torch.randn(8, 6, dtype=torch.float64)
    ((model(x) - y) ** 2).mean().backward()
    opt.step()
    assert opt.state[model.up.weight]["exp_avg"].shape == (20, 3)
    assert "residual_norm" in opt.state[model.mid.weight]
    assert "residual_norm" not in opt.state[model.lm_head.weight]
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert sum("residual_norm" in st for st in loaded["state"].values()) == 2


def test_bad_fira_settings_are_rejected_clearly(tiny_mlp):
    with pytest.raises(sst.ConfigError, match=r"method.limiter_gamma: must be >= 1.0"):
        sst.FiraConfig(limiter_gamma=0.9)
    with pytest.raises(sst.TargetError, match="rank 13 is larger than layer 'up'"):
        sst.convert(tiny_mlp, sst.FiraConfig(rank=13))
    with pytest.raises(ValueError, match="limiter_gamma must be >= 1"):
        FiraAdamW([nn.Parameter(torch.zeros(2, 2))], limiter_gamma=0.5)
