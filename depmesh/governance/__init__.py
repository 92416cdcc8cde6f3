"""Governance: the rules a mesh's stage changes obey (approvals, on-call, dependency conflicts, vulnerabilities)
and the one opener that hands every path a registry governed by them."""

from depmesh.governance.opener import govern, open_governed
from depmesh.governance.rules import MeshPolicy, policy_for

__all__ = ["MeshPolicy", "govern", "open_governed", "policy_for"]
