"""Signed approvals: an approval carries an ed25519 signature, by the approver's
key, over the request it approves.

teams.yaml gives a member a public key in OpenSSH form (the line of
``~/.ssh/id_ed25519.pub``)::

    signatures: required          # optional: every approval must be signed
    teams:
      delay-models:
        members:
          eli: {roles: [owner, on-call], key: "ssh-ed25519 AAAAC3Nza... eli@laptop"}

The signed payload (``depmesh release payload REQUEST`` prints it) is a
canonical JSON of the mesh, the request and release ids, each member's
version and artifact hash, the impact the approval was asked for (the
required teams, their nodes and why), the decision and the approver: a
signature made for one request does not verify for another, nor for the same
release once a member's version or artifact changed. ``depmesh release
approve REQUEST --key ~/.ssh/id_ed25519`` signs with a private key (OpenSSH
or PKCS#8; a passphrase from ``$DEPMESH_KEY_PASSPHRASE``); ``--signature``
takes one made elsewhere (base64 of the 64-byte ed25519 signature).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path
from typing import Any

PAYLOAD_KIND = "depmesh-approval/1"
PASSPHRASE_ENV = "DEPMESH_KEY_PASSPHRASE"


class SignatureError(ValueError):
    """A key or a signature that cannot be used, named."""


def public_key(line: str, *, who: str = "") -> Any:
    """An Ed25519 public key from an OpenSSH line (``ssh-ed25519 AAAA... comment``)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key

    if not isinstance(line, str) or not line.startswith("ssh-ed25519 "):
        raise SignatureError(f"{who or 'a key'}: expected an OpenSSH ed25519 public key ('ssh-ed25519 AAAA...')")
    try:
        key = load_ssh_public_key(" ".join(line.split()[:2]).encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise SignatureError(f"{who or 'a key'}: not a valid OpenSSH public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{who or 'a key'}: not an ed25519 key")
    return key


def payload(registry: Any, request: dict[str, Any], *, actor: str, decision: str = "approve",
            conn: Any = None) -> bytes:
    """The bytes an approval signs (see the module's text)."""
    release = registry._release(conn, request["release_id"]) if conn is not None else \
        registry.release(request["release_id"])
    members = {}
    for node, version in sorted(release["members"].items()):
        info = registry._version(conn, node, version) if conn is not None else registry.version(node, version)
        members[node] = {"version": version, "artifact_hash": (info or {}).get("artifact_hash")}
    body = {"kind": PAYLOAD_KIND, "mesh": registry.mesh, "request": int(request["id"]),
            "release": int(request["release_id"]), "requested_by": request["requested_by"],
            "rollout": request.get("rollout"), "members": members,
            "impact": [{"team": r["team"], "nodes": sorted(r["nodes"]), "why": list(r["why"])}
                       for r in request["required"]],
            "decision": decision, "actor": actor}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")


def sign(key_path: str | Path, data: bytes) -> str:
    """Base64 ed25519 signature of ``data`` with the private key at ``key_path``."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        load_pem_private_key,
        load_ssh_private_key,
    )

    path = Path(key_path).expanduser()
    try:
        raw = path.read_bytes()[:100_000]
    except OSError as exc:
        raise SignatureError(f"cannot read the private key {path}: {exc.strerror}") from None
    passphrase = os.environ.get(PASSPHRASE_ENV)
    secret = passphrase.encode() if passphrase else None
    try:
        key = (load_ssh_private_key(raw, secret) if b"OPENSSH PRIVATE KEY" in raw
               else load_pem_private_key(raw, secret))
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{path} is not a usable private key ({exc}; a passphrase comes from "
                             f"${PASSPHRASE_ENV})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path} is not an ed25519 key")
    return base64.b64encode(key.sign(data)).decode("ascii")


def verify(key_line: str, data: bytes, signature: str | None) -> bool:
    """Whether ``signature`` (base64) is the key's signature of ``data``."""
    from cryptography.exceptions import InvalidSignature

    if not signature:
        return False
    try:
        raw = base64.b64decode(signature.encode("ascii"), validate=True)
        public_key(key_line).verify(raw, data)
    except (InvalidSignature, SignatureError, binascii.Error, ValueError, UnicodeEncodeError):
        return False
    return True
