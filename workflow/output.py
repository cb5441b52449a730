"""Small writers shared by the report, the statistics and ``gather``: CSV, Markdown, numbers."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from search_space.encoding import atomic_write_text
from trainers.tables import format_size


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """``rows`` as CSV (columns: ``columns`` or every key in first-seen order); floats keep every digit."""
    columns = list(columns or dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows([{c: _csv_value(row.get(c, "")) for c in columns} for row in rows])
    return buf.getvalue()


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]],
              columns: Sequence[str] | None = None) -> None:
    atomic_write_text(path, csv_text(rows, columns))


def _csv_value(v: Any) -> Any:
    return repr(v) if isinstance(v, float) else ("" if v is None else v)


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def fmt(v: float | None, digits: int = 2) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def size(params: Any) -> str:
    """``1.4296M`` / ``812.3K``; ``–`` when unknown."""
    return format_size(None if params in (None, "") else int(float(params)))


def standard_error_points(n: int) -> float:
    """Binomial standard error of an accuracy near 50 % on ``n`` images, in points: 50 / sqrt(n)."""
    return 50.0 / math.sqrt(n)


def images_caption(counts: Sequence[int | None]) -> str:
    """``256 test images per model (±3.1 points: binomial standard error at 50 %)``."""
    known = sorted({int(n) for n in counts if n})
    if not known:
        return "number of test images not recorded"
    n = known[0]
    text = f"{n}" if len(known) == 1 else f"{known[0]}–{known[-1]}"
    return (f"{text} test images per model (±{standard_error_points(n):.1f} points: the binomial standard "
            "error of an accuracy near 50 %)")
