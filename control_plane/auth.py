"""Bearer tokens for the admin API, read from a token file.

One token per line, ``NAME TOKEN [ROLE]``; ROLE is ``admin`` (the default: may change
routes) or ``read`` (may only look). Blank lines and lines starting with ``#`` are
skipped; a ``#`` later in a line is part of it, since a token may contain one. The NAME
is what the route history records as a change's author, so the secret never lands in the
database. Tokens are compared in constant time, and every token is compared on every
check, so timing reveals neither a token's prefix nor which entry matched.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from pathlib import Path

from .errors import Forbidden, Unauthorized

__all__ = ["ROLES", "Token", "TokenAuth"]

ROLES = ("admin", "read")


@dataclass(frozen=True)
class Token:
    name: str
    secret: bytes = field(repr=False)  # kept out of logs and tracebacks
    role: str = "admin"

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}; expected one of {', '.join(ROLES)}")
        if not self.secret:
            raise ValueError("the token is empty")


@dataclass(frozen=True)
class TokenAuth:
    tokens: tuple[Token, ...]

    def __post_init__(self) -> None:
        if not self.tokens:
            raise ValueError("no tokens: nobody could use the admin API")

    @classmethod
    def load(cls, path: Path | str) -> "TokenAuth":
        """Read a token file; ``ValueError`` names the file and line of any mistake."""
        return cls.parse(Path(path).read_text(encoding="utf-8"), str(path))

    @classmethod
    def parse(cls, text: str, source: str = "token file") -> "TokenAuth":
        tokens: list[Token] = []
        seen: set[bytes] = set()
        for number, line in enumerate(text.splitlines(), start=1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) not in (2, 3):
                raise ValueError(f"{source} line {number}: expected 'NAME TOKEN [ROLE]', got {len(fields)} fields")
            try:
                token = Token(fields[0], fields[1].encode(), *fields[2:])
            except ValueError as exc:
                raise ValueError(f"{source} line {number}: {exc}") from None
            if token.secret in seen:
                raise ValueError(f"{source} line {number}: this token is already listed for another name")
            seen.add(token.secret)
            tokens.append(token)
        if not tokens:
            raise ValueError(f"{source}: no tokens; add lines 'NAME TOKEN [admin|read]'")
        return cls(tuple(tokens))

    def check(self, header: str | None, write: bool) -> str:
        """The name of the token in an ``Authorization`` header value; ``Unauthorized``
        when it is missing or unknown, ``Forbidden`` when a read token tries to write."""
        scheme, _, presented = (header or "").strip().partition(" ")
        presented = presented.strip()
        if scheme.lower() != "bearer" or not presented:
            raise Unauthorized(
                "missing bearer token: send 'Authorization: Bearer <token>' "
                "(the sidemesh commands read it from SIDEMESH_TOKEN)"
            )
        secret = presented.encode()
        match: Token | None = None
        for token in self.tokens:
            if hmac.compare_digest(token.secret, secret):
                match = token
        if match is None:
            raise Unauthorized("unknown token: check SIDEMESH_TOKEN against the control plane's token file")
        if write and match.role != "admin":
            raise Forbidden(f"token {match.name!r} has the {match.role!r} role; changing routes needs an 'admin' token")
        return match.name
