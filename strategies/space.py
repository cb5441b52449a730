"""Old home of the nnictl search space; it lives in :mod:`search_space.space` now.

Kept only so that code not yet moved keeps importing; import from ``search_space.space``.
"""

from search_space.space import check_search_space, nni_search_space

__all__ = ["check_search_space", "nni_search_space"]
