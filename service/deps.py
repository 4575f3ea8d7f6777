"""Dependencies injected into route handlers."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header
from sqlalchemy.orm import Session

from service.config import Settings, get_settings
from service.db import get_session
from service.problems import ProblemError

SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def require_token(
    settings: SettingsDep, authorization: Annotated[str | None, Header()] = None
) -> None:
    """When API_TOKENS is set, demand `Authorization: Bearer <token>` (constant-time compare)."""
    tokens = settings.tokens
    if not tokens:
        return
    challenge = {"WWW-Authenticate": 'Bearer realm="benignity"'}
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise ProblemError(401, "missing bearer token", headers=challenge)
    ok = False
    for token in tokens:  # compare against every token so timing reveals nothing
        ok |= hmac.compare_digest(given.strip().encode(), token.encode())
    if not ok:
        raise ProblemError(401, "invalid bearer token", headers=challenge)
