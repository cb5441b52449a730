from __future__ import annotations

import json
import random

import pytest

from search_space.encoding import (
    BLOCKS,
    NUM_LAYERS,
    RATIOS,
    STRIDE2_LAYERS,
    Architecture,
    ArchitectureError,
    SpaceConfig,
    allowed_blocks,
    front_to_dict,
    load_architecture,
    load_front,
    save_architecture,
    save_front,
)
from search_space.params import random_architecture


def test_table_xiv_encoding():
    assert len(BLOCKS) == 22 and [b.id for b in BLOCKS] == list(range(22))
    assert [b.kernel for b in BLOCKS[:18]] == [3, 5, 7] * 6
    assert {b.family for b in BLOCKS[0:3] + BLOCKS[6:9] + BLOCKS[12:15]} == {"shufflenetv2"}
    assert {b.family for b in BLOCKS[3:6] + BLOCKS[9:12] + BLOCKS[15:18]} == {"shuffle_xception"}
    assert all(b.non_local is None for b in BLOCKS[:6])
    assert all(b.non_local == "embedded_gaussian" for b in BLOCKS[6:12] + BLOCKS[18:20])
    assert all(b.non_local == "gaussian" for b in BLOCKS[12:18] + BLOCKS[20:22])
    assert [b.bn for b in BLOCKS[18:]] == [True, False, True, False]
    assert all(b.se for b in BLOCKS)
    assert RATIOS == (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0)


def test_stride2_rule_in_allowed_blocks():
    for i in range(NUM_LAYERS):
        allowed = allowed_blocks(i)
        if i in STRIDE2_LAYERS:
            assert allowed == tuple(range(18))
        else:
            assert allowed == tuple(range(22))


def test_sample_and_json_round_trip(tmp_path):
    rng = random.Random(0)
    space = SpaceConfig.for_dataset("cifar10", 2)
    for k in range(20):
        arch = random_architecture(rng)
        assert Architecture.from_sample(arch.to_sample()) == arch
        assert Architecture.from_genes(arch.genes) == arch
        path = tmp_path / f"a{k}.json"
        save_architecture(arch, path, space)
        assert load_architecture(path, space) == arch
        assert json.loads(path.read_text())["space"]["width_multiplier"] == 2


def test_nni_sends_integral_floats_as_ints():
    arch = Architecture.from_genes([(0, 4)] * NUM_LAYERS)  # ratio 1.0
    sample = {k: (int(v) if isinstance(v, float) and v.is_integer() else v) for k, v in arch.to_sample().items()}
    assert sample["ratio_0"] == 1 and isinstance(sample["ratio_0"], int)
    assert Architecture.from_sample(sample) == arch


def _arch_dict():
    return Architecture.from_genes([(1, 9)] * NUM_LAYERS).to_dict(SpaceConfig())


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["layers"].pop(), "layers: expected 16 layers, got 15"),
    (lambda d: d["layers"][3].update(block=22), "layers[3].block: 22"),
    (lambda d: d["layers"][3].update(block=-1), "layers[3].block: -1"),
    (lambda d: d["layers"][5].update(block="x"), "layers[5].block: 'x'"),
    (lambda d: d["layers"][7].update(ratio=0.3), "layers[7].ratio: ratio 0.3"),
    (lambda d: d["layers"][7].update(ratio="big"), "layers[7].ratio: 'big'"),
    (lambda d: d["layers"][4].update(block=19), "layers[4].block: 19 (NE+SE) is a pure robust block"),
    (lambda d: d["layers"][12].update(block=20), "layers[12].block: 20"),
    (lambda d: d["layers"].__setitem__(2, {"block": 1}), "layers[2]: expected"),
    (lambda d: d.update(format="other"), "format: expected 'tamnas-architecture'"),
    (lambda d: d.update(version=99), "version: unsupported version 99"),
    (lambda d: d["space"].update(dataset="imagenet"), "space.dataset: unknown data set 'imagenet'"),
    (lambda d: d["space"].update(width_multiplier=3), "space.width_multiplier: 3"),
    (lambda d: d["space"].update(in_channels=3), "space.in_channels: 3 does not match"),
    (lambda d: d["space"].update(dataset=["cifar10"]), "space.dataset: unknown data set ['cifar10']"),
    (lambda d: d.update(objectives={"adv_acc": "high"}), "objectives.adv_acc: 'high' is not a number"),
    (lambda d: d.update(objectives=[0.5]), "objectives: expected an object of numbers"),
    (lambda d: d.update(objectives={"clean_acc": 0.9, "adv_acc": float("nan")}),
     "objectives.adv_acc: nan is not a finite number"),
    (lambda d: d.update(objectives={"params": float("inf")}), "objectives.params: inf is not a finite number"),
    (lambda d: d.update(objectives={"params": -float("inf")}), "objectives.params: -inf is not a finite number"),
    (lambda d: d.update(version=True), "version: unsupported version True"),
    (lambda d: d.update(version=1.0), "version: unsupported version 1.0"),
    (lambda d: d.update(colour="red"), "unknown field(s) ['colour']"),
    (lambda d: d["layers"][6].update(name="WRONG"), "layers[6].name: 'WRONG' does not match block 1 (expected 'S-k5')"),
    (lambda d: d["layers"][6].update(name=None), "layers[6].name: None does not match block 1"),
    (lambda d: d["layers"][8].update(foo=1), "layers[8]: unknown field(s) ['foo']"),
])
def test_invalid_architectures_name_the_field(tmp_path, mutate, field):
    d = _arch_dict()
    mutate(d)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ArchitectureError) as e:
        load_architecture(path)
    assert str(path) in str(e.value)
    assert field in str(e.value)


def test_space_mismatch_is_refused(tmp_path):
    path = tmp_path / "a.json"
    save_architecture(Architecture.from_genes([(0, 0)] * NUM_LAYERS), path, SpaceConfig.for_dataset("cifar10"))
    with pytest.raises(ArchitectureError, match="belongs to"):
        load_architecture(path, SpaceConfig.for_dataset("fashion_mnist"))


def test_file_errors(tmp_path):
    with pytest.raises(ArchitectureError, match="file not found"):
        load_architecture(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ArchitectureError, match="not valid JSON"):
        load_architecture(tmp_path / "x.json")


def test_layer_names_may_be_left_out():
    d = _arch_dict()
    for layer in d["layers"]:
        del layer["name"]
    assert Architecture.from_dict(d) == Architecture.from_genes([(1, 9)] * NUM_LAYERS)


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s.pop("ratio_3"), "sample: missing key 'ratio_3'"),
    (lambda s: s.update(layer_4=19), "sample.layer_4: 19 (NE+SE) is a pure robust block, not allowed in stride-2 layer 4"),
    (lambda s: s.update(layer_2=22), "sample.layer_2: 22 is not a block id 0..21"),
    (lambda s: s.update(layer_2=True), "sample.layer_2: True is not a block id"),
    (lambda s: s.update(ratio_5=0.3), "sample.ratio_5: ratio 0.3 is not one of"),
    (lambda s: s.update(ratio_5=float("nan")), "sample.ratio_5: ratio nan is not one of"),
    (lambda s: s.update(ratio_5="1.0"), "sample.ratio_5: '1.0' is not a number"),
    (lambda s: s.update(layer_16=0), "sample: unknown key(s) ['layer_16']"),
])
def test_sample_errors(mutate, message):
    sample = Architecture.from_genes([(0, 0)] * NUM_LAYERS).to_sample()
    mutate(sample)
    with pytest.raises(ArchitectureError) as e:
        Architecture.from_sample(sample)
    assert str(e.value).startswith(message), str(e.value)
    with pytest.raises(ArchitectureError, match="sample: expected an object"):
        Architecture.from_sample([0, 1])


def test_front_round_trip(tmp_path):
    rng = random.Random(1)
    archs = [Architecture(a.blocks, a.ratios, objectives={"adv_acc": 0.5, "clean_acc": 0.8, "params": 1e6})
             for a in (random_architecture(rng) for _ in range(5))]
    space = SpaceConfig.for_dataset("svhn")
    save_front(tmp_path / "front.json", archs, space=space, experiment_id="abc")
    loaded, objectives, file_space = load_front(tmp_path / "front.json")
    assert loaded == archs and file_space == space
    assert [o.name for o in objectives] == ["adv_acc", "clean_acc", "params"]
    assert loaded[0].objectives == {"adv_acc": 0.5, "clean_acc": 0.8, "params": 1e6}
    d = json.loads((tmp_path / "front.json").read_text())
    d["architectures"][2]["layers"][0]["block"] = 21
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(ArchitectureError, match=r"architectures\[2\]\.layers\[0\]\.block: 21"):
        load_front(tmp_path / "bad.json")


def _front_dict():
    archs = [Architecture.from_genes([(b, 4)] * NUM_LAYERS) for b in (0, 3)]
    archs = [Architecture(a.blocks, a.ratios, objectives={"adv_acc": 0.4, "clean_acc": 0.7, "params": 1e5})
             for a in archs]
    return front_to_dict(archs, space=SpaceConfig(), source="search01", generation=3, seed=0, hypervolume=None)


def test_front_metadata_is_accepted(tmp_path):
    """``save_front(**meta)`` writes extra top-level keys (source, generation, ...): they are not refused."""
    (tmp_path / "f.json").write_text(json.dumps(_front_dict()))
    archs, objectives, space = load_front(tmp_path / "f.json")
    assert len(archs) == 2 and len(objectives) == 3 and space == SpaceConfig()


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(version=True), "version: unsupported version True"),
    (lambda d: d.update(format="tamnas-architecture"), "format: expected 'tamnas-front'"),
    (lambda d: d["space"].update(dataset="mnist"), "space.dataset: unknown data set 'mnist'"),
    (lambda d: d.update(objectives={"adv_acc": "max"}), "objectives: expected a list of {name, direction}"),
    (lambda d: d["objectives"][1].update(direction="up"), "objectives[1].direction: 'up' is not 'max' or 'min'"),
    (lambda d: d["objectives"][1].update(name=7), "objectives[1].name: 7 is not a non-empty string"),
    (lambda d: d["objectives"][2].update(name="adv_acc"), "objectives[2].name: 'adv_acc' is listed twice"),
    (lambda d: d["objectives"][0].update(weight=2), "objectives[0]: unknown field(s) ['weight']"),
    (lambda d: d.update(architectures={}), "architectures: expected a list"),
    (lambda d: d["architectures"][1].update(version=True), "architectures[1].version: unsupported version True"),
    (lambda d: d["architectures"][1]["layers"][2].update(name="WRONG"), "architectures[1].layers[2].name: 'WRONG'"),
    (lambda d: d["architectures"][1]["layers"][2].update(foo=1), "architectures[1].layers[2]: unknown field(s)"),
    (lambda d: d["architectures"][0]["objectives"].update(adv_acc=float("nan")),
     "architectures[0].objectives.adv_acc: nan is not a finite number"),
    (lambda d: d["architectures"][0]["space"].update(width_multiplier=2), "architectures[0].space: architecture belongs"),
])
def test_invalid_fronts_name_the_field(tmp_path, mutate, message):
    d = _front_dict()
    mutate(d)
    path = tmp_path / "front.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ArchitectureError) as e:
        load_front(path)
    assert str(e.value).startswith(f"{path}.{message}"), str(e.value)


def test_key_round_trip_and_errors():
    arch = random_architecture(random.Random(9))
    assert Architecture.from_key(arch.key) == arch
    for bad in ("", "1:2-3", "x:y" + "-0:0" * 15, "-".join(["0:10"] * 16)):
        with pytest.raises(ArchitectureError):
            Architecture.from_key(bad)


def test_candidate_subsets_are_validated_once_for_the_sampler_and_the_search():
    from search_space.encoding import block_subset, candidate_blocks, ratio_subset
    from strategies.config import NSGA2Config
    from trainers.sampler import PhaseConfig, SamplerConfig

    assert candidate_blocks(0, (0, 18, 6)) == (0, 6) and candidate_blocks(1, (0, 18, 6)) == (0, 6, 18)
    assert candidate_blocks(4) == tuple(range(18)) and len(candidate_blocks(5)) == 22
    assert block_subset(None) is None and block_subset([6, 0]) == (0, 6)
    assert ratio_subset([1, 0.8]) == (0.8, 1.0)
    phases = (PhaseConfig(epochs=1, param_range=(0, 1e9)),)
    for bad, match in [([18, 19], "leaves no candidate for stride-2 layer 0"), ([0, 0], "duplicate value"),
                       ([0, 22], "22 in .* is not a block id 0..21")]:
        msgs = []
        for make in (lambda b: SamplerConfig(phases=phases, blocks=b), lambda b: NSGA2Config(blocks=b)):
            with pytest.raises(ValueError, match="blocks: .*" + match) as e:
                make(bad)
            msgs.append(str(e.value))
        assert msgs[0] == msgs[1]


def test_genome_conversions_are_the_architectures():
    import numpy as np

    arch = random_architecture(random.Random(3))
    g = arch.genome
    assert g.dtype == np.int64 and g.shape == (NUM_LAYERS, 2)
    assert g.tolist() == [list(x) for x in arch.genes]
    assert Architecture.from_genome(g) == arch
    assert Architecture.key_of(g) == Architecture.key_of(arch.genes) == arch.key
    assert Architecture.from_key(arch.key).genome.tolist() == g.tolist()
    g[0, 0] = 19  # a pure robust block in a stride-2 layer: from_genome validates, key_of does not
    with pytest.raises(ArchitectureError, match=r"layers\[0\]\.block: 19"):
        Architecture.from_genome(g)
    assert Architecture.key_of(g).startswith("19:")


def test_the_facade_re_exports_the_modules_objects():
    import search_space.architecture as architecture
    import search_space.encoding as encoding
    import search_space.files as files
    import search_space.space as space

    for name in encoding.__all__:
        owners = [m for m in (space, architecture, files) if name in vars(m)]
        assert owners and getattr(encoding, name) is getattr(owners[0], name), name


def test_space_config_reads_the_data_set_registry():
    from search_space.datasets import DATASETS

    for name, spec in DATASETS.items():
        space = SpaceConfig.for_dataset(name, 4)
        assert (space.in_channels, space.num_classes, space.resolution) == (spec.in_channels, spec.num_classes,
                                                                            spec.resolution)
        assert SpaceConfig.from_dict(space.to_dict()) == space
    assert SpaceConfig() == SpaceConfig.for_dataset("fashion_mnist", 1)
    with pytest.raises(ArchitectureError, match=r"dataset: unknown data set 'mnist'; expected one of \['cifar10', "):
        SpaceConfig.for_dataset("mnist")


def test_load_architecture_picks_one_of_a_front(tmp_path):
    rng = random.Random(4)
    archs = [random_architecture(rng) for _ in range(3)]
    space = SpaceConfig.for_dataset("cifar10", 2)
    save_front(tmp_path / "f.json", archs, (), space)
    assert [load_architecture(tmp_path / "f.json", index=i) for i in range(3)] == archs
    assert load_architecture(tmp_path / "f.json", space, index=2) == archs[2]
    with pytest.raises(ArchitectureError, match=r"index 3 is out of range: the front holds 3 architecture\(s\), 0..2"):
        load_architecture(tmp_path / "f.json", index=3)
    with pytest.raises(ArchitectureError, match="front belongs to"):
        load_architecture(tmp_path / "f.json", SpaceConfig(), index=0)
    with pytest.raises(ArchitectureError, match="format: expected 'tamnas-architecture', got 'tamnas-front'"):
        load_architecture(tmp_path / "f.json")


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_outputs_get_the_mode_open_would_give(tmp_path, umask, mode):
    import os
    import stat

    from search_space.files import atomic_write_text

    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "out" / "a.txt", "x\n")
        save_architecture(random_architecture(random.Random(0)), tmp_path / "a.json")
    finally:
        os.umask(old)
    for name in ("out/a.txt", "a.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    assert (tmp_path / "out" / "a.txt").read_text() == "x\n"
    assert not [p for p in tmp_path.rglob(".*.tmp")]


def test_read_json_names_the_file_with_the_callers_error(tmp_path):
    from search_space.files import read_document, read_json

    class MyError(ValueError):
        pass

    (tmp_path / "a.json").write_text('{"a": [1, 2]}')
    assert read_json(tmp_path / "a.json") == {"a": [1, 2]}
    with pytest.raises(MyError, match=f"^{tmp_path / 'missing.json'}: file not found$"):
        read_json(tmp_path / "missing.json", MyError)
    (tmp_path / "b.json").write_text("[1,")
    with pytest.raises(ArchitectureError, match=r"b.json: not valid JSON \(Expecting value"):
        read_json(tmp_path / "b.json")
    assert read_document(tmp_path / "a.json", lambda f: f.read(), "text") == '{"a": [1, 2]}'
