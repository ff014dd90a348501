"""Users and API tokens: shown once, stored as salted hashes, constant-time checks, revocation."""

from __future__ import annotations

import pytest

from toonbooth.core.errors import InputError, NotFoundError
from toonbooth.runtime.users import Users


@pytest.fixture()
def users(tmp_path):
    u = Users(tmp_path / "toonbooth.db")
    yield u
    u.close()


def test_add_and_authenticate(users, tmp_path):
    assert not users.has_users()
    token = users.add_user("alice")
    bob = users.add_user("bob")
    assert token.startswith("tb_") and token != bob and users.has_users()
    assert users.authenticate(token) == "alice" and users.authenticate(bob) == "bob"
    # tokens survive a restart (a new Users over the same database)
    again = Users(tmp_path / "toonbooth.db")
    assert again.authenticate(token) == "alice"
    again.close()
    # the secret never reaches the disk
    secret = token.split("_", 2)[2]
    users.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("toonbooth.db*"))
    assert secret.encode() not in raw and token.encode() not in raw


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),
        lambda t: t + "x",
        lambda t: "tb_000000000000_" + t.split("_", 2)[2],
        lambda t: "",
        lambda t: t.upper(),
        lambda t: None,
    ],
)
def test_wrong_tokens_are_refused(users, mangle):
    token = users.add_user("alice")
    assert users.authenticate(mangle(token)) is None


def test_basic_auth_pairs_user_and_token(users):
    token = users.add_user("alice")
    bob = users.add_user("bob")
    assert users.authenticate_basic("alice", token) == "alice"
    assert users.authenticate_basic("bob", token) is None  # alice's token is not bob's password
    assert users.authenticate_basic("alice", bob) is None
    assert users.authenticate_basic("alice", "") is None and users.authenticate_basic(None, None) is None


def test_list_extra_tokens_and_revoke(users):
    first = users.add_user("alice")
    second = users.add_token("alice")
    users.add_user("bob")
    assert [(u.name, u.tokens) for u in users.list_users()] == [("alice", 2), ("bob", 1)]
    assert users.authenticate(second) == "alice"
    assert users.revoke("alice") == 2
    assert users.authenticate(first) is None and users.authenticate(second) is None
    assert [(u.name, u.tokens) for u in users.list_users()] == [("alice", 0), ("bob", 1)]
    users.revoke("bob", delete_user=True)
    assert [u.name for u in users.list_users()] == ["alice"]
    with pytest.raises(NotFoundError):
        users.revoke("carol")
    with pytest.raises(NotFoundError):
        users.add_token("carol")


@pytest.mark.parametrize("name", ["", "a b", "../x", "x" * 65, "al\nice", "-dash"])
def test_bad_names_are_refused(users, name):
    with pytest.raises(InputError, match="`name`"):
        users.add_user(name)


def test_duplicate_user_is_refused(users):
    users.add_user("alice")
    with pytest.raises(InputError, match="already exists"):
        users.add_user("alice")
