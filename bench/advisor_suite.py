"""How often the index advisor agrees with its own suite of cases (tests/test_advisor_suite.py: views,
materialized views, partitions, CTEs, ORDER BY alias and several columns, joins, UPDATE/DELETE, and the
statements that must get nothing), with hypopg and with the statistics heuristic, on a throwaway cluster.

Each case is advised alone; it agrees when the recommendations are exactly the index it expects (or
none, for the cases that must get none) and nothing failed. Prints only; asserts nothing. To compare
with an earlier tree, put that tree first on the path:

    .venv/bin/python bench/advisor_suite.py
    PYTHONPATH=/tmp/before .venv/bin/python bench/advisor_suite.py     # e.g. git archive <rev> | tar -x -C /tmp/before
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))     # appended: a tree given on PYTHONPATH comes first

from collectors.advisor.advise import Settings, advise  # noqa: E402
from collectors.advisor.model import Statement  # noqa: E402
from tests.pg import PgCluster  # noqa: E402

spec = importlib.util.spec_from_file_location("advisor_suite", ROOT / "tests" / "test_advisor_suite.py")
suite = importlib.util.module_from_spec(spec)
spec.loader.exec_module(suite)


def main() -> None:
    import collectors.advisor.advise as tree
    print(f"advisor from {Path(tree.__file__).parent.parent.parent}")
    cluster = PgCluster().init()
    try:
        for method in ("hypopg", "heuristic"):
            url = cluster.create_database(f"suite_{method}")
            with cluster.connect(f"suite_{method}") as con:
                if method == "hypopg":
                    con.execute("CREATE EXTENSION hypopg")
                for statement in suite.SCHEMA:
                    con.execute(statement)
            agree = 0
            for text, (table, want) in suite.CASES:
                report = advise(url, [Statement(text, 100, 100_000.0, key=text)], settings=Settings(min_ms_per_day=0))
                got = [(r.table, tuple(r.columns)) for r in report.recommendations]
                want = want[method] if isinstance(want, dict) else want
                ok = (not got if table is None else got == [(table, want)]) and not report.failed
                agree += ok
                if not ok:
                    failed = [reason[:70] for _, reason in report.failed]
                    print(f"  {method} misses {text[:70]!r}: got {got}{f', failed {failed}' if failed else ''}")
            print(f"{method}: agrees on {agree} of {len(suite.CASES)} cases")
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
