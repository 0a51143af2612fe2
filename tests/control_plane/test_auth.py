from __future__ import annotations

import pytest

from control_plane.auth import TokenAuth
from control_plane.errors import Forbidden, Unauthorized

FILE = """# who    token          role
alice    tok-alice-1
ci       tok-ci-2       admin

grafana  tok#grafana-3  read
"""


@pytest.fixture
def auth() -> TokenAuth:
    return TokenAuth.parse(FILE)


def test_a_token_file_gives_each_token_its_name_and_role_with_admin_by_default(auth):
    assert [(t.name, t.role) for t in auth.tokens] == [("alice", "admin"), ("ci", "admin"), ("grafana", "read")]


def test_load_reads_the_file(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(FILE)
    assert TokenAuth.load(path) == TokenAuth.parse(FILE)


def test_check_returns_the_tokens_name(auth):
    assert auth.check("Bearer tok-ci-2", write=True) == "ci"
    assert auth.check("bearer  tok#grafana-3 ", write=False) == "grafana"


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic tok-alice-1", "tok-alice-1",
                                    "Bearer tok-alice", "Bearer tok-alice-10"])
def test_a_missing_or_unknown_token_is_unauthorized(auth, header):
    with pytest.raises(Unauthorized):
        auth.check(header, write=False)


def test_a_read_token_may_not_write(auth):
    with pytest.raises(Forbidden, match="'grafana'"):
        auth.check("Bearer tok#grafana-3", write=True)


@pytest.mark.parametrize("text, line", [
    ("alice tok-1\nbob\n", 2),
    ("# c\nalice tok-1 admin extra\n", 2),
    ("alice tok-1 root\n", 1),
    ("alice tok-1\n\nbob tok-1 read\n", 3),
])
def test_a_malformed_line_is_an_error_naming_its_number(text, line):
    with pytest.raises(ValueError, match=f"tokens line {line}: "):
        TokenAuth.parse(text, "tokens")


def test_a_file_without_tokens_is_an_error():
    with pytest.raises(ValueError, match="no tokens"):
        TokenAuth.parse("# nothing yet\n\n")


def test_the_secret_stays_out_of_repr(auth):
    assert "tok-alice-1" not in repr(auth)
