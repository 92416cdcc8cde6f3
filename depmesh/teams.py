"""The teams that share a mesh: members, roles, and where to notify them.

    mesh: flights
    teams:
      ingestion:                       # the team a node's ``owner: team:ingestion`` names
        members:
          ana: [owner, on-call]        # roles: owner (approves), on-call (rolls back), member
          bo: [member]
        webhook: ${DEPMESH_WEBHOOK_INGESTION}   # optional; http(s) URL, or ${VAR} read at delivery

A member may carry a public key for signed approvals (depmesh.signing):
``eli: {roles: [owner], key: "ssh-ed25519 AAAA..."}``; ``signatures: required``
at the top makes every approval need a signature that verifies against it.

The file is ``teams.yaml`` beside the catalog and is validated like it (file,
line, team, field; every problem at once). Every team that owns a node must
be declared. When the file exists, promotions need approvals (depmesh.rollout)
and the actors of registry changes must be declared members.

Identity: depmesh has no authentication server. The actor of a change is
``--actor``, else ``$DEPMESH_ACTOR``, else the operating-system user. A
deployment binds it with ``DEPMESH_IDENTITY``: ``os`` (the actor must be the
operating-system user running the command), ``env:VAR`` (it must equal
``$VAR``, e.g. ``env:GITHUB_ACTOR`` in CI); unset, the declared ``--actor`` is
trusted as written (for a single-user machine or a demo).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from depmesh.catalog import CatalogError, MeshSpec
from depmesh.catalog.reader import Problem, _Checker, load_yaml
from depmesh.redact import safe_url

FILE_NAME = "teams.yaml"
ROLES = ("owner", "on-call", "member")
TEAMS_FILE_KEYS = {"mesh", "teams", "signatures"}
TEAM_KEYS = {"members", "webhook", "description"}
MEMBER_KEYS = {"roles", "key"}
IDENTITY_ENV = "DEPMESH_IDENTITY"
ACTOR_ENV = "DEPMESH_ACTOR"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}$")
ENV_REF_RE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


class TeamsError(CatalogError):
    """A teams file that cannot be used; ``problems`` lists every reason."""


class ActorError(ValueError):
    """An actor that may not do what was asked (unknown, wrong role, identity not bound)."""


def team_name(name: str) -> str:
    return name if name.startswith("team:") else "team:" + name


@dataclass(frozen=True)
class Team:
    name: str  # team:<name>
    members: dict[str, tuple[str, ...]]  # person -> roles
    webhook: str | None = None  # a URL, or ${VAR}
    description: str = ""
    keys: dict[str, str] = field(default_factory=dict)  # person -> OpenSSH ed25519 public key line

    def people(self, role: str) -> list[str]:
        return [p for p, roles in self.members.items() if role in roles]

    def webhook_url(self) -> str | None:
        """The URL to post to: the declared one, or the environment variable it names (unset: None)."""
        if not self.webhook:
            return None
        ref = ENV_REF_RE.match(self.webhook)
        return os.environ.get(ref.group(1)) or None if ref else self.webhook


@dataclass(frozen=True)
class Teams:
    path: Path
    teams: dict[str, Team]
    signatures_required: bool = False
    sha256: str = ""  # of the file's bytes: the declaration the registry remembers (depmesh.registry.store)

    def key_of(self, person: str) -> str | None:
        for team in self.teams.values():
            if person in team.keys:
                return team.keys[person]
        return None

    def policy(self) -> dict[str, Any]:
        """What the registry records of this declaration (mesh_governance.policy)."""
        return {"teams": sorted(self.teams), "signatures": "required" if self.signatures_required else "optional",
                "owners": sorted({p for t in self.teams.values() for p in t.people("owner")}),
                "on_call": sorted({p for t in self.teams.values() for p in t.people("on-call")})}

    def team(self, name: str) -> Team:
        found = self.teams.get(team_name(name))
        if found is None:
            raise KeyError(f"{self.path.name}: no team {name!r} (declared: {', '.join(sorted(self.teams))})")
        return found

    def roles_of(self, person: str) -> dict[str, tuple[str, ...]]:
        return {t.name: t.members[person] for t in self.teams.values() if person in t.members}

    def require_member(self, actor: str, role: str | None = None, doing: str = "act") -> dict[str, tuple[str, ...]]:
        """The actor's teams and roles; refused when the actor is not declared (or lacks ``role`` everywhere)."""
        roles = self.roles_of(actor)
        if not roles:
            raise ActorError(f"{actor!r} is not a member of any team in {self.path.name}, so may not {doing} "
                             f"(members: {', '.join(sorted({p for t in self.teams.values() for p in t.members}))})")
        if role and not any(role in r for r in roles.values()):
            holders = sorted({p for t in self.teams.values() for p in t.people(role)})
            raise ActorError(f"{actor!r} is not {role} of any team ({_roles_text(roles)}), so may not {doing}; "
                             f"{role}s: {', '.join(holders) or 'none'}")
        return roles


def _roles_text(roles: dict[str, tuple[str, ...]]) -> str:
    return "; ".join(f"{team}: {', '.join(r)}" for team, r in roles.items())


def teams_path(mesh: MeshSpec) -> Path:
    return Path(mesh.path).parent / FILE_NAME


def _parse_team(c: _Checker, key: Any, raw: Any) -> Team | None:
    if not isinstance(key, str) or not NAME_RE.match(key.removeprefix("team:")):
        c.add(f"a team name is letters, digits and . _ @ + - (at most 200), got {key!r}", field="teams", at=raw)
        return None
    name = team_name(key)
    if not isinstance(raw, dict):
        c.add(f"expected a mapping with 'members', got {raw!r}", node=name, field="teams", at=raw)
        return None
    c.keys(raw, TEAM_KEYS, node=name, prefix="")
    ok = True
    members: dict[str, tuple[str, ...]] = {}
    raw_members = raw.get("members")
    if not isinstance(raw_members, dict) or not raw_members:
        c.add(f"expected a mapping of person -> roles, got {raw_members!r}", node=name, field="members", at=raw)
        return None
    keys: dict[str, str] = {}
    for person, roles in raw_members.items():
        field = f"members.{person}"
        if isinstance(roles, dict):  # {roles: [...], key: "ssh-ed25519 ..."}
            c.keys(roles, MEMBER_KEYS, node=name, prefix=field + ".")
            key = roles.get("key")
            if key is not None and isinstance(person, str):
                from depmesh.signing import SignatureError, public_key

                try:
                    public_key(key, who=f"{person}'s key")
                    keys[person] = " ".join(str(key).split()[:2])
                except SignatureError as exc:
                    c.add(str(exc), node=name, field=field + ".key", at=raw_members)
                    ok = False
            roles = roles.get("roles")
        if not isinstance(person, str) or not NAME_RE.match(person):
            c.add(f"a member's name is letters, digits and . _ @ + - (at most 200), got {person!r}", node=name,
                  field="members", at=raw_members)
            ok = False
            continue
        roles = [roles] if isinstance(roles, str) else roles
        if not isinstance(roles, list) or not roles or not all(isinstance(r, str) for r in roles):
            c.add(f"expected a list of roles ({', '.join(ROLES)}), got {roles!r}", node=name, field=field,
                  at=raw_members)
            ok = False
            continue
        unknown = [r for r in roles if r not in ROLES]
        if unknown:
            c.add(f"unknown role {unknown[0]!r} (known: {', '.join(ROLES)})", node=name, field=field, at=raw_members)
            ok = False
        members[person] = tuple(dict.fromkeys(roles))
    if ok and not any("owner" in r for r in members.values()):
        c.add("a team needs at least one owner (who approves its changes)", node=name, field="members", at=raw)
        ok = False
    webhook = raw.get("webhook")
    if webhook is not None:
        if not isinstance(webhook, str) or not (ENV_REF_RE.match(webhook) or re.match(r"^https?://[^\s]+$", webhook)):
            shown = safe_url(webhook) if isinstance(webhook, str) else type(webhook).__name__
            c.add(f"a webhook is an http(s) URL or ${{VAR}} naming one in the environment, got {shown!r}",
                  node=name, field="webhook", at=raw)
            ok = False
    description = raw.get("description", "")
    if not isinstance(description, str):
        c.add(f"expected a text, got {description!r}", node=name, field="description", at=raw)
        ok = False
    return Team(name, members, webhook, description, keys) if ok else None


def parse_teams(text: str, path: Path, mesh: MeshSpec) -> Teams:
    c = _Checker(path)
    data = load_yaml(text, c, TeamsError)
    if not isinstance(data, dict) or not isinstance(data.get("teams"), dict):
        c.add("expected a mapping with a mapping of teams under 'teams' at the top")
        raise TeamsError(c.problems)
    c.keys(data, TEAMS_FILE_KEYS, node=None, prefix="")
    signatures = data.get("signatures", "optional")
    if signatures not in ("required", "optional"):
        c.add(f"signatures is 'required' or 'optional', got {signatures!r}", field="signatures", at=data)
    if data.get("mesh") not in (None, mesh.name):
        c.add(f"this file is for mesh {data['mesh']!r}, the catalog beside it is mesh {mesh.name!r}",
              field="mesh", at=data)
    teams: dict[str, Team] = {}
    for key, raw in data["teams"].items():
        team = _parse_team(c, key, raw)
        if team is not None:
            if team.name in teams:
                c.add(f"team {key!r} is declared twice (as {team.name})", node=team.name, at=raw)
            teams[team.name] = team
    owners = sorted({n.owner for n in mesh.nodes if n.owner.startswith("team:")})
    for owner in owners:
        if owner not in teams and not c.problems:
            users = [n.name for n in mesh.nodes if n.owner == owner]
            c.add(f"team {owner!r} owns {', '.join(users[:3])}{' ...' if len(users) > 3 else ''} in the catalog "
                  "but is not declared here", field="teams", at=data["teams"])
    if signatures == "required":
        keyed = {p for t in teams.values() for p in t.keys}
        unkeyed = sorted({p for t in teams.values() for p in t.people("owner")} - keyed)
        if unkeyed:
            c.add(f"signatures: required, but these owners have no key, so could never approve: "
                  f"{', '.join(unkeyed)} (give each a key: {{roles: [...], key: 'ssh-ed25519 ...'}})",
                  field="signatures", at=data)
    if c.problems:
        raise TeamsError(c.problems)
    import hashlib

    return Teams(path, teams, signatures == "required", hashlib.sha256(text.encode("utf-8")).hexdigest())


def load_teams(mesh: MeshSpec, path: Path | None = None) -> Teams | None:
    """The teams beside the mesh's catalog (or at ``path``); None when there is no such file."""
    path = Path(path) if path else teams_path(mesh)
    if not path.is_file():
        if path != teams_path(mesh):
            raise TeamsError([Problem(path.name, None, None, None, f"no teams file at {path}")])
        return None
    from depmesh.catalog.reader import read_capped

    return parse_teams(read_capped(path, TeamsError, "teams file"), path, mesh)


def os_user() -> str:
    """The operating-system user this process runs as: the password database's name for the effective uid.
    Never LOGNAME, USER or USERNAME (getpass reads those first, so anyone could name themselves)."""
    import pwd

    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # no passwd entry (a container started with an arbitrary uid)
        return str(uid)


def resolve_actor(given: str | None) -> str:
    """Who is acting, as bound by DEPMESH_IDENTITY (see the module's text); refused when it cannot be established."""
    binding = os.environ.get(IDENTITY_ENV, "").strip()
    if binding == "os":
        bound, source = os_user(), "the operating-system user"
    elif binding.startswith("env:"):
        var = binding[4:]
        bound, source = os.environ.get(var, "").strip(), f"${var}"
        if not bound:
            raise ActorError(f"{IDENTITY_ENV}={binding} binds the actor to ${var}, which is not set")
    elif binding:
        raise ActorError(f"{IDENTITY_ENV} is {binding!r}: expected 'os' or 'env:VARIABLE' (or unset)")
    else:
        return (given or os.environ.get(ACTOR_ENV) or os_user()).strip()
    if given and given != bound:
        raise ActorError(f"--actor {given!r} is not {source} ({bound!r}), to which {IDENTITY_ENV}={binding} "
                         "binds the actor here")
    return bound
