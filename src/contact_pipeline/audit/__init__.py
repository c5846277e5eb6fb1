"""The audit trail: hash-chained entries of every applied change, their check and projection."""
