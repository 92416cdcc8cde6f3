"""A CycloneDX bill of materials per release (cyclonedx-python-lib): the release's models as machine-learning
model components with their artifact hashes, and every library they need to load and predict, pinned at the
locked version, with its license."""

from __future__ import annotations

from typing import Any


def release_sbom(mesh: str, release: dict[str, Any], versions: dict[str, dict[str, Any]],
                 lock: dict[str, dict[str, Any]]) -> str:
    from cyclonedx.model import HashAlgorithm, HashType
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.license import LicenseExpression
    from cyclonedx.output import make_outputter
    from cyclonedx.schema import OutputFormat, SchemaVersion
    from packageurl import PackageURL

    from depmesh.deps.licenses import license_of

    bom = Bom()
    bom.metadata.component = Component(name=f"{mesh}-release-{release['id']}", type=ComponentType.APPLICATION,
                                       version=str(release["id"]), bom_ref=f"release-{release['id']}")
    libraries: dict[str, str] = {}
    for node, version in sorted(release["members"].items()):
        record = versions[node]
        needs = (record.get("requirements") or {}).get("closure") or {}
        libraries.update(needs)
        model = Component(name=node, version=version, type=ComponentType.MACHINE_LEARNING_MODEL,
                          bom_ref=f"model:{node}@{version}",
                          hashes=[HashType(alg=HashAlgorithm.SHA_256, content=record["artifact_hash"])])
        bom.components.add(model)
    refs = {}
    for name, version in sorted(libraries.items()):
        package = lock.get(name, {"name": name})
        spdx = license_of(name)["spdx"]
        component = Component(name=package["name"], version=version, type=ComponentType.LIBRARY,
                              bom_ref=f"pypi:{name}@{version}", purl=PackageURL("pypi", name=name, version=version),
                              licenses=[LicenseExpression(spdx)] if spdx else None)
        bom.components.add(component)
        refs[name] = component
    models = [c for c in bom.components if c.type == ComponentType.MACHINE_LEARNING_MODEL]
    bom.register_dependency(bom.metadata.component, models)  # the release is its models
    for node, version in sorted(release["members"].items()):
        model = next(c for c in bom.components if str(c.bom_ref) == f"model:{node}@{version}")
        direct = (versions[node].get("requirements") or {}).get("direct") or {}
        bom.register_dependency(model, [refs[d] for d in direct if d in refs])
    return make_outputter(bom, OutputFormat.JSON, SchemaVersion.V1_6).output_as_string(indent=2)
