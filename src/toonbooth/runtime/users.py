"""Users and API tokens, in the job database (`users`, `tokens` tables; schema version in `meta`).

A token is `tb_<id>_<secret>`: `id` (12 hex) finds the row, `secret` (32 random bytes, urlsafe)
is never stored — only HMAC-SHA256(salt, secret) with a per-token random salt. Because the secret
has 256 bits of entropy, a fast keyed hash is enough (a slow KDF only helps low-entropy passwords,
and it would cost every API request); comparison is constant-time (`hmac.compare_digest`), also
when the id is unknown. HTTP Basic works like AUTOMATIC1111's `--api-auth`: user name + the token
as the password.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from pathlib import Path

from pydantic import BaseModel

from ..core.errors import InputError, NotFoundError
from .queue_sqlite import ThreadConnections, ensure_schema

USERS_SCHEMA_VERSION = 1
_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TOKEN = re.compile(r"^tb_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")
_DUMMY_SALT = secrets.token_bytes(16)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    salt BLOB NOT NULL,
    hash BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tokens_user ON tokens (user);
"""


class UserInfo(BaseModel):
    name: str
    created_at: float
    tokens: int


def _digest(salt: bytes, secret: str) -> bytes:
    return hmac.new(salt, secret.encode("utf-8"), hashlib.sha256).digest()


def check_user_name(name: str) -> str:
    if not isinstance(name, str) or not _USER_NAME.match(name):
        raise InputError(
            "name",
            f"user names are 1-64 characters of letters, digits, `_`, `.`, `-`, got {str(name)[:80]!r}",
            name,
        )
    return name


class Users:
    def __init__(self, db_path: Path):
        self.path = Path(db_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = ThreadConnections(self.path)
        ensure_schema(self._db.get(), "users_schema", USERS_SCHEMA_VERSION, _SCHEMA)

    def add_user(self, name: str) -> str:
        """Create a user and its first token; the token is returned once and never shown again."""
        check_user_name(name)
        with self._db.write() as conn:
            if conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise InputError(
                    "name", f"user {name!r} already exists (add a token with `users token`)", name
                )
            conn.execute("INSERT INTO users (name, created_at) VALUES (?, ?)", (name, time.time()))
            return self._new_token(conn, name)

    def add_token(self, name: str) -> str:
        """Another token for an existing user."""
        with self._db.write() as conn:
            if not conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise NotFoundError(f"no user {name!r}")
            return self._new_token(conn, name)

    @staticmethod
    def _new_token(conn, name: str) -> str:
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        conn.execute(
            "INSERT INTO tokens (id, user, salt, hash, created_at) VALUES (?, ?, ?, ?, ?)",
            (token_id, name, salt, _digest(salt, secret), time.time()),
        )
        return f"tb_{token_id}_{secret}"

    def authenticate(self, token: str | None) -> str | None:
        """The user a token belongs to, or None (unknown, revoked or malformed)."""
        m = _TOKEN.match(token or "") if isinstance(token, str) else None
        if not m:
            return None
        token_id, secret = m.group(1), m.group(2)
        row = (
            self._db.get().execute("SELECT user, salt, hash FROM tokens WHERE id = ?", (token_id,)).fetchone()
        )
        if row is None:
            hmac.compare_digest(
                _digest(_DUMMY_SALT, secret), _digest(_DUMMY_SALT, "")
            )  # same work either way
            return None
        if hmac.compare_digest(_digest(bytes(row["salt"]), secret), bytes(row["hash"])):
            return str(row["user"])
        return None

    def authenticate_basic(self, user: str | None, password: str | None) -> str | None:
        """HTTP Basic: the password is one of the user's tokens."""
        found = self.authenticate(password)
        if found is None or not hmac.compare_digest(found.encode(), (user or "").encode()):
            return None
        return found

    def list_users(self) -> list[UserInfo]:
        rows = (
            self._db.get()
            .execute(
                "SELECT u.name, u.created_at, COUNT(t.id) AS n FROM users u LEFT JOIN tokens t ON t.user = u.name "
                "GROUP BY u.name ORDER BY u.name"
            )
            .fetchall()
        )
        return [UserInfo(name=r["name"], created_at=r["created_at"], tokens=r["n"]) for r in rows]

    def has_users(self) -> bool:
        return self._db.get().execute("SELECT 1 FROM tokens LIMIT 1").fetchone() is not None

    def revoke(self, name: str, *, delete_user: bool = False) -> int:
        """Invalidate every token of `name` (and remove the user when asked). Returns tokens revoked."""
        with self._db.write() as conn:
            if not conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise NotFoundError(f"no user {name!r}")
            n = conn.execute("DELETE FROM tokens WHERE user = ?", (name,)).rowcount
            if delete_user:
                conn.execute("DELETE FROM users WHERE name = ?", (name,))
        return int(n)

    def close(self) -> None:
        self._db.close()
