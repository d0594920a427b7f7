"""Who may write events and read shoppers' data (docs/architecture.md, "Closed doors").

- A search answer carries a signed, expiring feedback token: an HMAC over what that request
  showed (request id, user, scene, variant, experiment, the shown item ids) and its expiry.
  A click from a page is accepted only with a valid token and only for an item the token lists;
  everything else about the click (user, request id, position, variant) comes from the token,
  never from the page.
- Orders and other server-to-server writes, and reads of a shopper's features, need the API
  key (`X-API-Key`, compared in constant time): the configured one, else one drawn once and kept
  (0600) under the state dir for the local tools.
- Prices come from the catalog; only a caller holding the key (the order system) may state one.

Pure functions over plain values, so every rule is tested without a running service.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from infra.settings import Settings

API_KEY_HEADER = "x-api-key"


class Denied(Exception):
    """A request refused for who sent it: 401 (no credential) or 403 (a wrong or stale one)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class Shown:
    """What one search answer showed, as its feedback token carries it."""

    request_id: str
    user_id: str
    scene: str
    variant: str
    experiment: str
    items: tuple[str, ...]
    expires_ms: int


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FeedbackSigner:
    """Signs and verifies feedback tokens: `<base64url(JSON of Shown)>.<hex HMAC-SHA256>`."""

    def __init__(self, secret: bytes, ttl_s: int):
        if len(secret) < 16:
            raise ValueError("the feedback secret must be at least 16 bytes")
        self.secret, self.ttl_s = secret, ttl_s

    def _mac(self, payload: str) -> str:
        return hmac.new(self.secret, payload.encode(), hashlib.sha256).hexdigest()

    def sign(self, request_id: str, user_id: str, scene: str, variant: str, experiment: str,
             items: list[str], now_ms: int | None = None) -> str:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        body = {"r": request_id, "u": user_id, "s": scene, "v": variant, "e": experiment, "i": items,
                "x": now + self.ttl_s * 1000}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{self._mac(payload)}"

    def verify(self, token: object, now_ms: int | None = None) -> Shown:
        """The `Shown` a token signs, or `Denied(403)` with the reason (forged, altered, expired)."""
        if not isinstance(token, str) or token.count(".") != 1 or len(token) > 16_384:
            raise Denied(403, "the feedback token is malformed")
        payload, mac = token.split(".")
        if not hmac.compare_digest(self._mac(payload), mac):
            raise Denied(403, "the feedback token's signature does not match")
        try:
            d = json.loads(_unb64(payload))
            shown = Shown(str(d["r"]), str(d["u"]), str(d["s"]), str(d["v"]), str(d["e"]),
                          tuple(str(i) for i in d["i"]), int(d["x"]))
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise Denied(403, "the feedback token is malformed") from None
        if (int(time.time() * 1000) if now_ms is None else now_ms) > shown.expires_ms:
            raise Denied(403, "the feedback token has expired: search again")
        return shown


def state_secret(configured: SecretStr | None, state_dir: Path, name: str) -> SecretStr:
    """The configured secret, else one drawn once and kept (mode 0600) at `<state_dir>/secrets/<name>`,
    so the replicas of one machine, a restarted service and the local tools share it."""
    if configured is not None:
        return configured
    path = state_dir / "secrets" / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
        try:
            os.link(tmp, path)  # the first of racing replicas wins; the others read its secret
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return SecretStr(path.read_text().strip())


def feedback_secret(configured: SecretStr | None, state_dir: Path) -> bytes:
    """The HMAC key of the feedback tokens (`state_secret` "feedback.key")."""
    return state_secret(configured, state_dir, "feedback.key").get_secret_value().encode()


def api_key(configured: SecretStr | None, state_dir: Path) -> SecretStr:
    """The API key trusted callers send (`state_secret` "api.key": on a laptop the local tools,
    the simulator and the service find the same one without configuration)."""
    return state_secret(configured, state_dir, "api.key")


def local_api_key(settings: Settings) -> str:
    """The API key of these settings, revealed: what a local tool (the simulator, a bench) sends."""
    return api_key(settings.api.api_key, settings.resolved_state_dir()).get_secret_value()


def check_api_key(configured: SecretStr | None, given: str | None, what: str) -> None:
    """`Denied` unless `given` is the configured API key (401 without one, 403 for a wrong one)."""
    if not given:
        raise Denied(401, f"{what} needs the API key (header X-API-Key)")
    if configured is None or not hmac.compare_digest(configured.get_secret_value().encode(), given.encode()):
        raise Denied(403, f"{what}: the API key is not valid")


def has_api_key(configured: SecretStr | None, given: str | None) -> bool:
    try:
        check_api_key(configured, given, "")
    except Denied:
        return False
    return True
