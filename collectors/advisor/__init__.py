"""Index advisor: from captured SQL text to index candidates (`candidates`), checked on PostgreSQL
with hypothetical indexes (`hypopg`) before anything is suggested. Nothing here executes captured
SQL: candidates come from parsing it, and validation only runs a plain EXPLAIN of a single SELECT."""
from collectors.advisor.candidates import Candidate, TableUse, candidates, columns_used

__all__ = ["Candidate", "TableUse", "candidates", "columns_used"]
