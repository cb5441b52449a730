"""Sweep of readings of Table I against the paper's sizes (README "Model sizes", the prose under the table).

Formula-only (no model is built) and for readings beyond the offered ones (search_space.space.READINGS,
whose parameter tables the tests hold exact): SE reduction (4, 16), the non-local inner width
(half_ratio = round(C/2*r), half = C/2, full_ratio = round(C*r), full = C), what the channel ratio
scales in ShuffleNet blocks (out2 = out/2, oup = main-branch output, out = block output), whether the
width multiplier scales the stem / the head, and the head's SE row (se176_920 = SE(176) then conv 920;
920_se920 = conv 920 then SE(920); se176h920 = SE(176) with 920 hidden; se176_1024 = no 920 conv).

    python -m benchmarks.size_readings ["PYTHON FILTER on r"]   # e.g. "r[1]['whead']"

Prints the closest combinations to the LegoNet's 2.1546M (width 2, CIFAR-10) first.
"""

from __future__ import annotations

import itertools
import sys

from search_space.legonet import legonet_from_files
from search_space.space import (
    BLOCKS,
    NUM_LAYERS,
    RATIOS,
    STAGE_CHANNELS,
    STAGE_REPEATS,
    allowed_blocks,
    layer_stride,
)

PAPER_LEGONET_2X = 2_154_600
BLOCK_PHASE = (1_823_000, 2_375_000)


def _sc(base: int, r: float) -> int:
    return max(1, round(base * r))


def _conv(ci: int, co: int, k: int = 1, g: int = 1, b: bool = False) -> int:
    return co * (ci // g) * k * k + (co if b else 0)


def _bn(c: int) -> int:
    return 2 * c


def make(k: dict) -> tuple:
    """(params of an architecture at width w, (min, max) at width w over ``ratios``) for knobs ``k``."""
    def se(c: int) -> int:
        h = max(8, c // k["red"])
        return _conv(c, h, b=True) + _conv(h, c, b=True)

    def non_local(c: int, inner: int, emb: bool, bn: bool) -> int:
        return (3 if emb else 1) * _conv(c, inner, b=True) + _conv(inner, c, b=True) + (_bn(c) if bn else 0)

    def inner_of(c: int, r: float) -> int:
        return {"half_ratio": _sc(c // 2, r), "half": c // 2, "full_ratio": _sc(c, r), "full": c}[k["nl"]]

    def block(bid: int, cin: int, cout: int, s: int, r: float) -> int:
        sp = BLOCKS[bid]
        if sp.is_pure_robust:
            return non_local(cin, inner_of(cin, r), sp.non_local == "embedded_gaussian", sp.bn) + se(cin)
        ch = cin if s == 2 else cin // 2
        oup = cout - ch
        mid = _sc({"out2": cout // 2, "oup": oup, "out": cout}[k["mid"]], r)

        def dw(c: int) -> int:
            return _conv(c, c, sp.kernel, g=c) + _bn(c)

        def pw(a: int, b: int) -> int:
            return _conv(a, b) + _bn(b)

        if sp.family == "shuffle_xception":
            n = dw(ch) + pw(ch, mid) + dw(mid) + pw(mid, mid) + dw(mid) + pw(mid, oup)
        else:
            n = pw(ch, mid) + dw(mid) + pw(mid, oup)
        if sp.non_local:
            n += non_local(oup, inner_of(oup, r), sp.non_local == "embedded_gaussian", True)
        n += se(oup)
        if s == 2:
            n += dw(ch) + pw(ch, ch)
        return n

    def fixed(w: int) -> tuple[int, list]:
        stem = 24 * (w if k["wstem"] else 1)
        cin, total, rows = stem, _conv(3, stem, 3) + _bn(stem), []
        for st, rep in enumerate(STAGE_REPEATS):
            cout = STAGE_CHANNELS[st] * w
            for _ in range(rep):
                rows.append((cin, cout))
                cin = cout
        hw = w if k["whead"] else 1
        c1, c2 = 176 * hw, 920 * hw
        h = _conv(cin, c1) + _bn(c1) + 1024 * 10 + 10
        h += {"se176_920": se(c1) + _conv(c1, c2, b=True) + _conv(c2, 1024, b=True),
              "920_se920": _conv(c1, c2, b=True) + se(c2) + _conv(c2, 1024, b=True),
              "se176h920": _conv(c1, c2, b=True) + _conv(c2, c1, b=True) + _conv(c1, 1024, b=True),
              "se176_1024": se(c1) + _conv(c1, 1024, b=True)}[k["head"]]
        return total + h, rows

    def arch_params(a, w: int) -> int:
        total, rows = fixed(w)
        return total + sum(block(b, *rows[i], layer_stride(i), r)
                           for i, (b, r) in enumerate(zip(a.blocks, a.ratios, strict=True)))

    def interval(w: int, ratios=RATIOS) -> tuple[int, int]:
        total, rows = fixed(w)
        lo = hi = total
        for i in range(NUM_LAYERS):
            v = [block(b, *rows[i], layer_stride(i), r) for b in allowed_blocks(i) for r in ratios]
            lo, hi = lo + min(v), hi + max(v)
        return lo, hi

    return arch_params, interval


def main(argv: list[str]) -> int:
    lego = legonet_from_files()
    keep = argv[0] if argv else "True"
    rows = []
    for red, nl, mid, wstem, whead, head in itertools.product(
            [4, 16], ["half_ratio", "half", "full_ratio", "full"], ["out2", "oup", "out"], [False, True],
            [False, True], ["se176_920", "920_se920", "se176h920", "se176_1024"]):
        k = {"red": red, "nl": nl, "mid": mid, "wstem": wstem, "whead": whead, "head": head}
        ap, iv = make(k)
        l1, l2 = ap(lego, 1), ap(lego, 2)
        rows.append((abs(l2 / PAPER_LEGONET_2X - 1), k, l1, l2, iv(1, [1.0]), iv(1), iv(2)))
    rows.sort(key=lambda r: r[0])

    def m(x: float) -> str:
        return f"{x / 1e6:.3f}"

    for r in [r for r in rows if eval(keep, {"r": r})][:40]:  # noqa: S307 (a filter typed by the user)
        _, k, l1, l2, b1, s1, s2 = r
        reach = b1[1] >= BLOCK_PHASE[0] and b1[0] <= BLOCK_PHASE[1]
        print(f"red {k['red']:2d} nl {k['nl']:10s} mid {k['mid']:4s} stem x{int(k['wstem'])} head x{int(k['whead'])} "
              f"{k['head']:10s} LegoNet 1x {m(l1)} 2x {m(l2)} ({100 * (l2 / PAPER_LEGONET_2X - 1):+.1f} %, "
              f"growth {100 * (l2 / l1 - 1):+.1f} %) ratio 1.0 at 1x {m(b1[0])}-{m(b1[1])} {'OK' if reach else '--'} "
              f"1x {m(s1[0])}-{m(s1[1])} 2x {m(s2[0])}-{m(s2[1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
