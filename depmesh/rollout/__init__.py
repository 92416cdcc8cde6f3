"""Rollouts across teams: approvals, shadow and canary serving, A/B evidence."""
