"""The in-memory store: one process, nothing kept across restarts.

A single lock makes every operation atomic for threaded WSGI servers too.
Upstream secrets are kept encrypted here as in every backend.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import attrs

from ..core.models import (
    AccessToken,
    AdminToken,
    AuditEvent,
    AuthSession,
    Client,
    CodeGrant,
    ConsentRequest,
    DirectoryState,
    Grant,
    GrantInfo,
    OAuthConfig,
    Organization,
    Redemption,
    RefreshToken,
    Revocation,
    Rotation,
    Server,
    UpstreamTokens,
)
from ..core.store import ENDED_MARK, REPLACED, REVOCATION_RECORD, StoreTraits, withdrawn_mark
from . import directory_rules as rules
from .crypto import (
    KeyRing,
    open_client_secret,
    open_upstream,
    open_verifier,
    seal_client_secret,
    seal_upstream,
    seal_verifier,
)

_SEALED = UpstreamTokens(access_token="")  # stands in for the sealed tokens


class MemoryStore:
    # Answers at once (no I/O), and no other process sees its records.
    traits = StoreTraits(blocks=False, shared=False)

    def __init__(self, keyring: KeyRing | None = None) -> None:
        self.keyring = keyring or KeyRing.generate()
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str], Client] = {}
        self._consents: dict[tuple[str, str], ConsentRequest] = {}
        self._sessions: dict[tuple[str, str], tuple[AuthSession, str]] = {}
        # (tenant, grant_id) -> (the grant without its upstream tokens, them sealed; None: it has none)
        self._grants: dict[tuple[str, str], tuple[Grant, str | None]] = {}
        # When each grant's newest token was issued (GrantInfo.last_used_at).
        self._last_used: dict[tuple[str, str], int] = {}
        self._grant_by_code: dict[tuple[str, str], str] = {}
        self._codes: dict[tuple[str, str], CodeGrant] = {}
        self._access: dict[tuple[str, str], AccessToken] = {}
        self._refresh: dict[tuple[str, str], RefreshToken] = {}
        self._counters: dict[tuple[str, int], tuple[int, int]] = {}
        self._revocations: dict[tuple[str, str, str], Revocation] = {}
        self._organizations: dict[str, Organization] = {}
        # (organization, name) -> (the configuration without its secret, the sealed secret)
        self._oauth_configs: dict[tuple[str, str], tuple[OAuthConfig, str]] = {}
        self._servers: dict[str, Server] = {}
        self._directory_version = 0
        self._admin_tokens: dict[str, AdminToken] = {}
        # event_id -> (the event, when it expires), oldest first.
        self._audit: dict[int, tuple[AuditEvent, int]] = {}
        self._last_event_id = 0

    # -- clients ------------------------------------------------------------
    def save_client(self, client: Client) -> None:
        with self._lock:
            self._clients[(client.tenant, client.client_id)] = client

    def get_client(self, tenant: str, client_id: str) -> Client | None:
        return self._clients.get((tenant, client_id))

    def hit_counter(self, key: str, window_start: int, expires_at: int) -> int:
        with self._lock:
            count = self._counters.get((key, window_start), (0, expires_at))[0] + 1
            self._counters[(key, window_start)] = (count, expires_at)
            return count

    # A signed-out session, a client's withdrawn approvals: marks, each a
    # counter of its own (window 0, its count the value), so housekeeping
    # forgets it with them.
    def _set_mark(self, name: str, value: int, expires_at: int) -> None:
        with self._lock:
            self._counters[(name, 0)] = (value, expires_at)

    def _mark(self, name: str, now: int) -> int | None:
        mark = self._counters.get((name, 0))
        return mark[0] if mark is not None and mark[1] > now else None

    def end_session(self, session_hash: str, expires_at: int) -> None:
        self._set_mark(ENDED_MARK + session_hash, 1, expires_at)

    def session_ended(self, session_hash: str, now: int) -> bool:
        return self._mark(ENDED_MARK + session_hash, now) is not None

    def withdraw_approvals(self, tenant: str, client_id: str, at: int, expires_at: int) -> None:
        self._set_mark(withdrawn_mark(tenant, client_id), at, expires_at)

    def approvals_withdrawn(self, tenant: str, client_id: str, now: int) -> int | None:
        return self._mark(withdrawn_mark(tenant, client_id), now)

    # -- consent and sessions --------------------------------------------------
    def save_consent_request(self, consent: ConsentRequest) -> None:
        with self._lock:
            self._consents[(consent.tenant, consent.id_hash)] = consent

    def take_consent_request(self, tenant: str, id_hash: str, now: int) -> ConsentRequest | None:
        with self._lock:
            consent = self._consents.pop((tenant, id_hash), None)
        return consent if consent is not None and consent.expires_at > now else None

    def save_auth_session(self, session: AuthSession) -> None:
        sealed = seal_verifier(self.keyring, session.tenant, session.state_hash, session.upstream_code_verifier)
        with self._lock:
            self._sessions[(session.tenant, session.state_hash)] = (
                attrs.evolve(session, upstream_code_verifier=""),
                sealed,
            )

    def take_auth_session(self, tenant: str, state_hash: str, now: int) -> AuthSession | None:
        with self._lock:
            entry = self._sessions.pop((tenant, state_hash), None)
        if entry is None or entry[0].expires_at <= now:
            return None
        session, sealed = entry
        return attrs.evolve(session, upstream_code_verifier=open_verifier(self.keyring, tenant, state_hash, sealed))

    # -- grants and codes ------------------------------------------------------
    def save_grant_and_code(self, grant: Grant, code: CodeGrant) -> None:
        assert grant.upstream is not None and grant.code_hash is not None, "a grant with a code has upstream tokens"
        sealed = seal_upstream(self.keyring, grant.tenant, grant.grant_id, grant.upstream)
        with self._lock:
            self._grants[(grant.tenant, grant.grant_id)] = (attrs.evolve(grant, upstream=_SEALED), sealed)
            self._grant_by_code[(grant.tenant, grant.code_hash)] = grant.grant_id
            self._codes[(code.tenant, code.code_hash)] = code

    def save_grant_and_token(self, grant: Grant, access: AccessToken) -> None:
        with self._lock:
            self._grants[(grant.tenant, grant.grant_id)] = (grant, None)
            self._access[(access.tenant, access.token_hash)] = access
            self._last_used[(grant.tenant, grant.grant_id)] = access.issued_at

    def get_code(self, tenant: str, code_hash: str, now: int) -> CodeGrant | None:
        code = self._codes.get((tenant, code_hash))
        return code if code is not None and code.expires_at > now else None

    def take_code(self, tenant: str, code_hash: str, now: int) -> CodeGrant | None:
        with self._lock:
            code = self._codes.pop((tenant, code_hash), None)
        return code if code is not None and code.expires_at > now else None

    def redeem_code(
        self, tenant: str, code_hash: str, now: int, access: AccessToken, refresh: RefreshToken | None,
        keep_client: bool, event: AuditEvent | None = None, keep_until: int = 0,
    ) -> Redemption:
        with self._lock:
            code = self._codes.get((tenant, code_hash))
            if code is None or code.expires_at <= now or code.grant_id != access.grant_id:
                return Redemption.SPENT
            del self._codes[(tenant, code_hash)]
            if not self._live(tenant, access.grant_id):
                return Redemption.REVOKED
            self._access[(tenant, access.token_hash)] = access
            if refresh is not None:
                self._refresh[(tenant, refresh.token_hash)] = refresh
            self._last_used[(tenant, access.grant_id)] = access.issued_at
            client = self._clients.get((tenant, access.client_id))
            if keep_client and client is not None:
                self._clients[(tenant, access.client_id)] = attrs.evolve(client, expires_at=None)
            if event is not None:
                self._keep_event(event, keep_until)
            return Redemption.ISSUED

    def _revoke(self, tenant: str, grant_id: str) -> bool:
        entry = self._grants.get((tenant, grant_id))
        if entry is None or entry[0].revoked:
            return False
        self._grants[(tenant, grant_id)] = (attrs.evolve(entry[0], revoked=True), entry[1])
        self._record(tenant, Revocation.GRANT, grant_id)
        return True

    def _record(self, tenant: str, kind: str, revoked: str) -> None:
        self._revocations[(tenant, kind, revoked)] = Revocation(tenant, kind, revoked, int(time.time()))

    def revocations_since(self, since: int) -> list[Revocation]:
        with self._lock:
            return [r for r in self._revocations.values() if r.revoked_at >= since]

    def revoke_grant_of_code(self, tenant: str, code_hash: str) -> bool:
        with self._lock:
            grant_id = self._grant_by_code.get((tenant, code_hash))
            return grant_id is not None and self._revoke(tenant, grant_id)

    def revoke_grant(self, tenant: str, grant_id: str) -> None:
        with self._lock:
            self._revoke(tenant, grant_id)

    def _live(self, tenant: str, grant_id: str) -> bool:
        entry = self._grants.get((tenant, grant_id))
        return entry is not None and not entry[0].revoked

    # -- our tokens ------------------------------------------------------------
    def get_access_token(self, tenant: str, token_hash: str) -> AccessToken | None:
        token = self._access.get((tenant, token_hash))
        return token if token is not None and self._live(tenant, token.grant_id) else None

    def get_refresh_token(self, tenant: str, token_hash: str) -> RefreshToken | None:
        token = self._refresh.get((tenant, token_hash))
        return token if token is not None and self._live(tenant, token.grant_id) else None

    def rotate_refresh_token(
        self, tenant: str, token_hash: str, now: int, grace: int, access: AccessToken, refresh: RefreshToken,
        event: AuditEvent | None = None, keep_until: int = 0,
    ) -> Rotation:
        with self._lock:
            old = self._refresh.get((tenant, token_hash))
            if old is None or old.expires_at <= now or not self._live(tenant, old.grant_id):
                return Rotation.GONE
            if old.rotated_at is not None:
                successor = self._refresh.get((tenant, old.successor_hash or ""))
                if now - old.rotated_at > grace or successor is None or successor.rotated_at is not None:
                    self._revoke(tenant, old.grant_id)
                    return Rotation.REUSED
                self._refresh[(tenant, successor.token_hash)] = attrs.evolve(successor, rotated_at=REPLACED)
            rotated_at = now if old.rotated_at is None else old.rotated_at
            self._refresh[(tenant, token_hash)] = attrs.evolve(
                old, rotated_at=rotated_at, successor_hash=refresh.token_hash)
            self._access[(tenant, access.token_hash)] = access
            self._refresh[(tenant, refresh.token_hash)] = refresh
            self._last_used[(tenant, old.grant_id)] = access.issued_at
            if event is not None:
                self._keep_event(event, keep_until)
            return Rotation.ROTATED

    def revoke_access_token(self, tenant: str, token_hash: str) -> None:
        with self._lock:
            self._access.pop((tenant, token_hash), None)
            self._record(tenant, Revocation.TOKEN, token_hash)

    # -- upstream tokens ---------------------------------------------------------
    def get_grant(self, tenant: str, grant_id: str) -> Grant | None:
        entry = self._grants.get((tenant, grant_id))
        if entry is None or entry[0].revoked:
            return None
        grant, sealed = entry
        if sealed is None:
            return grant
        return attrs.evolve(grant, upstream=open_upstream(self.keyring, tenant, grant_id, sealed))

    def claim_upstream_refresh(self, tenant: str, grant_id: str, version: int, now: int, lease_until: int) -> bool:
        with self._lock:
            entry = self._grants.get((tenant, grant_id))
            if entry is None or entry[0].revoked or entry[0].upstream_version != version:
                return False
            lease = entry[0].refresh_lease_until
            if lease is not None and lease > now:
                return False
            self._grants[(tenant, grant_id)] = (attrs.evolve(entry[0], refresh_lease_until=lease_until), entry[1])
            return True

    def release_upstream_refresh(self, tenant: str, grant_id: str, version: int) -> None:
        with self._lock:
            entry = self._grants.get((tenant, grant_id))
            if entry is not None and entry[0].upstream_version == version:
                self._grants[(tenant, grant_id)] = (attrs.evolve(entry[0], refresh_lease_until=None), entry[1])

    def update_upstream_tokens(self, tenant: str, grant_id: str, version: int, tokens: UpstreamTokens) -> bool:
        sealed = seal_upstream(self.keyring, tenant, grant_id, tokens)
        with self._lock:
            entry = self._grants.get((tenant, grant_id))
            if entry is None or entry[0].revoked or entry[0].upstream_version != version:
                return False
            grant = attrs.evolve(entry[0], upstream_version=version + 1, refresh_lease_until=None)
            self._grants[(tenant, grant_id)] = (grant, sealed)
            return True

    # -- housekeeping ------------------------------------------------------------
    def delete_expired(self, now: int, limit: int = 1000) -> int:
        removed = 0
        with self._lock:
            tables: list[dict[Any, Any]] = [self._consents, self._codes, self._access, self._refresh]
            for table in tables:
                for key in [k for k, v in table.items() if v.expires_at <= now][:limit]:
                    del table[key]
                    removed += 1
            for key in [k for k, v in self._sessions.items() if v[0].expires_at <= now][:limit]:
                del self._sessions[key]
                removed += 1
            for key in [k for k, v in self._counters.items() if v[1] <= now][:limit]:
                del self._counters[key]
                removed += 1
            old = [k for k, r in self._revocations.items() if r.revoked_at + REVOCATION_RECORD <= now]
            for key in old[:limit]:
                del self._revocations[key]
                removed += 1
            lapsed = [k for k, c in self._clients.items() if c.expires_at is not None and c.expires_at <= now]
            for key in lapsed[:limit]:
                del self._clients[key]
                removed += 1
            for key in [k for k, v in self._grants.items() if v[0].expires_at <= now][:limit]:
                grant = self._grants.pop(key)[0]
                if grant.code_hash is not None:  # a grant made without a browser has no code
                    self._grant_by_code.pop((grant.tenant, grant.code_hash), None)
                self._last_used.pop(key, None)
                removed += 1
            for event_id in [k for k, v in self._audit.items() if v[1] <= now][:limit]:
                del self._audit[event_id]
                removed += 1
        return removed

    # -- the directory ------------------------------------------------------------
    def _changed(self) -> None:
        self._directory_version += 1

    def create_organization(self, organization: Organization) -> None:
        with self._lock:
            if organization.name in self._organizations:
                raise rules.org_exists(organization.name)
            self._organizations[organization.name] = organization
            self._changed()

    def get_organization(self, name: str) -> Organization | None:
        return self._organizations.get(name)

    def list_organizations(self) -> list[Organization]:
        with self._lock:
            return [self._organizations[k] for k in sorted(self._organizations)]

    def update_organization(self, organization: Organization) -> None:
        with self._lock:
            if organization.name not in self._organizations:
                raise rules.no_org(organization.name)
            self._organizations[organization.name] = organization
            self._changed()

    def delete_organization(self, name: str) -> None:
        with self._lock:
            if name not in self._organizations:
                raise rules.no_org(name)
            configs = [n for (o, n) in self._oauth_configs if o == name]
            servers = [s.slug for s in self._servers.values() if s.organization == name]
            if configs or servers:
                raise rules.org_in_use(name, configs, servers)
            for token in [t for t in self._admin_tokens.values() if t.organization == name]:
                del self._admin_tokens[token.token_id]
            del self._organizations[name]
            self._changed()

    def _opened(self, entry: tuple[OAuthConfig, str]) -> OAuthConfig:
        config, sealed = entry
        return attrs.evolve(config, client_secret=open_client_secret(
            self.keyring, config.organization, config.name, sealed))

    def _seal(self, config: OAuthConfig) -> tuple[OAuthConfig, str]:
        sealed = seal_client_secret(self.keyring, config.organization, config.name, config.client_secret)
        return attrs.evolve(config, client_secret=""), sealed

    def create_oauth_config(self, oauth_config: OAuthConfig) -> None:
        entry = self._seal(oauth_config)
        key = (oauth_config.organization, oauth_config.name)
        with self._lock:
            if oauth_config.organization not in self._organizations:
                raise rules.no_org(oauth_config.organization)
            if key in self._oauth_configs:
                raise rules.config_exists(*key)
            self._oauth_configs[key] = entry
            self._changed()

    def get_oauth_config(self, organization: str, name: str) -> OAuthConfig | None:
        entry = self._oauth_configs.get((organization, name))
        return None if entry is None else self._opened(entry)

    def list_oauth_configs(self, organization: str | None = None) -> list[OAuthConfig]:
        with self._lock:
            entries = [self._oauth_configs[k] for k in sorted(self._oauth_configs)
                       if organization is None or k[0] == organization]
        return [self._opened(e) for e in entries]

    def update_oauth_config(self, oauth_config: OAuthConfig) -> None:
        entry = self._seal(oauth_config)
        key = (oauth_config.organization, oauth_config.name)
        with self._lock:
            if key not in self._oauth_configs:
                raise rules.no_config(*key)
            self._oauth_configs[key] = entry
            self._changed()

    def delete_oauth_config(self, organization: str, name: str) -> None:
        with self._lock:
            if (organization, name) not in self._oauth_configs:
                raise rules.no_config(organization, name)
            users = [s.slug for s in self._servers.values()
                     if (s.organization, s.oauth_config) == (organization, name)]
            if users:
                raise rules.config_in_use(organization, name, users)
            del self._oauth_configs[(organization, name)]
            self._changed()

    def _check_server(self, server: Server) -> None:
        if server.organization not in self._organizations:
            raise rules.no_org(server.organization)
        if (server.organization, server.oauth_config) not in self._oauth_configs:
            raise rules.no_config(server.organization, server.oauth_config)

    def _check_place(self, server: Server) -> None:
        refused = rules.place_taken(server, [self._servers[k] for k in sorted(self._servers)])
        if refused is not None:
            raise refused

    def create_server(self, server: Server) -> None:
        with self._lock:
            self._check_server(server)
            if server.slug in self._servers:
                raise rules.server_exists(server.slug)
            self._check_place(server)
            self._servers[server.slug] = server
            self._changed()

    def get_server(self, slug: str) -> Server | None:
        return self._servers.get(slug)

    def list_servers(self, organization: str | None = None) -> list[Server]:
        with self._lock:
            return [self._servers[k] for k in sorted(self._servers)
                    if organization is None or self._servers[k].organization == organization]

    def _revoke_all(self, tenant: str, client_id: str | None = None) -> int:
        """Revoke (and record) every live grant of the tenant (of one client
        only, if given); how many."""
        mine = [grant_id for (t, grant_id), (grant, _) in self._grants.items()
                if t == tenant and (client_id is None or grant.client_id == client_id)]
        return sum(self._revoke(tenant, grant_id) for grant_id in mine)

    def update_server(self, server: Server) -> int:
        with self._lock:
            old = self._servers.get(server.slug)
            if old is None:
                raise rules.no_server(server.slug)
            if old.organization != server.organization:
                raise rules.moved(server.slug)
            self._check_server(server)
            self._check_place(server)
            revoked = self._revoke_all(server.slug) if old.oauth_config != server.oauth_config else 0
            self._servers[server.slug] = server
            self._changed()
            return revoked

    def delete_server(self, slug: str) -> int:
        with self._lock:
            if slug not in self._servers:
                raise rules.no_server(slug)
            revoked = self._revoke_all(slug)
            del self._servers[slug]
            for key in [k for k in self._clients if k[0] == slug]:
                del self._clients[key]
            self._changed()
            return revoked

    def directory_version(self) -> int:
        return self._directory_version

    def load_directory(self) -> DirectoryState:
        with self._lock:
            servers = tuple(self._servers[k] for k in sorted(self._servers))
            used = {(s.organization, s.oauth_config) for s in servers}
            entries = [self._oauth_configs[k] for k in sorted(used)]
            version = self._directory_version
        return DirectoryState(version, servers, tuple(self._opened(e) for e in entries))

    # -- administration -------------------------------------------------------------
    def create_admin_token(self, token: AdminToken) -> None:
        with self._lock:
            if token.organization is not None and token.organization not in self._organizations:
                raise rules.no_org(token.organization)
            if token.token_id in self._admin_tokens or self._admin_token(token.token_hash) is not None:
                raise rules.admin_token_exists(token.token_id)
            self._admin_tokens[token.token_id] = token

    def _admin_token(self, token_hash: str) -> AdminToken | None:
        return next((t for t in self._admin_tokens.values() if t.token_hash == token_hash), None)

    def get_admin_token(self, token_hash: str) -> AdminToken | None:
        with self._lock:
            return self._admin_token(token_hash)

    def list_admin_tokens(self) -> list[AdminToken]:
        with self._lock:
            return sorted(self._admin_tokens.values(), key=lambda t: (t.created_at, t.token_id))

    def delete_admin_token(self, token_id: str) -> bool:
        with self._lock:
            return self._admin_tokens.pop(token_id, None) is not None

    def record_audit(self, event: AuditEvent, keep_until: int) -> None:
        with self._lock:
            self._keep_event(event, keep_until)

    def _keep_event(self, event: AuditEvent, keep_until: int) -> None:
        # Under the lock.
        self._last_event_id += 1
        owner = self._servers.get(event.tenant or "")
        if event.organization is None and owner is not None:
            event = attrs.evolve(event, organization=owner.organization)
        self._audit[self._last_event_id] = (attrs.evolve(event, event_id=self._last_event_id), keep_until)

    def list_audit_events(self, limit: int, before: int | None = None, organization: str | None = None,
                          tenant: str | None = None, user_id: str | None = None, client_id: str | None = None,
                          event: str | None = None, since: int | None = None,
                          until: int | None = None) -> list[AuditEvent]:
        wanted = {"tenant": tenant, "user_id": user_id, "client_id": client_id, "event": event}
        with self._lock:
            found: list[AuditEvent] = []
            for event_id in reversed(self._audit):
                if len(found) == limit:
                    break
                e = self._audit[event_id][0]
                if ((before is None or event_id < before)
                        and all(v is None or getattr(e, k) == v for k, v in wanted.items())
                        and (organization is None or e.organization == organization)
                        and (since is None or e.at >= since) and (until is None or e.at < until)):
                    found.append(e)
            return found

    def list_clients(self, tenant: str, limit: int, after: str | None = None) -> list[Client]:
        with self._lock:
            ids = sorted(c for (t, c) in self._clients if t == tenant and (after is None or c > after))
            return [self._clients[(tenant, c)] for c in ids[:limit]]

    def clients_last_used(self, tenant: str, client_ids: tuple[str, ...]) -> dict[str, int]:
        wanted = set(client_ids)
        found: dict[str, int] = {}
        with self._lock:
            for (t, grant_id), at in self._last_used.items():
                entry = self._grants.get((t, grant_id))
                if t == tenant and entry is not None and entry[0].client_id in wanted:
                    found[entry[0].client_id] = max(at, found.get(entry[0].client_id, at))
        return found

    def delete_client(self, tenant: str, client_id: str) -> int | None:
        with self._lock:
            if self._clients.pop((tenant, client_id), None) is None:
                return None
            return self._revoke_all(tenant, client_id)

    def _info(self, grant: Grant) -> GrantInfo:
        known = {f.name: getattr(grant, f.name) for f in attrs.fields(GrantInfo) if f.name != "last_used_at"}
        return GrantInfo(**known, last_used_at=self._last_used.get((grant.tenant, grant.grant_id)))

    def list_grants(self, now: int, limit: int, after: tuple[str, str] | None = None,
                    organization: str | None = None, tenant: str | None = None, user_id: str | None = None,
                    client_id: str | None = None) -> list[GrantInfo]:
        wanted = {"tenant": tenant, "user_id": user_id, "client_id": client_id}
        with self._lock:
            servers = {s.slug for s in self._servers.values() if s.organization == organization}
            live = [g for g in (self._grants[key][0] for key in sorted(self._grants))
                    if not g.revoked and g.expires_at > now
                    and (after is None or (g.tenant, g.grant_id) > after)
                    and (organization is None or g.tenant in servers)
                    and all(v is None or getattr(g, k) == v for k, v in wanted.items())]
            return [self._info(g) for g in live[:limit]]

    def get_grant_info(self, tenant: str, grant_id: str, now: int) -> GrantInfo | None:
        entry = self._grants.get((tenant, grant_id))
        if entry is None or entry[0].revoked or entry[0].expires_at <= now:
            return None
        return self._info(entry[0])

    def dump(self) -> str:
        """Everything held, every field included, as text: for tests that look
        for plaintext secrets."""

        def plain(value: Any) -> Any:
            if attrs.has(type(value)):
                return attrs.asdict(value)
            if isinstance(value, tuple):
                return [plain(v) for v in value]
            return value

        with self._lock:
            tables: list[dict[tuple[str, str], Any]] = [
                self._clients, self._consents, self._sessions, self._grants, self._codes, self._access, self._refresh,
                self._oauth_configs]
            return repr([{k: plain(v) for k, v in table.items()} for table in tables])
