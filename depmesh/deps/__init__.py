"""Dependency governance: what each model version needs, conflicts between co-deployed versions, licenses and a
bill of materials, known vulnerabilities, and a container build context per release."""
