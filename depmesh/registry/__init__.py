"""The model registry: versions, stages, releases, audit trail, model cards."""

from depmesh.registry.store import (
    PromotionConflict,
    Registry,
    RegistryError,
    RegistryReadOnly,
    RollbackRefused,
    default_url,
)

__all__ = ["PromotionConflict", "Registry", "RegistryError", "RegistryReadOnly", "RollbackRefused", "default_url"]
