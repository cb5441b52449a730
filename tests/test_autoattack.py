"""AutoAttack in the retrain evaluation: the per-image worst case, the cascade, the presets and the column."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from trainers.evaluation import (
    EvaluationConfig,
    autoattack_attacks,
    autoattack_cascade,
    evaluate_robustness,
    worst_case_correct,
)
from trainers.tables import robustness_table

ROOT = Path(__file__).resolve().parents[1]


def test_worst_case_is_correct_under_clean_and_every_attack():
    clean = torch.tensor([1, 1, 1, 0, 1], dtype=torch.bool)
    a = torch.tensor([1, 0, 1, 1, 1], dtype=torch.bool)
    b = torch.tensor([1, 1, 0, 1, 1], dtype=torch.bool)
    assert worst_case_correct(clean, [a, b]).tolist() == [True, False, False, False, True]
    # an attack that "repairs" a misclassified image cannot make it robust: δ = 0 is in the ball
    assert not worst_case_correct(clean, [torch.ones(5, dtype=torch.bool)])[3]
    assert worst_case_correct(clean, []).tolist() == clean.tolist()
    with pytest.raises(ValueError, match="shape"):
        worst_case_correct(clean, [torch.ones(4, dtype=torch.bool)])


class _Identity(nn.Module):
    """Logits = the input's first 3 features: the class is fixed by the image."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)[:, :3]


class _Breaks:
    """A fake attack that breaks the images whose first pixel is in ``targets``; records what it saw."""

    def __init__(self, targets: set[int]):
        self.targets, self.seen = targets, []

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        self.seen.append(x[:, 0].tolist())
        out = x.clone()
        for i in range(len(x)):
            if int(x[i, 0]) in self.targets:
                out[i, 3:] = 0
                out[i, :3] = 0
                out[i, (int(y[i]) + 1) % 3] = 100  # another class wins
        return out


def test_cascade_attacks_only_the_images_still_robust():
    # image i: first feature i (its id), label given by a large logit; image 4 misclassified clean
    n = 6
    x = torch.zeros(n, 8)
    x[:, 0] = torch.arange(n, dtype=torch.float)
    y = torch.tensor([1, 1, 2, 2, 1, 2])
    for i in range(n):
        x[i, 3:] = 0
        x[i, int(y[i])] = 50
    x[4, 1], x[4, 0] = 0, 4  # image 4: class 0 wins (its logit 4 > 0), label 1
    model = _Identity()
    first, second = _Breaks({1}), _Breaks({2, 1})
    robust, after = autoattack_cascade(model, [("first", first), ("second", second)], x, y)
    assert robust.tolist() == [True, False, False, True, False, True]
    assert list(after) == ["first", "second"]
    assert after["first"].sum() == 4 and after["second"].sum() == 3  # cumulative, non-increasing
    assert first.seen == [[0, 1, 2, 3, 5]]  # the misclassified image 4 is never attacked
    assert second.seen == [[0, 2, 3, 5]]  # image 1, broken by the first, is not attacked again


@pytest.fixture(scope="module")
def tiny() -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    x = torch.rand(12, 1, 8, 8)
    y = (x.mean((1, 2, 3)) > x.mean()).long() + 2 * (x[:, 0, 0, 0] > 0.5).long()
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(60):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), x, y


def test_autoattack_standard_is_torchattacks_four_attacks_with_the_knobs(tiny):
    model, _, _ = tiny
    config = EvaluationConfig(epsilons=(0.1,), autoattack=True, autoattack_steps=3, autoattack_queries=7)
    attacks = autoattack_attacks(model, config, 0.1, 4)
    assert [name for name, _ in attacks] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert [a.steps for _, a in attacks[:3]] == [3, 3, 3] and attacks[3][1].n_queries == 7
    assert all(a.eps == pytest.approx(0.1) for _, a in attacks)
    default = autoattack_attacks(model, EvaluationConfig(autoattack=True), 0.1, 4)
    assert default[0][1].steps == 10 and default[3][1].n_queries == 5000  # torchattacks' own
    for key in ("autoattack_examples", "autoattack_steps", "autoattack_queries"):
        with pytest.raises(ValueError, match=key):
            EvaluationConfig(**{key: 0})


def test_autoattack_on_a_fixed_subset_is_a_worst_case_and_has_its_column(tiny):
    model, x, y = tiny
    config = EvaluationConfig(epsilons=(0.1,), steps=(3,), autoattack=True, autoattack_examples=7,
                              autoattack_steps=2, autoattack_queries=10, seed=1)
    loader = [(x[:5], y[:5]), (x[5:], y[5:])]  # the subset spans two batches
    result = evaluate_robustness(model, loader, config, progress=False)
    aa = result["autoattack"]
    assert result["num_examples"] == 12 and aa["num_examples"] == 7
    assert list(aa["after"]) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    series = list(aa["after"].values())
    assert all(b <= a for a, b in zip(series, series[1:], strict=False)) and aa["acc"] == series[-1]
    with torch.no_grad():
        clean_subset = float((model(x[:7]).argmax(1) == y[:7]).float().mean())
    assert aa["acc"] <= clean_subset
    assert (aa["epsilon"], aa["epsilon_label"], aa["version"]) == (pytest.approx(0.1), "0.1", "standard")
    assert evaluate_robustness(model, loader, config, progress=False)["autoattack"] == aa  # seeded
    # clean and PGD counted again on AutoAttack's 7 images, so the two compare like for like
    assert aa["clean_acc"] == pytest.approx(clean_subset)
    assert aa["pgd"]["steps"] == 3 and aa["pgd"]["epsilon"] == pytest.approx(0.1)
    assert round(7 * aa["pgd"]["acc"]) == pytest.approx(7 * aa["pgd"]["acc"])
    table = robustness_table({"tiny": result}, notation="plain").splitlines()
    assert table[0].rstrip(" |").endswith("pgd3@0.1 (AA's images) | autoattack@0.1")
    cells = [c.strip() for c in table[2].strip(" |").split("|")]
    assert cells[-2:] == [f"{100 * aa['pgd']['acc']:.2f}", f"{100 * aa['acc']:.2f}"]


def test_autoattack_on_every_image_has_the_grid_pgd_and_no_extra_column(tiny):
    model, x, y = tiny
    config = EvaluationConfig(epsilons=(0.05, 0.1), steps=(2, 3), autoattack=True, autoattack_steps=2,
                              autoattack_queries=10, seed=1)
    result = evaluate_robustness(model, [(x, y)], config, progress=False)
    aa = result["autoattack"]
    assert aa["num_examples"] == result["num_examples"] == 12
    assert aa["clean_acc"] == result["clean_acc"]
    pgd = {(r["steps"], r["epsilon"]): r["acc"] for r in result["pgd"]}
    assert aa["pgd"] == {"steps": 3, "epsilon": 0.1, "acc": pgd[(3, 0.1)]}  # AA's ε, the most steps
    assert "AA's images" not in robustness_table({"tiny": result}, notation="plain")
    off_grid = evaluate_robustness(model, [(x, y)], EvaluationConfig(
        epsilons=(0.05,), steps=(2,), autoattack=True, autoattack_epsilon=0.1, autoattack_steps=2,
        autoattack_queries=10), progress=False)
    assert off_grid["autoattack"]["pgd"] is None  # the grid has no PGD at AutoAttack's ε


def test_retrain_presets_run_autoattack():
    from trainers.config import load_config
    from trainers.retrain import RetrainConfig

    for name in ("cifar10", "svhn"):
        grid = load_config(ROOT / "configs" / "retrain" / f"{name}.yml", RetrainConfig).test_grid()
        assert grid.autoattack and grid.autoattack_examples is None and grid.examples is None  # all of the test split
        assert grid.autoattack_version == "standard" and grid.autoattack_steps == 100
    quick = load_config(ROOT / "configs" / "retrain" / "fashion_mnist_quick.yml", RetrainConfig).test_grid()
    assert quick.autoattack and quick.autoattack_examples == 100 <= quick.examples
    assert quick.autoattack_queries == 500


def test_report_results_carry_the_autoattack_epsilon(tmp_path):
    import json

    from workflow.results import read_result

    key = "-".join(["0:4"] * 16)
    test = {"num_examples": 10, "params": 5, "clean_acc": 0.5,
            "pgd": [{"epsilon": 0.05, "steps": 10, "acc": 0.4}, {"epsilon": 0.1, "steps": 10, "acc": 0.3}],
            "autoattack": {"epsilon": 0.05, "acc": 0.25, "num_examples": 4}}
    (tmp_path / "result.json").write_text(json.dumps({"architecture": key, "init": "scratch", "params": 5,
                                                      "clean_acc": 0.5, "adv_acc": 0.3, "test": test}))
    r = read_result(tmp_path / "result.json", "front")
    table = robustness_table([("x", r.evaluation())], notation="plain")
    assert "autoattack@0.05" in table.splitlines()[0] and "| 25.00 |" in table
    assert "AA's images" not in table  # a result without PGD on AutoAttack's images: no such column


def test_results_put_pgd_on_autoattacks_images_beside_it(tmp_path):
    import json

    from workflow.results import gather

    key = "-".join(["0:4"] * 16)
    pgd = [{"epsilon": 0.05, "steps": 10, "acc": 0.4}, {"epsilon": 0.1, "steps": 10, "acc": 0.3}]
    for name, aa in (("subset", {"epsilon": 0.1, "acc": 0.35, "num_examples": 4, "clean_acc": 0.5,
                                 "pgd": {"steps": 10, "epsilon": 0.1, "acc": 0.5}}),
                     ("all", {"epsilon": 0.1, "acc": 0.25, "num_examples": 10, "clean_acc": 0.5,
                              "pgd": {"steps": 10, "epsilon": 0.1, "acc": 0.3}})):
        d = tmp_path / name
        d.mkdir()
        test = {"num_examples": 10, "params": 5, "clean_acc": 0.5, "pgd": pgd, "autoattack": aa}
        (d / "result.json").write_text(json.dumps({"architecture": key, "init": "scratch", "params": 5,
                                                   "clean_acc": 0.5, "adv_acc": 0.3, "test": test}))
    csv, md, _ = gather([tmp_path / "subset"])
    assert "AutoAttack ran on the first 4 of them (±25.0 points)" in md
    assert "| pgd10@0.1 | pgd10@0.1 (AA's images) | autoattack@0.1 |" in md
    assert "| 30.00 | 50.00 | 35.00 |" in md  # AutoAttack above the grid's PGD, below PGD on its images
    assert csv.splitlines()[0].split(",")[-4:-2] == ["autoattack_examples", "autoattack_pgd"]
    csv, md, _ = gather([tmp_path / "all"])
    assert "AutoAttack ran" not in md and "AA's images" not in md and "autoattack_pgd" not in csv
