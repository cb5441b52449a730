"""Which front architectures to retrain, and what to call them in every table and figure.

A search's front trades adversarial accuracy, clean accuracy and size off against each other;
``workflow lego --pick`` chooses one architecture per *role*: the best under attack, the best
clean and the smallest (an architecture that holds several roles is retrained once), plus the
LegoNet (``--without-legonet``: not the LegoNet); ``make demo`` retrains the best under attack.
Front members are labelled ``front #k`` (k = position in ``front.json``, from 1) with their
roles, e.g. ``front #3 (best adv, smallest)``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from search_space.encoding import Architecture

from .output import size

logger = logging.getLogger(__name__)

LEGONET = "LegoNet"


@dataclass(frozen=True)
class Role:
    """One reason to retrain a front member: the best by ``rank`` (higher first)."""

    name: str  # what --pick takes
    short: str  # in labels
    objectives: tuple[str, ...]
    rank: Callable[[dict[str, float]], tuple[float, ...]]
    why: Callable[[dict[str, float]], str]


ROLES: dict[str, Role] = {r.name: r for r in (
    Role("best-adv", "best adv", ("adv_acc", "clean_acc", "params"),
         lambda o: (o["adv_acc"], o["clean_acc"], -o["params"]),
         lambda o: f"best under attack on the search's front (adv_acc {o['adv_acc']:.3f})"),
    Role("best-clean", "best clean", ("clean_acc", "adv_acc", "params"),
         lambda o: (o["clean_acc"], o["adv_acc"], -o["params"]),
         lambda o: f"best clean accuracy on the search's front (clean_acc {o['clean_acc']:.3f})"),
    Role("smallest", "smallest", ("params", "adv_acc", "clean_acc"),
         lambda o: (-o["params"], o["adv_acc"], o["clean_acc"]),
         lambda o: f"fewest parameters on the search's front ({size(o['params'])})"),
)}
DEFAULT_ROLES = ("best-adv", "best-clean", "smallest")
LEGONET_WHY = "most frequent block and ratio per layer of the search's top-k subnets (paper §IV-E3)"


def parse_roles(text: str) -> tuple[str, ...]:
    """``"best-adv,smallest"`` → ``("best-adv", "smallest")``; ``ValueError`` on an unknown role."""
    roles = tuple(dict.fromkeys(r.strip() for r in text.split(",") if r.strip()))
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise ValueError(f"--pick: expected a comma-separated list of {', '.join(ROLES)}, got {text!r}")
    return roles


def front_roles(front: Sequence[Architecture], roles: Iterable[str] = DEFAULT_ROLES) -> dict[str, list[str]]:
    """Architecture key → the roles it holds (in ``roles`` order); ties go to the earlier front member."""
    held: dict[str, list[str]] = {}
    for name in roles:
        role = ROLES[name]
        usable = [a for a in front if all(k in a.objectives for k in role.objectives)]
        if not usable:
            logger.warning("no front architecture has the objectives %s: no %r architecture",
                           list(role.objectives), role.short)
            continue
        best = max(usable, key=lambda a: role.rank(a.objectives))  # max keeps the first of equals
        held.setdefault(best.key, []).append(name)
    return held


def front_labels(front: Sequence[Architecture], roles: Iterable[str] = DEFAULT_ROLES) -> dict[str, str]:
    """``front #k`` for every front member, with its roles: ``front #3 (best adv, smallest)``."""
    held = front_roles(front, roles)
    labels = {}
    for i, a in enumerate(front):
        suffix = f" ({', '.join(ROLES[r].short for r in held[a.key])})" if a.key in held else ""
        labels.setdefault(a.key, f"front #{i + 1}{suffix}")
    return labels


def reasons(front: Sequence[Architecture], roles: Iterable[str] = DEFAULT_ROLES) -> dict[str, str]:
    """Architecture key → why it is retrained (one clause per role it holds)."""
    by_key = {a.key: a for a in front}
    return {k: "; ".join(ROLES[r].why(by_key[k].objectives) for r in rs) for k, rs in front_roles(front, roles).items()}


def pick_front(front: Sequence[Architecture], roles: Sequence[str] = DEFAULT_ROLES) -> list[Architecture]:
    """One architecture per role (deduplicated, in role order), provenance with ``label``,
    ``chosen_as`` and ``why``: what ``retrain_front.json`` holds before the LegoNet."""
    held, labels, why = front_roles(front, roles), front_labels(front, roles), reasons(front, roles)
    by_key = {a.key: a for a in front}
    order = list(dict.fromkeys(k for r in roles for k, rs in held.items() if r in rs))
    return [Architecture(by_key[k].blocks, by_key[k].ratios, dict(by_key[k].objectives),
                         {**by_key[k].provenance, "label": labels[k], "chosen_as": held[k], "why": why[k]})
            for k in order]


def first_of_front(front: Sequence[Architecture], n: int) -> list[Architecture]:
    """The first ``n`` front members, labelled ``front #k``."""
    return [Architecture(a.blocks, a.ratios, dict(a.objectives),
                         {**a.provenance, "label": f"front #{i + 1}", "why": f"front member #{i + 1}"})
            for i, a in enumerate(front[:n])]


def with_legonet(picked: Sequence[Architecture], lego: Architecture) -> list[Architecture]:
    """``picked`` plus the LegoNet, once: a picked architecture that is the LegoNet says so in its label."""
    out = []
    for a in picked:
        if a.key == lego.key:
            prov = {**a.provenance, "label": f"{a.provenance.get('label', 'front')} = {LEGONET}",
                    "why": f"{a.provenance.get('why', '')}; also the {LEGONET}".lstrip("; ")}
            a = Architecture(a.blocks, a.ratios, dict(a.objectives), prov)
        out.append(a)
    if lego.key not in {a.key for a in picked}:
        k = lego.provenance.get("top_k")
        why = LEGONET_WHY.replace("top-k", f"top {k}") if k else LEGONET_WHY
        out.append(Architecture(lego.blocks, lego.ratios, dict(lego.objectives),
                                {**lego.provenance, "label": LEGONET, "why": why}))
    return out


def architecture_labels(front: Sequence[Architecture], others: Iterable[str], lego_key: str | None,
                        roles: Iterable[str] = DEFAULT_ROLES) -> dict[str, str]:
    """Front labels (:func:`front_labels`), ``LegoNet``, then ``R1``, ``R2``, ... for other retrained keys."""
    labels = front_labels(front, roles)
    if lego_key is not None:
        labels[lego_key] = LEGONET if lego_key not in labels else f"{labels[lego_key]} = {LEGONET}"
    n = 0
    for key in others:
        if key not in labels:
            n += 1
            labels[key] = f"R{n}"
    return labels


def short_label(label: str) -> str:
    """The label drawn next to a point: ``front #3 (best adv)`` → ``#3``; others unchanged."""
    return re.sub(r"^front (#\d+)(?: \([^)]*\))?", r"\1", label)
