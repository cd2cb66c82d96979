"""The audit trail: a hash-chained, append-only record of every change, and its search."""
