"""A lab's identity: its ed25519 key pair, and the trusted-keys file naming the labs whose bundles it accepts.

The key pair lives in the config directory ($XDG_CONFIG_HOME/harness, else ~/.config/harness), owner-only:
`lab.key` (OpenSSH private key), `lab.pub` (`ssh-ed25519 AAAA... LAB`, publishable like an SSH key).
The trusted-keys file has one `LAB ssh-ed25519 AAAA... [comment]` per line, like git's allowed_signers;
`#` starts a comment. A lab's own key is added to it at `keys init`, so a lab can import its own bundles.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from harness.atomic import write_bytes_atomic

LAB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
PRIVATE = "lab.key"
PUBLIC = "lab.pub"
TRUSTED = "trusted_keys"


class KeyProblem(ValueError):
    """A missing, malformed or untrusted key; the message names the file and what to do."""


def config_dir(env: dict[str, str] | None = None) -> Path:
    """$HARNESS_CONFIG_DIR, else $XDG_CONFIG_HOME/harness, else ~/.config/harness."""
    env = os.environ if env is None else env
    if env.get("HARNESS_CONFIG_DIR"):
        return Path(env["HARNESS_CONFIG_DIR"])
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "harness"


def check_lab_name(name: str) -> str:
    if not LAB_NAME.fullmatch(name or ""):
        raise KeyProblem(f"lab name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter "
                        "or digit")
    return name


@dataclass(frozen=True)
class LabKey:
    lab: str
    private: Ed25519PrivateKey

    @property
    def public_line(self) -> str:
        """`ssh-ed25519 AAAA...` (no comment)."""
        return public_openssh(self.private.public_key())

    def trusted_line(self) -> str:
        return f"{self.lab} {self.public_line}"

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)


def public_openssh(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def init_keys(lab: str, directory: Path | None = None, force: bool = False) -> LabKey:
    """Make this lab's key pair (owner-only files in an owner-only folder) and trust it."""
    check_lab_name(lab)
    d = directory or config_dir()
    if (d / PRIVATE).exists() and not force:
        raise KeyProblem(f"{d / PRIVATE} already exists (lab {load_keys(d).lab!r}); keep it, or pass --force to "
                        "replace it (bundles signed with the old key will no longer verify)")
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption())
    write_bytes_atomic(d / PRIVATE, pem, mode=0o600)
    lab_key = LabKey(lab, key)
    write_bytes_atomic(d / PUBLIC, f"{lab_key.public_line} {lab}\n".encode(), mode=0o600)
    trusted = d / TRUSTED
    lines = trusted.read_text().splitlines() if trusted.exists() else []
    lines = [ln for ln in lines if not _is_entry_for(ln, lab)] + [lab_key.trusted_line()]
    write_bytes_atomic(trusted, ("\n".join(lines) + "\n").encode(), mode=0o600)
    return lab_key


def _is_entry_for(line: str, lab: str) -> bool:
    parts = line.split()
    return bool(parts) and not line.lstrip().startswith("#") and parts[0] == lab


def load_keys(directory: Path | None = None) -> LabKey:
    """This lab's key pair; KeyProblem saying to run `harness keys init` when there is none."""
    d = directory or config_dir()
    private, public = d / PRIVATE, d / PUBLIC
    if not private.is_file() or not public.is_file():
        raise KeyProblem(f"no lab key in {d}: run harness keys init --lab NAME")
    mode = private.stat().st_mode & 0o077
    if mode:
        raise KeyProblem(f"{private} is readable by others (mode {oct(private.stat().st_mode & 0o777)}): "
                        f"chmod 600 {private}")
    try:
        key = serialization.load_ssh_private_key(private.read_bytes(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise KeyProblem(f"{private}: not an unencrypted OpenSSH ed25519 private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyProblem(f"{private}: not an ed25519 key")
    try:
        parts = public.read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError) as e:
        raise KeyProblem(f"{public}: cannot be read as text ({e})") from None
    if len(parts) < 3:
        raise KeyProblem(f"{public}: expected 'ssh-ed25519 AAAA... LAB'; run harness keys init --lab NAME --force")
    lab = check_lab_name(parts[2])
    if public_openssh(key.public_key()) != f"{parts[0]} {parts[1]}":
        raise KeyProblem(f"{public} does not match {private}: run harness keys init --lab {lab} --force")
    return LabKey(lab, key)


def local_lab(directory: Path | None = None) -> str | None:
    """This lab's name when it has a key pair, else None (a lab without keys can still import)."""
    try:
        return load_keys(directory).lab
    except KeyProblem:
        return None


@dataclass(frozen=True)
class TrustedKey:
    lab: str
    key: Ed25519PublicKey
    line: str  # `ssh-ed25519 AAAA...`
    where: str  # file:line


def parse_public(text: str, where: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_ssh_public_key(text.encode())
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise KeyProblem(f"{where}: not an OpenSSH ed25519 public key ({e})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyProblem(f"{where}: only ssh-ed25519 keys are accepted")
    return key


def load_trusted(path: Path | None = None) -> list[TrustedKey]:
    """The trusted-keys file (default: the config directory's); a bad line names its file and number."""
    path = path or config_dir() / TRUSTED
    if not path.is_file():
        raise KeyProblem(f"no trusted-keys file at {path}: run harness keys init --lab NAME, then add each "
                        "partner lab's `harness keys show` line to it (or pass --trusted-keys FILE)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise KeyProblem(f"{path}: cannot be read as text ({e})") from None
    out: list[TrustedKey] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        where = f"{path}:{n}"
        if len(parts) < 3:
            raise KeyProblem(f"{where}: expected 'LAB ssh-ed25519 AAAA... [comment]'")
        lab = parts[0]
        if not LAB_NAME.fullmatch(lab):
            raise KeyProblem(f"{where}: {lab!r} is not a lab name")
        pub = f"{parts[1]} {parts[2]}"
        out.append(TrustedKey(lab, parse_public(pub, where), pub, where))
    return out


def verify(trusted: list[TrustedKey], lab: str, public_line: str, signature: bytes, data: bytes) -> TrustedKey:
    """The trusted entry that signed data as lab; KeyProblem when no trusted key of that lab verifies it."""
    mine = [t for t in trusted if t.lab == lab]
    if not mine:
        raise KeyProblem(f"lab {lab!r} is not in the trusted keys: add its `harness keys show` line to trust it")
    for t in mine:
        if t.line == public_line.strip():
            try:
                t.key.verify(signature, data)
            except InvalidSignature:
                raise KeyProblem(f"the signature does not verify with the trusted key of lab {lab!r} ({t.where}): "
                                "the manifest was changed after signing, or signed by another key") from None
            return t
    raise KeyProblem(f"signed with a key that is not the trusted key of lab {lab!r} "
                    f"({', '.join(t.where for t in mine)})")
