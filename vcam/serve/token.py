"""The remote mode's access token: made on the server's first start, kept in a 0600 file, never in config.toml."""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import stat
from pathlib import Path

from vcam.errors import ConfigError
from vcam.paths import config_dir

log = logging.getLogger(__name__)

#: the environment variable `vcam run --remote` reads its token from
TOKEN_ENV = "VCAM_REMOTE_TOKEN"
#: shortest token accepted from a user (a made one has 32 url-safe characters)
MIN_TOKEN_LENGTH = 16


def server_token_path() -> Path:
    """The server's token file (`vcam serve`)."""
    return config_dir() / "serve-token"


def client_token_path() -> Path:
    """The client's token file (`vcam run --remote`): the server's token, copied by the user."""
    return config_dir() / "remote-token"


def check_token(token: str, what: str) -> str:
    """A token as given by a user: stripped, long enough, printable ASCII without spaces."""
    token = token.strip()
    if len(token) < MIN_TOKEN_LENGTH or not token.isascii() or not token.isprintable() or " " in token:
        raise ConfigError(
            f"{what} must be at least {MIN_TOKEN_LENGTH} printable ASCII characters without spaces: "
            "use the token `vcam serve` prints"
        )
    return token


def read_token_file(path: Path) -> str:
    """The token in `path`, which only its owner may read (mode 0600)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read the token file {path}: {error.strerror or error}") from error
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"the token file {path} is readable by others (mode {mode & 0o777:o}): run chmod 600 {path}")
    return check_token(text, f"the token in {path}")


def write_token_file(path: Path, token: str) -> None:
    """Write `token` to a new 0600 file (an existing file is never overwritten)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")


def load_or_create_server_token(path: Path | None = None) -> tuple[str, bool]:
    """The server's token from its file, made (32 random url-safe characters) on first start: (token, made)."""
    path = path or server_token_path()
    if path.exists():
        return read_token_file(path), False
    token = secrets.token_urlsafe(24)
    write_token_file(path, token)
    log.info("made a new access token in %s", path)
    return token, True


def client_token(given: str | None = None, path: Path | None = None) -> str:
    """The token for `vcam run --remote`: `--token`, else $VCAM_REMOTE_TOKEN, else the client's token file."""
    if given is not None:
        return check_token(given, "--token")
    from_env = os.environ.get(TOKEN_ENV)
    if from_env:
        return check_token(from_env, f"${TOKEN_ENV}")
    path = path or client_token_path()
    if not path.exists():
        raise ConfigError(
            f"no access token for the remote server: give --token, set ${TOKEN_ENV}, or put the token "
            f"`vcam serve` printed in {path} (chmod 600)"
        )
    return read_token_file(path)


def tokens_match(given: str, expected: str) -> bool:
    """Constant-time comparison."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
