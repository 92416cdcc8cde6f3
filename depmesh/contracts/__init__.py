"""Contracts: catalog contract -> GX 1.x rules -> blocking Dagster asset checks, and contract diffs."""
