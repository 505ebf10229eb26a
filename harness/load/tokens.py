"""When a simulated user refreshes its access token.

The contract lets the backend choose its token format: a JWT says when it expires, an opaque token does
not. A JWT is refreshed well ahead of its `exp`, so no request of the run fails on an expired token; an
opaque one on a fixed interval (and on a 401, which the user handles)."""
from __future__ import annotations

import jwt

# Refresh once this share of the token's remaining life has passed, leaving margin for clock skew.
LIFETIME_SHARE = 0.8


def jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT (unverified: the generator only schedules by it), None for other tokens."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, (int, float)) else None


def refresh_due_at(token: str, received_at: float, interval_s: float) -> float:
    """Epoch seconds at which to refresh an access token received at received_at."""
    exp = jwt_expiry(token)
    if exp is None:
        return received_at + interval_s
    return received_at + max(exp - received_at, 0.0) * LIFETIME_SHARE
