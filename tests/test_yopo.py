"""Tests of the YOPO pieces (trainers.yopo): costate, Hamiltonian, m × n loops, modes."""

from __future__ import annotations

import copy
import random

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space.oneshot import activate, to_one_shot
from search_space.params import random_architecture
from search_space.supernet import TamNasSpace, build_subnet
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


def ball_point(x: Tensor, seed: int) -> Tensor:
    """A generic η of the ε-ball with x + η in [0, 1], where the KL gradient is far from zero."""
    gen = torch.Generator().manual_seed(seed)
    return torch.clamp(x + EPS * (2 * torch.rand(x.shape, generator=gen, dtype=x.dtype) - 1), 0, 1) - x


def input_gradients(
    model: nn.Module, x: Tensor, eta: Tensor, costate: Tensor, clean_probs: Tensor
) -> tuple[Tensor, Tensor]:
    """``∂H/∂η`` of the layer-one Hamiltonian with ``costate``, and ``∂KL/∂η`` through the whole model."""
    x_adv = torch.clamp(x + eta, 0, 1)
    x_h = x_adv.clone().requires_grad_(True)
    (grad_h,) = torch.autograd.grad(hamiltonian(model.layer_one, x_h, costate), x_h)
    x_l = x_adv.clone().requires_grad_(True)
    (grad_l,) = torch.autograd.grad(full_kl(model, x_l, clean_probs), x_l)
    return grad_h, grad_l


def relative_gap(a: Tensor, b: Tensor) -> float:
    """``max|a − b| / max|b|``."""
    return float((a - b).abs().max() / b.abs().max())


def assert_costate_identity(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """At the first inner step, ``∂H/∂η == −∂KL/∂η`` to 1e-5 of the gradient's scale (float64).

    Returns ``(η, q, ∂KL/∂η)`` for the caller's negative controls.
    """
    check_layer_one_interface(model)
    with torch.no_grad():
        clean_probs = F.softmax(model(x), dim=1)
    eta = ball_point(x, 1)
    costate, _ = kl_costate(model, x, eta, clean_probs)
    grad_h, grad_kl = input_gradients(model, x, eta, costate, clean_probs)

    # A relative check only means something if the gradient is far above float64 round-off.
    assert grad_kl.abs().max() > 1e-6, "the KL gradient is too small for the check to mean anything"
    assert relative_gap(grad_h, -grad_kl) <= 1e-5
    assert all(p.grad is None for p in model.parameters())

    # The first inner step is therefore one signed-gradient ascent step on the full KL.
    stepped = layer_one_steps(model.layer_one, x, eta, costate, sigma=2 / 255, epsilon=EPS, steps=1)
    x_adv = torch.clamp(x + eta, 0, 1)
    ascent = torch.clamp(torch.clamp(x_adv + 2 / 255 * grad_kl.sign() - x, -EPS, EPS) + x, 0, 1)
    torch.testing.assert_close(torch.clamp(x + stepped, 0, 1), ascent, atol=1e-12, rtol=0)

    # Negative control: a stale costate, taken at another point of the ball (e.g. before η
    # moved), fails the same check by orders of magnitude.
    stale, _ = kl_costate(model, x, ball_point(x, 2), clean_probs)
    stale_h, _ = input_gradients(model, x, eta, stale, clean_probs)
    assert relative_gap(stale_h, -grad_kl) > 1e-2
    return eta, clean_probs, grad_kl


def logits_of_std(model: nn.Module, x: Tensor, std: float = 3.0) -> nn.Module:
    """Rescale the classifier (bias 0 at init) so that the logits on ``x`` have standard deviation ``std``.

    ``init_weights`` draws the TAM-NAS classifier from N(0, 0.01²): at init the logits are ~1e-3,
    q ≈ f(x + η), and the KL gradient w.r.t. η is only ~1e-8 on a subnet (~1e-11 on the supernet),
    too close to nothing for the identity check to have teeth. Scaling the last layer keeps the
    network the same architecture and makes the gradient O(1e-4..1e-3).
    """
    fc = model.head.fc
    assert not fc.bias.any()
    with torch.no_grad():
        fc.weight.mul_(std / model(x).std())
    return model


def fashion_mnist_batch() -> Tensor:
    """Four Fashion-MNIST-shaped images (1 × 32 × 32 as the space takes them) in float64, with 0/1 pixels."""
    x, _ = make_synthetic(4, num_classes=10, size=32, seed=3)
    return x.double()


def test_costate_gives_the_full_network_gradient(trained64):
    """∂H/∂η at the first inner step equals −∂KL/∂η through the whole model (YOPO's key identity)."""
    model, x, _ = trained64
    assert_costate_identity(model, x)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_costate_identity_on_tam_nas_subnets(seed):
    """The same identity on standalone TAM-NAS subnets (Fashion-MNIST, width 1), eval mode as in the attack."""
    torch.manual_seed(seed)
    arch = random_architecture(random.Random(seed))
    x = fashion_mnist_batch()
    model = logits_of_std(build_subnet(arch).double().eval(), x)
    assert_costate_identity(model, x)


def test_costate_identity_on_the_supernet_with_an_active_architecture():
    """The one-shot supernet exposes layer one too; the identity holds for whichever architecture is active."""
    torch.manual_seed(0)
    supernet = to_one_shot(TamNasSpace(dataset="fashion_mnist")).double()
    rng = random.Random(5)
    archs = [random_architecture(rng) for _ in range(2)]
    x = fashion_mnist_batch()

    # Eval mode, as TRADES-YOPO attacks. The untrained BN running statistics leave each path's
    # logits at a different scale (std 5e-6 .. 1e-2 here), so the classifier is rescaled per path.
    supernet.eval()
    for arch in archs:
        activate(supernet, arch)
        assert_costate_identity(logits_of_std(supernet, x), x)

    # Train mode (batch statistics, as plain YOPO's passes and supernet training run): the logits
    # have the same scale on every path, so one classifier serves both architectures.
    supernet.train()
    activate(supernet, archs[0])
    logits_of_std(supernet, x)
    for arch in archs:
        activate(supernet, arch)
        eta, clean_probs, grad_kl = assert_costate_identity(supernet, x)
    # Negative control: the costate of the other active architecture (same layer one, same η) is
    # wrong -- not merely small.
    activate(supernet, archs[0])
    other, _ = kl_costate(supernet, x, eta, clean_probs)
    activate(supernet, archs[1])
    other_h, _ = input_gradients(supernet, x, eta, other, clean_probs)
    assert other_h.abs().max() > 0.1 * grad_kl.abs().max()
    assert relative_gap(other_h, -grad_kl) > 1e-2


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
    layer_one_calls = []
    handles.append(model.layer_one.register_forward_pre_hook(lambda *_: layer_one_calls.append(1)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    try:
        adversarial_step(model, x, y, opt, config, backward=lambda loss: (calls.append(1), loss.backward()))
    finally:
        for h in handles:
            h.remove()
    assert log == [False] + [True] * config.m  # clean metrics (eval), then m training passes
    assert len(calls) == config.m
    # Layer one ran for the clean metrics, the m full passes and n inner steps after each pass
    # but the last (whose η nothing would use).
    assert len(layer_one_calls) == 1 + config.m + (config.m - 1) * config.n
    # Layer one's BN counted the m full passes only, not the inner steps.
    assert int(stem_bn.num_batches_tracked) == before + config.m


def reference_yopo_step(
    model: nn.Module, x: Tensor, y: Tensor, *, lr: float, config: AdversarialConfig, generator: torch.Generator
) -> float:
    """YOPO-m-n written out as Zhang et al. (2019, Alg. 1) state it, CE loss averaged over the m passes.

    Independent of trainers.adversarial: gradients by ``torch.autograd.grad``, the inner steps on
    the Hamiltonian with the layer-one state restored afterwards, every pass -- the last one
    included -- followed by its n inner steps, and a plain SGD update ``θ ← θ − lr·ḡ``.
    Returns the mean CE of the m passes.
    """
    eps, sigma, m, n = config.epsilon, config.sigma, config.m, config.n
    params = list(model.parameters())
    model.train()
    x_adv = torch.clamp(x + (torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1) * eps, 0, 1)
    mean_grads = [torch.zeros_like(p) for p in params]
    losses = []
    for _ in range(m):
        z1 = model.layer_one(x_adv)
        loss = F.cross_entropy(model.forward_from_layer_one(z1), y)
        *grads, grad_z1 = torch.autograd.grad(loss, [*params, z1])
        for mean, grad in zip(mean_grads, grads, strict=True):
            mean += grad / m
        losses.append(loss.item())
        saved = copy.deepcopy(model.layer_one.state_dict())  # the inner steps leave BN statistics alone
        for _ in range(n):
            x_h = x_adv.detach().requires_grad_(True)
            (grad_h,) = torch.autograd.grad(hamiltonian(model.layer_one, x_h, -grad_z1), x_h)
            x_adv = torch.min(torch.max(x_h.detach() - sigma * grad_h.sign(), x - eps), x + eps).clamp(0, 1)
        model.layer_one.load_state_dict(saved)
    with torch.no_grad():
        for p, mean in zip(params, mean_grads, strict=True):
            p -= lr * mean
    return sum(losses) / m


@pytest.mark.parametrize(("m", "n"), [(3, 2), (1, 3)])
def test_plain_yopo_step_matches_the_reference_algorithm(m, n):
    """Skipping the last pass's inner steps changes nothing: same update, same BN statistics, same loss."""
    torch.manual_seed(0)
    x, y = make_synthetic(16, size=8)
    x = x.double()
    model = SmallCNN(1, 4, widths=(4, 8)).double()
    reference = copy.deepcopy(model)
    start = copy.deepcopy(model.state_dict())
    config = AdversarialConfig(method="yopo", m=m, n=n)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    metrics = adversarial_step(model, x, y, opt, config, generator=torch.Generator().manual_seed(4))
    expected_loss = reference_yopo_step(
        reference, x, y, lr=0.1, config=config, generator=torch.Generator().manual_seed(4)
    )
    assert metrics["loss"] == pytest.approx(expected_loss, rel=1e-12)
    ours, theirs = model.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], atol=1e-12, rtol=1e-10, msg=key)
    assert any(not torch.equal(ours[key], start[key]) for key in ours)  # the step did something
