"""Tests of the YOPO pieces (trainers.yopo): costate, Hamiltonian, m × n loops, modes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tests.test_attacks import make_synthetic, train_clean
from trainers.adversarial import AdversarialConfig, adversarial_step
from trainers.attacks import trades_attack
from trainers.models import SmallCNN
from trainers.yopo import (
    check_layer_one_interface,
    frozen_norm_statistics,
    hamiltonian,
    kl_costate,
    layer_one_steps,
    trades_yopo_perturbation,
)

EPS = 8 / 255


@pytest.fixture(scope="module")
def trained64() -> tuple[nn.Module, Tensor, Tensor]:
    """A trained SmallCNN in float64 (eval mode) and a test batch."""
    torch.manual_seed(0)
    x, y = make_synthetic(512)
    model = train_clean(SmallCNN(1, 4, widths=(8, 16, 32)), x, y, epochs=2).double()
    x_test, y_test = make_synthetic(32, seed=2)
    return model, x_test.double(), y_test


def full_kl(model: nn.Module, x_adv: Tensor, clean_probs: Tensor) -> Tensor:
    return F.kl_div(F.log_softmax(model(x_adv), dim=1), clean_probs, reduction="sum")


@pytest.mark.parametrize("normalize", [False, True])
def test_smallcnn_implements_layer_one_interface(normalize):
    torch.manual_seed(0)
    stats = {"mean": (0.5,), "std": (0.25,)} if normalize else {}
    model = SmallCNN(1, 7, widths=(4, 8), **stats).eval()
    check_layer_one_interface(model)
    x = torch.rand(3, 1, 12, 12)
    torch.testing.assert_close(model(x), model.forward_from_layer_one(model.layer_one(x)))
    assert model(x).shape == (3, 7)


def test_interface_check_names_what_is_missing():
    with pytest.raises(TypeError, match="layer_one"):
        check_layer_one_interface(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))

    class NoRest(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer_one = nn.Identity()

    with pytest.raises(TypeError, match="forward_from_layer_one"):
        check_layer_one_interface(NoRest())


def test_costate_gives_the_full_network_gradient(trained64):
    """∂H/∂η at the first inner step equals −∂KL/∂η through the whole model (YOPO's key identity)."""
    model, x, _ = trained64
    with torch.no_grad():
        clean_probs = F.softmax(model(x), dim=1)
    gen = torch.Generator().manual_seed(1)
    # A generic point of the ball (x + η in [0, 1]), where the KL gradient is far from zero;
    # the data has pixels at exactly 0 and 1, which must get a gradient too.
    eta = torch.clamp(x + EPS * (2 * torch.rand(x.shape, generator=gen, dtype=x.dtype) - 1), 0, 1) - x
    x_adv = torch.clamp(x + eta, 0, 1)

    costate, _ = kl_costate(model, x, eta, clean_probs)
    x_h = x_adv.clone().requires_grad_(True)
    (grad_h,) = torch.autograd.grad(hamiltonian(model.layer_one, x_h, costate), x_h)

    x_l = x_adv.clone().requires_grad_(True)
    (grad_l,) = torch.autograd.grad(full_kl(model, x_l, clean_probs), x_l)

    assert grad_l.abs().max() > 1e-6  # a non-trivial gradient
    torch.testing.assert_close(grad_h, -grad_l, atol=1e-5, rtol=1e-5)
    assert all(p.grad is None for p in model.parameters())

    # The first inner step is therefore one signed-gradient ascent step on the full KL.
    stepped = layer_one_steps(model.layer_one, x, eta, costate, sigma=2 / 255, epsilon=EPS, steps=1)
    expected = torch.clamp(torch.clamp(x_adv + 2 / 255 * grad_l.sign() - x, -EPS, EPS) + x, 0, 1)
    torch.testing.assert_close(torch.clamp(x + stepped, 0, 1), expected, atol=1e-12, rtol=0)


def test_costate_identity_for_ce_in_train_mode_with_frozen_statistics(trained64):
    """Plain YOPO: same identity with CE, batch-statistics BN, and running stats untouched."""
    model, x, y = trained64
    model.train()
    try:
        bn = model.layer_one[0][1]
        count = int(bn.num_batches_tracked)
        x_l = x.clone().requires_grad_(True)
        z1 = model.layer_one(x_l)
        z1.retain_grad()
        F.cross_entropy(model.forward_from_layer_one(z1), y).backward()
        costate = -z1.grad
        after_full = bn.running_mean.clone()
        with frozen_norm_statistics(model.layer_one):
            x_h = x.clone().requires_grad_(True)
            (grad_h,) = torch.autograd.grad(hamiltonian(model.layer_one, x_h, costate), x_h)
        torch.testing.assert_close(grad_h, -x_l.grad, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(bn.running_mean, after_full, atol=0, rtol=0)  # inner step: no update
        assert int(bn.num_batches_tracked) == count + 1  # only the full pass counted
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_yopo_m_1_is_trades_pgd_m(trained64):
    """With n = 1 every step recomputes the costate: TRADES-YOPO-k-1 is TRADES' PGD-k step for step."""
    model, x, _ = trained64
    eta, _ = trades_yopo_perturbation(
        model, x, epsilon=EPS, sigma=2 / 255, m=4, n=1, generator=torch.Generator().manual_seed(9)
    )
    x_adv = trades_attack(
        model, x, epsilon=EPS, step_size=2 / 255, steps=4, generator=torch.Generator().manual_seed(9)
    )
    torch.testing.assert_close(torch.clamp(x + eta, 0, 1), x_adv, atol=1e-9, rtol=0)


def test_trades_yopo_perturbation_is_feasible_and_increases_kl(trained64):
    model, x, _ = trained64
    bn_stats = [b.running_mean.clone() for b in model.modules() if isinstance(b, nn.BatchNorm2d)]
    eta, clean_logits = trades_yopo_perturbation(
        model, x, epsilon=EPS, sigma=0.007, m=5, n=3, generator=torch.Generator().manual_seed(0)
    )
    assert eta.abs().max() <= EPS + 1e-12
    assert (x + eta).min() >= 0 and (x + eta).max() <= 1
    assert not eta.requires_grad
    q = F.softmax(clean_logits, dim=1)
    with torch.no_grad():
        kl_start = full_kl(model, torch.clamp(x + 0.001 * torch.randn_like(x), 0, 1), q)
        kl_end = full_kl(model, torch.clamp(x + eta, 0, 1), q)
    assert kl_end > 10 * kl_start
    # No parameter gradient and no BN update during the attack.
    assert all(p.grad is None for p in model.parameters())
    after = [b.running_mean for b in model.modules() if isinstance(b, nn.BatchNorm2d)]
    assert all(torch.equal(a, b) for a, b in zip(bn_stats, after, strict=True))


def test_layer_one_steps_projects_and_descends_h(trained64):
    model, x, _ = trained64
    costate = torch.randn_like(model.layer_one(x))
    eta = torch.zeros_like(x)
    new = layer_one_steps(model.layer_one, x, eta, costate, sigma=0.01, epsilon=0.015, steps=3)
    assert new.abs().max() <= 0.015 + 1e-12
    assert (x + new).min() >= 0 and (x + new).max() <= 1
    with torch.no_grad():
        assert hamiltonian(model.layer_one, x + new, costate) < hamiltonian(model.layer_one, x + eta, costate)


def _mode_log(model: nn.Module) -> tuple[list[bool], list[torch.utils.hooks.RemovableHandle]]:
    """Record ``training`` at each forward of the last BN of the body (one call per full forward)."""
    log: list[bool] = []
    body_bn = [m for m in model.features.modules() if isinstance(m, nn.BatchNorm2d)][-1]
    handle = body_bn.register_forward_pre_hook(lambda module, _inputs: log.append(module.training))
    return log, [handle]


def test_trades_yopo_step_attacks_in_eval_and_trains_in_train_mode():
    torch.manual_seed(0)
    model = SmallCNN(1, 4, widths=(4, 8))
    x, y = make_synthetic(16, size=8)
    log, handles = _mode_log(model)
    config = AdversarialConfig(method="trades_yopo", m=5, n=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    try:
        adversarial_step(model, x, y, opt, config)
    finally:
        for h in handles:
            h.remove()
    # q = softmax(f(x)) and m costate passes in eval mode; clean + adversarial passes in train mode.
    assert log == [False] * (1 + config.m) + [True, True]
    assert model.training


def test_plain_yopo_step_runs_m_training_passes():
    torch.manual_seed(0)
    model = SmallCNN(1, 4, widths=(4, 8))
    x, y = make_synthetic(16, size=8)
    stem_bn = model.layer_one[0][1]
    log, handles = _mode_log(model)
    config = AdversarialConfig(method="yopo", m=4, n=2)
    before = int(stem_bn.num_batches_tracked)
    calls = []
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    try:
        adversarial_step(model, x, y, opt, config, backward=lambda loss: (calls.append(1), loss.backward()))
    finally:
        for h in handles:
            h.remove()
    assert log == [False] + [True] * config.m  # clean metrics (eval), then m training passes
    assert len(calls) == config.m
    # Layer one's BN counted the m full passes only, not the m·n inner steps.
    assert int(stem_bn.num_batches_tracked) == before + config.m
