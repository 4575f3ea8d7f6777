"""Dependencies injected into route handlers: settings, the database, the caller.

All of them are async and do no I/O, so FastAPI runs them on the event loop
without taking a thread.
"""

from __future__ import annotations

import hmac
import math
import time
from dataclasses import dataclass
from difflib import get_close_matches
from typing import Annotated

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from service.config import Settings, get_settings
from service.db import Database, database
from service.problems import ProblemError


async def settings_dep() -> Settings:
    return get_settings()


SettingsDep = Annotated[Settings, Depends(settings_dep)]
DatabaseDep = Annotated[Database, Depends(database)]


@dataclass(frozen=True)
class Principal:
    """Who is calling: their tenant, and whether they see every tenant's experiments."""

    tenant: str
    admin: bool

    @property
    def scope(self) -> str | None:
        """The tenant to filter on, or None for an admin who sees all."""
        return None if self.admin else self.tenant


class RateLimit:
    """A per-tenant request rate (a `limits` expression such as "100/second"), kept in
    this process's memory: with several API processes each enforces it on its own."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.item: RateLimitItem | None = parse(expression) if expression else None
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def check(self, tenant: str) -> None:
        """Count one request; 429 with Retry-After when the tenant is over its rate."""
        if self.item is None or self.limiter.hit(self.item, "tenant", tenant):
            return
        stats = self.limiter.get_window_stats(self.item, "tenant", tenant)
        wait = max(1, math.ceil(stats.reset_time - time.time()))
        raise ProblemError(
            429,
            f"tenant {tenant or '(default)'} is over its rate limit of {self.expression} "
            f"requests; retry in {wait} s",
            headers={"Retry-After": str(wait)},
        )


#: Where a request's scope keeps the caller once identified, so it is counted once.
PRINCIPAL = "benignity.principal"


def identify(settings: Settings, rate: RateLimit, authorization: str | None) -> Principal:
    """The caller named by an Authorization header, counted against its tenant's rate.

    When API_TOKENS is set, `Bearer <token>` is required (401 otherwise); the
    token is compared in constant time against every configured token. Without
    API_TOKENS the service has one user, who sees everything.
    """
    tenants = settings.token_tenants
    if not tenants:
        rate.check("")
        return Principal(tenant="", admin=True)
    challenge = {"WWW-Authenticate": 'Bearer realm="benignity"'}
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise ProblemError(401, "missing bearer token", headers=challenge)
    tenant = None
    for token, owner in tenants.items():  # compare against every token so timing reveals nothing
        if hmac.compare_digest(given.strip().encode(), token.encode()):
            tenant = owner
    if tenant is None:
        raise ProblemError(401, "invalid bearer token", headers=challenge)
    rate.check(tenant)
    admin = bool(settings.admin_tenant) and tenant == settings.admin_tenant
    return Principal(tenant=tenant, admin=admin)


#: The OpenAPI security scheme of /v1 (the document's `bearer`). It never refuses by
#: itself: `identify` reads the raw header, so the 401s and their bodies stay its own.
BEARER = HTTPBearer(
    scheme_name="bearer",
    description="`Authorization: Bearer <token>`, one of the server's API_TOKENS. A server "
    "without API_TOKENS has one user and asks for no token.",
    auto_error=False,
)


async def require_token(
    request: Request,
    settings: SettingsDep,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> Principal:
    """When API_TOKENS is set, demand `Authorization: Bearer <token>` and name its tenant."""
    known = request.scope.get(PRINCIPAL)
    if isinstance(known, Principal):
        return known
    who = identify(settings, request.app.state.rate_limit, request.headers.get("authorization"))
    request.scope[PRINCIPAL] = who
    return who


PrincipalDep = Annotated[Principal, Depends(require_token)]


#: The attribute that caches, on each route object, the query parameters it takes (so the
#: cache lives and dies with the route; routes are unhashable, and ids get reused).
_QUERY_NAMES = "_benignity_query_names"


async def known_query(request: Request) -> None:
    """422 for a query parameter the route does not take: a typo such as ``?statu=failed``
    must not silently widen a list to everything. It names the closest known parameter."""
    if not request.query_params:
        return
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    allowed = getattr(route, _QUERY_NAMES, None)
    if allowed is None:
        allowed = frozenset(_query_names(dependant))
        setattr(route, _QUERY_NAMES, allowed)
    errors = []
    for name in dict.fromkeys(request.query_params.keys()):
        if name not in allowed:
            near = get_close_matches(name, sorted(allowed), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            known = ", ".join(sorted(allowed)) or "none"
            errors.append(
                {"loc": ["query", name], "msg": f"unknown query parameter{hint} (known: {known})"}
            )
    if errors:
        names = ", ".join(repr(e["loc"][1]) for e in errors)
        raise ProblemError(422, f"unknown query parameter {names}", errors=errors)


def _query_names(dependant: Dependant) -> set[str]:
    """The query parameters of a route and of every dependency under it."""
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names
