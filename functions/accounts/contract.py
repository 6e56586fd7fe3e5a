"""accounts' HTTP contract: the bodies it takes (decoded and checked by the runtime before a handler runs)
and the answers it gives (for the API reference). Semantic checks (an address's form, a password's
strength) stay in store.py and passwords.py, after decoding."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from msgspec import Meta, Struct

Email = Annotated[str, Meta(max_length=320, description="an e-mail address such as ada@example.com")]
Text = Annotated[str, Meta(max_length=1024)]


class Credentials(Struct):
    codes: ClassVar[dict[str, str]] = {"email": "invalid_email", "password": "invalid_password"}
    email: Email
    password: Annotated[str, Meta(max_length=1024, description="the account's password")]


class ForgotRequest(Struct):
    codes: ClassVar[dict[str, str]] = {"email": "invalid_email"}
    email: Email


class ResetRequest(Struct):
    codes: ClassVar[dict[str, str]] = {"token": "invalid_token", "password": "weak_password"}
    token: Annotated[str, Meta(max_length=1024, description="the one in your reset link")]
    password: Annotated[str, Meta(description="the new password")]


class PasswordChange(Struct):
    codes: ClassVar[dict[str, str]] = {"current": "invalid_password", "new": "weak_password"}
    current: Annotated[str, Meta(description="your password now")]
    new: Annotated[str, Meta(description="the new password")]


class NewKey(Struct):
    name: Annotated[str, Meta(description="what the key is for (at most 100 characters)")] = ""


class Account(Struct):
    id: str
    email: str
    role: Literal["user", "operator"]
    created: str | None = None


class SessionAnswer(Struct):
    account: Account | None


class KeyRecord(Struct):
    id: str
    name: str
    prefix: str = ""
    created: str | None = None
    last_used: str | None = None


class CreatedKey(KeyRecord):
    key: str = ""


class KeyList(Struct):
    keys: list[KeyRecord]


class LogoutQuery(Struct):
    everywhere: Literal["1", "true", "yes"] | None = None
    keys: Literal["1", "true", "yes"] | None = None  # with everywhere: every API key of the account is revoked too


class PasswordReset(Struct):
    """A reset ends every session and revokes every API key: whoever took the account may have made some."""

    status: str
    sessions_ended: int
    keys_revoked: int
    message: str


class Sent(Struct):
    status: str
    message: str = ""
