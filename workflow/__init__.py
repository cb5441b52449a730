"""The TAM-NAS workflow on top of the algorithms: the end-to-end pipeline and its nnictl driver,
the search-config check, the results readers and tables, top-k statistics and LegoNet from a
search, which front architectures to retrain, and the analysis report with its figures.

Layers (docs/architecture.md §2): ``workflow`` → (``strategies``, ``trainers``) → ``search_space``;
nothing imports ``workflow``. Entry point: ``python -m workflow pipeline|report|lego|gather|check``.
"""
