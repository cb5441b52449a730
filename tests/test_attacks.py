"""Tests of the PGD attacks, the TRADES loss and the evaluation grid (trainers.attacks, trainers.evaluation)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
import torchattacks
from torch import Tensor, nn

from trainers.attacks import check_attack_settings, pgd_attack, trades_attack, trades_kl, trades_loss
from trainers.evaluation import (
    DATASET_EPSILONS,
    PAPER_EPSILONS,
    EvaluationConfig,
    epsilon_label,
    evaluate_robustness,
    robustness_table,
)
from trainers.models import SmallCNN

EPS = 8 / 255
ALPHA = 2 / 255


# ---------------------------------------------------------------- helpers shared by the adversarial tests


def make_synthetic(
    n: int, *, num_classes: int = 4, size: int = 16, noise: float = 0.25, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Learnable grey-level images in [0, 1]: a smooth template per class plus Gaussian noise."""
    g = torch.Generator().manual_seed(1234)  # same templates for every split
    templates = torch.rand(num_classes, 1, size // 4, size // 4, generator=g)
    templates = F.interpolate(templates, size=size, mode="bilinear", align_corners=False)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, num_classes, (n,), generator=g)
    x = (0.5 * templates[y] + 0.25 + noise * torch.randn(n, 1, size, size, generator=g)).clamp(0, 1)
    return x, y


def train_clean(model: nn.Module, x: Tensor, y: Tensor, *, epochs: int = 4, batch: int = 64) -> nn.Module:
    """A few epochs of plain SGD; returns the model in eval mode."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for _ in range(epochs):
        for i in range(0, len(x), batch):
            loss = F.cross_entropy(model(x[i : i + batch]), y[i : i + batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    x, y = make_synthetic(1024)
    model = train_clean(SmallCNN(1, 4, widths=(8, 16, 32)), x, y)
    x_test, y_test = make_synthetic(128, seed=1)
    assert accuracy(model, x_test, y_test) > 0.8, "the fixture model should have learned the synthetic task"
    return model, x_test, y_test


# ---------------------------------------------------------------- PGD vs torchattacks


def test_pgd_matches_torchattacks_pgd(trained):
    model, x, y = trained
    torch.manual_seed(7)
    ours = pgd_attack(model.eval(), x, y, epsilon=EPS, step_size=ALPHA, steps=10)
    torch.manual_seed(7)
    theirs = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=10, random_start=True)(x, y)
    acc_ours, acc_theirs = accuracy(model, ours, y), accuracy(model, theirs, y)
    assert abs(acc_ours - acc_theirs) <= 0.01
    assert acc_ours < accuracy(model, x, y)  # the attack does something
    # Same random start, same updates: the examples agree up to float rounding.
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


def test_trades_attack_matches_torchattacks_tpgd(trained):
    model, x, y = trained
    torch.manual_seed(3)
    ours = trades_attack(model.eval(), x, epsilon=EPS, step_size=ALPHA, steps=10)
    torch.manual_seed(3)
    theirs = torchattacks.TPGD(model, eps=EPS, alpha=ALPHA, steps=10)(x)
    assert abs(accuracy(model, ours, y) - accuracy(model, theirs, y)) <= 0.01
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


def test_attacks_stay_in_ball_and_box_and_leave_params_alone(trained):
    model, x, y = trained
    gen = torch.Generator().manual_seed(0)
    for x_adv in (
        pgd_attack(model, x, y, epsilon=EPS, step_size=ALPHA, steps=3, generator=gen),
        trades_attack(model, x, epsilon=EPS, step_size=ALPHA, steps=3, generator=gen),
    ):
        assert (x_adv - x).abs().max() <= EPS + 1e-6
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        assert not x_adv.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert not model.training  # the attack does not change the mode


def test_pgd_is_reproducible_with_a_generator(trained):
    model, x, y = trained
    a = pgd_attack(
        model, x, y, epsilon=EPS, step_size=ALPHA, steps=2, generator=torch.Generator().manual_seed(5)
    )
    b = pgd_attack(
        model, x, y, epsilon=EPS, step_size=ALPHA, steps=2, generator=torch.Generator().manual_seed(5)
    )
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"epsilon": -0.1, "step_size": ALPHA, "steps": 10}, "epsilon"),
        ({"epsilon": math.nan, "step_size": ALPHA, "steps": 10}, "epsilon"),
        ({"epsilon": 2.0, "step_size": ALPHA, "steps": 10}, "epsilon"),
        ({"epsilon": EPS, "step_size": 0.0, "steps": 10}, "step_size"),
        ({"epsilon": EPS, "step_size": ALPHA, "steps": 0}, "steps"),
        ({"epsilon": EPS, "step_size": ALPHA, "steps": 2.5}, "steps"),
    ],
)
def test_invalid_attack_settings_name_the_setting(kwargs, name):
    with pytest.raises(ValueError, match=name) as info:
        check_attack_settings(**kwargs)
    assert repr(kwargs[name]) in str(info.value)


# ---------------------------------------------------------------- TRADES loss


def test_trades_loss_is_ce_plus_kl_over_lambda():
    torch.manual_seed(0)
    clean, adv, y = torch.randn(8, 5), torch.randn(8, 5), torch.randint(0, 5, (8,))
    p, log_p, log_q = F.softmax(clean, 1), F.log_softmax(clean, 1), F.log_softmax(adv, 1)
    kl = (p * (log_p - log_q)).sum(1).mean()
    out = trades_loss(clean, adv, y, trades_lambda=0.5)
    torch.testing.assert_close(out.robust, kl)
    torch.testing.assert_close(out.natural, F.cross_entropy(clean, y))
    torch.testing.assert_close(out.total, F.cross_entropy(clean, y) + kl / 0.5)
    assert trades_kl(clean, clean).abs() < 1e-6
    with pytest.raises(ValueError, match="trades_lambda"):
        trades_loss(clean, adv, y, trades_lambda=0.0)


def test_trades_kl_gradients_stay_finite_on_confident_logits():
    """A clean probability that underflows to 0 (logit gap 120) must not give NaN gradients.

    ``kl_div(log q, softmax(clean))`` did: ∂/∂p = log 0 = -inf, times the softmax Jacobian's 0 —
    a finite loss with a NaN gradient, which stopped the CIFAR-10 supernet training on a GPU.
    """
    clean = torch.tensor([[0.0, 120.0, 3.0], [2.0, -1.0, 0.5]], requires_grad=True)
    adv = torch.tensor([[1.0, 110.0, 2.0], [1.0, 0.0, 0.0]], requires_grad=True)
    for reduction in ("batchmean", "sum", "none"):
        clean.grad = adv.grad = None
        trades_kl(clean, adv, reduction=reduction).sum().backward()
        assert torch.isfinite(clean.grad).all() and torch.isfinite(adv.grad).all(), reduction
    # where the old formula was finite, values and gradients are the same
    c, a = torch.randn(16, 10, dtype=torch.float64), torch.randn(16, 10, dtype=torch.float64)
    for x in (c, a):
        x.requires_grad_()
    new = trades_kl(c, a)
    old = F.kl_div(F.log_softmax(a, 1), F.softmax(c, 1), reduction="batchmean")
    torch.testing.assert_close(new, old)
    torch.testing.assert_close(torch.autograd.grad(new, (c, a)), torch.autograd.grad(old, (c, a)))


# ---------------------------------------------------------------- evaluation grid

SMALL_GRID = EvaluationConfig(epsilons=(2 / 255, 4 / 255, 8 / 255), steps=(5, 10, 20))


@pytest.fixture(scope="module")
def grid_result(trained) -> dict:
    model, x, y = trained
    loader = [(x[:64], y[:64]), (x[64:], y[64:])]
    return evaluate_robustness(model.eval(), loader, SMALL_GRID, progress=False)


def test_robust_accuracy_at_most_clean_and_monotone(grid_result):
    clean = grid_result["clean_acc"]
    acc = {(r["steps"], r["epsilon"]): r["acc"] for r in grid_result["pgd"]}
    tol = 0.02  # random starts differ between runs
    assert all(a <= clean + 1e-9 for a in acc.values())
    for steps in SMALL_GRID.steps:  # larger ε never helps
        series = [acc[(steps, e)] for e in SMALL_GRID.epsilons]
        assert all(b <= a + tol for a, b in zip(series, series[1:], strict=False)), series
    for eps in SMALL_GRID.epsilons:  # more steps never help
        series = [acc[(s, eps)] for s in SMALL_GRID.steps]
        assert all(b <= a + tol for a, b in zip(series, series[1:], strict=False)), series
    assert acc[(20, 8 / 255)] < clean - 0.05  # and the attack actually bites


def test_evaluation_result_is_json_with_numbers(grid_result):
    text = json.dumps(grid_result, allow_nan=False)
    back = json.loads(text)
    assert back["num_examples"] == 128 and isinstance(back["params"], int)
    assert isinstance(back["clean_acc"], float)
    assert len(back["pgd"]) == 9
    for record in back["pgd"]:
        assert isinstance(record["acc"], float) and 0 <= record["acc"] <= 1
        assert isinstance(record["epsilon"], float) and isinstance(record["steps"], int)
    assert back["autoattack"] is None


def test_markdown_table_in_paper_layout(grid_result):
    table = robustness_table({"S": grid_result, "T": grid_result})
    header, rule, row, _ = table.splitlines()
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells[:3] == ["Model", "Size", "Clean"]
    assert cells[3:] == [f"$P^{{{s}}}_{{{e}/255}}$" for s in (5, 10, 20) for e in (2, 4, 8)]
    assert rule.count("---") == len(cells)
    row_cells = [c.strip() for c in row.strip("|").split("|")]
    assert row_cells[0] == "S" and row_cells[1].endswith("K")
    assert float(row_cells[2]) == pytest.approx(100 * grid_result["clean_acc"], abs=0.01)


def test_evaluation_warns_in_train_mode_and_restores_it(trained):
    model, x, y = trained
    config = EvaluationConfig(epsilons=(EPS,), steps=(1,))
    model.train()
    try:
        bn = model.layer_one[0][1]
        before = bn.running_mean.clone()
        with pytest.warns(UserWarning, match="train mode"):
            evaluate_robustness(model, [(x[:16], y[:16])], config, progress=False)
        assert model.training
        assert torch.equal(bn.running_mean, before)  # evaluated in eval mode
    finally:
        model.eval()


def test_evaluation_is_seeded(trained):
    model, x, y = trained
    config = EvaluationConfig(epsilons=(EPS,), steps=(2,), seed=11)
    a = evaluate_robustness(model, [(x, y)], config, progress=False)
    b = evaluate_robustness(model, [(x, y)], config, progress=False)
    assert a["pgd"] == b["pgd"]


def test_evaluation_config_validation_and_dataset_grids():
    with pytest.raises(ValueError, match="evaluation.epsilon"):
        EvaluationConfig(epsilons=(-1 / 255,))
    with pytest.raises(ValueError, match="evaluation.steps"):
        EvaluationConfig(steps=(10, 0))
    with pytest.raises(ValueError, match="autoattack_version"):
        EvaluationConfig(autoattack_version="fast")
    with pytest.raises(ValueError, match="unknown data set"):
        EvaluationConfig.for_dataset("imagenet")
    fmnist = EvaluationConfig.for_dataset("Fashion-MNIST", steps=(10,))
    assert fmnist.epsilons[-1] == pytest.approx(0.1) and fmnist.steps == (10,)
    assert EvaluationConfig.for_dataset("cifar10").epsilons == PAPER_EPSILONS == DATASET_EPSILONS["svhn"]
    assert epsilon_label(8 / 255) == "8/255" and epsilon_label(0.1) == "0.1"


def test_one_evaluation_config_reads_the_old_probe_and_grid_keys(caplog):
    from trainers.config import build_config

    old_probe = {"epsilon": 0.1, "step_size": 0.025, "steps": 10, "bn_recalibration_batches": 3}
    with caplog.at_level("WARNING"):
        cfg = build_config(EvaluationConfig, old_probe, "v.yml: validation")
    assert (cfg.epsilons, cfg.steps, cfg.bn_batches) == ((0.1,), (10,), 3)
    assert cfg.step_size_ratio == pytest.approx(0.25)
    assert "v.yml: validation.bn_recalibration_batches is deprecated: write bn_batches" in caplog.text
    assert build_config(EvaluationConfig, {"test_subset": 8}).examples == 8
    assert EvaluationConfig().epsilons is None  # the caller's default: the data set's grid or the training ε
    assert EvaluationConfig().with_default_epsilons((0.1,)).epsilons == (0.1,)
    assert EvaluationConfig(epsilons=(EPS,)).with_default_epsilons((0.1,)).epsilons == (EPS,)
    assert EvaluationConfig(epsilons=(EPS,), steps=(10,)).single_attack() == (EPS, 10)
    with pytest.raises(ValueError, match="epsilons is None"):
        evaluate_robustness(nn.Linear(1, 1), [], EvaluationConfig())
    with pytest.raises(ValueError, match="bn_batches"):
        EvaluationConfig(bn_batches=-1)
    assert EvaluationConfig(epsilons=(EPS,), steps=(10,)).to_dict()["epsilons"] == [EPS]


@pytest.mark.slow
def test_autoattack_option_is_no_weaker_than_pgd(trained):
    model, x, y = trained
    config = EvaluationConfig(epsilons=(EPS,), steps=(10,), autoattack=True)
    result = evaluate_robustness(model, [(x[:32], y[:32])], config, progress=False)
    assert result["autoattack"]["epsilon"] == pytest.approx(EPS)
    assert result["autoattack"]["acc"] <= result["pgd"][0]["acc"] + 1 / 32
    assert "AA$_{8/255}$" in robustness_table({"S": result})
