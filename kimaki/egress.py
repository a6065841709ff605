"""The file egress policy: the one gate every file leaves the machine by.

A file reaches Discord from three places: an agent's `send_file` tool (a path the model chose),
`/diff` (text the bot made from the working tree) and, later, answers the bot sends as files.
Each passes here, and each decision, sent or refused, is an audit event (`egress.sent`,
`egress.refused`: why, the name, the size).

What leaves, by content, never by name alone:

- text (no NUL byte, valid UTF-8), at most `TEXT_LIMIT`: as a redacted copy (`kimaki._redact`);
- PNG, JPEG, GIF and WebP images whose bytes are the type their name says, at most
  `IMAGE_LIMIT`: as they are;
- PDF (named `.pdf` and starting like one), at most `IMAGE_LIMIT`: its text, extracted with
  `pypdf` and redacted, as `<name>.txt`; refused with the reason when it has no text to give;
- anything else is refused with a one-line reason fit for the thread. A binary renamed
  `notes.txt`, or a PNG named `notes.txt` or `photo.jpg`, is refused: a name that lies about its
  content is a way around the checks.

Paths (`prepare_path`) are checked before anything is read, after resolving symlinks: outside the
session's directory, inside the daemon's data dir (its token, every thread's records, the agents'
runtime homes), or sensitive by name (`sensitive_reason`: `.env*`, keys, SSH and cloud
credentials, the agents' login files) is refused, never sanitised. A sensitive name is checked on
the path as asked and as resolved, so neither a link to `.env` nor a link named `.env` passes.
"""

from __future__ import annotations

import io
import logging
import os
import stat
from pathlib import Path, PurePosixPath
from typing import Final, Literal, final

import attrs
import trio

from kimaki._audit import audit
from kimaki._redact import redact
from kimaki.errors import KimakiError

__all__ = [
    "IMAGE_LIMIT",
    "MIB",
    "PDF_PAGE_LIMIT",
    "TEXT_LIMIT",
    "EgressRefused",
    "Origin",
    "Outgoing",
    "in_data_dir",
    "prepare_bytes",
    "prepare_path",
    "prepare_text",
    "recheck",
    "refusal_line",
    "screen",
    "sensitive_reason",
    "size_text",
]

log = logging.getLogger("kimaki.egress")

MIB: Final = 1024 * 1024
TEXT_LIMIT: Final = 5 * MIB
IMAGE_LIMIT: Final = 25 * MIB
PDF_PAGE_LIMIT: Final = 2000
"""Pages read of a PDF at most (a crafted one must not keep a worker thread for minutes)."""

Kind = Literal["text", "image", "pdf"]

_IMAGES: Final[dict[str, tuple[str, str]]] = {
    # extension -> (the type its content must be, the content type sent)
    ".png": ("PNG", "image/png"),
    ".jpg": ("JPEG", "image/jpeg"),
    ".jpeg": ("JPEG", "image/jpeg"),
    ".gif": ("GIF", "image/gif"),
    ".webp": ("WebP", "image/webp"),
}
_IMAGE_TYPES: Final = frozenset(kind for kind, _ in _IMAGES.values())
_TEXT_TYPE: Final = "text/plain; charset=utf-8"

# Sensitive by name: refused whatever they hold. Compared lowercased.
_SENSITIVE_DIRECTORIES: Final[dict[str, str]] = {
    ".ssh": "SSH keys and configuration",
    ".aws": "cloud credentials",
    ".gnupg": "GnuPG keys",
    ".docker": "registry credentials",
    ".kube": "cluster credentials",
    # The agents' isolated homes (kimaki.agents.acp: <data>/agent-runtime/<name>, and OMP's
    # sessions); inside the data dir as well, named here for a copy or a link elsewhere.
    "agent-runtime": "an agent's runtime home",
    "omp-agent-runtime": "an agent's runtime home",
}
_CREDENTIAL_FILES: Final = frozenset(
    {
        ".netrc",
        "_netrc",
        ".npmrc",
        ".pypirc",
        ".pgpass",
        ".htpasswd",
        ".git-credentials",
        ".credentials.json",  # Claude's login
        "credentials",
        "credentials.json",
        "credentials.yml",
        "credentials.yaml",
        "credentials.toml",
        "oauth_creds.json",  # Gemini's login
        "google_accounts.json",
    }
)
# The agents' login files relative to a home (kimaki.agents.acp's credential files).
_AGENT_LOGINS: Final = (
    (".local", "share", "opencode", "auth.json"),
    (".gemini", "oauth_creds.json"),
    (".claude", ".credentials.json"),
)
_KEY_PREFIXES: Final = ("id_rsa", "id_dsa", "id_ecdsa", "id_ed25519")
_KEY_SUFFIXES: Final = (".pem", ".key", ".p12", ".pfx")


class EgressRefused(KimakiError):
    """A file the policy does not let out; `reason` is one line, fit for the thread."""

    def __init__(self, reason: str, *, size: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.size = size
        """The file's size, when it was known (for the audit trail)."""


@final
@attrs.frozen
class Origin:
    """Who is sending, for the audit trail: `via` is the exit (`send_file`, `diff`, ...)."""

    via: str
    channel_id: int | None = None
    thread_id: int | None = None
    user_id: int | None = None


@final
@attrs.frozen
class Outgoing:
    """What may leave: `data` under `name`, as `content_type`."""

    name: str
    data: bytes
    content_type: str
    kind: Kind
    source_size: int
    """The size of what was asked for (the PDF, the text before redaction)."""
    redacted: bool = False
    """Whether redaction changed the text."""
    pages: int = 0
    """The pages a PDF's text came from."""
    source: Path | None = None
    """The file it was read from (resolved), for `prepare_path`."""

    def describe(self) -> str:
        """A few words on what was done to it, for the sender ("" when sent as it was)."""
        parts = []
        if self.kind == "pdf":
            parts.append(f"the text of {self.pages} PDF page(s)")
        if self.redacted:
            parts.append("secrets redacted")
        return ", ".join(parts)


def size_text(size: int, limit: int | None = None) -> str:
    """A size as a person reads it; never rounded onto the `limit` it is compared with."""
    if size < 1024:
        return f"{size} bytes"
    if size < MIB:
        return f"{size / 1024:.1f} KiB"
    text = f"{size / MIB:.1f} MiB"
    if limit is not None and size != limit and text == f"{limit / MIB:.1f} MiB":
        return f"{size:,} bytes"
    return text


# ---- names


def sensitive_reason(relative: str | os.PathLike[str]) -> str | None:
    """Why a path (relative to the project) names a file that is never sent, or None."""
    parts = [part.lower() for part in PurePosixPath(os.fspath(relative)).parts if part != "/"]
    if not parts:
        return None
    for part in parts[:-1]:
        if part in _SENSITIVE_DIRECTORIES:
            return f"it is inside {part}/ ({_SENSITIVE_DIRECTORIES[part]})"
    name = parts[-1]
    if name in _SENSITIVE_DIRECTORIES:
        return f"it is {name}/ ({_SENSITIVE_DIRECTORIES[name]})"
    for login in _AGENT_LOGINS:
        if tuple(parts[-len(login) :]) == login:
            return "it is an agent's login file"
    if name.startswith(".env"):
        return "it is an environment file (.env*), which holds secrets"
    if name.startswith(_KEY_PREFIXES) or name.endswith(_KEY_SUFFIXES):
        return "it is a key file"
    if name in _CREDENTIAL_FILES:
        return "it is a credentials file"
    return None


# ---- content


def _sniff(data: bytes) -> str | None:
    """The type `data` starts like, by its magic bytes (None: none known)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data.startswith(b"%PDF-"):
        return "PDF"
    for magic, kind in _BINARY_MAGIC:
        if data.startswith(magic):
            return kind
    return None


_BINARY_MAGIC: Final = (
    (b"\x7fELF", "an ELF executable"),
    (b"MZ", "a Windows executable"),
    (b"\xcf\xfa\xed\xfe", "a Mach-O executable"),
    (b"\xca\xfe\xba\xbe", "a Mach-O or Java class file"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
)


def _what(data: bytes) -> str:
    kind = _sniff(data)
    if kind is None:
        return "binary data"
    return f"a {kind} image" if kind in _IMAGE_TYPES else ("a PDF" if kind == "PDF" else kind)


_ALLOWED: Final = "text, PNG/JPEG/GIF/WebP images and PDFs are sent"


def screen(name: str, data: bytes) -> Outgoing:
    """What of `data`, named `name`, may leave; `EgressRefused` with the reason otherwise.

    Blocking (redaction of megabytes, PDF extraction): run it in a worker thread.
    """
    suffix = PurePosixPath(name).suffix.lower()
    kind = _sniff(data)
    size = len(data)
    if suffix in _IMAGES:
        expected, content_type = _IMAGES[suffix]
        if kind != expected:
            raise EgressRefused(
                f"{name} is named as a {expected} image but holds {_what(data)}; not sent"
            )
        if size > IMAGE_LIMIT:
            raise EgressRefused(
                f"{name} is {size_text(size, IMAGE_LIMIT)}; images are sent up to "
                f"{IMAGE_LIMIT // MIB} MiB"
            )
        return Outgoing(name, data, content_type, "image", size)
    if kind in _IMAGE_TYPES:
        raise EgressRefused(f"{name} holds a {kind} image under another name; not sent")
    if kind == "PDF" and suffix != ".pdf":
        raise EgressRefused(f"{name} holds a PDF under another name; not sent")
    if suffix == ".pdf":
        if kind != "PDF":
            raise EgressRefused(f"{name} is named as a PDF but holds {_what(data)}; not sent")
        return _pdf(name, data)
    # The magic bytes of other binaries only name what it is: a text that happens to start
    # with "MZ" or "BM" is still text.
    if b"\0" in data:
        raise EgressRefused(f"{name} is {_what(data)}, not text; only {_ALLOWED}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise EgressRefused(f"{name} is not UTF-8 text; only {_ALLOWED}") from None
    return _text(name, text, size, "text")


def _text(name: str, text: str, source_size: int, kind: Kind, pages: int = 0) -> Outgoing:
    clean = redact(text)
    data = clean.encode("utf-8")
    if len(data) > TEXT_LIMIT:
        raise EgressRefused(
            f"{name} is {size_text(len(data), TEXT_LIMIT)} of text; text is sent up to "
            f"{TEXT_LIMIT // MIB} MiB"
        )
    return Outgoing(name, data, _TEXT_TYPE, kind, source_size, redacted=clean != text, pages=pages)


def _pdf(name: str, data: bytes) -> Outgoing:
    """A PDF's text (pypdf; pure Python, no external program), as `<name>.txt`."""
    # Imported here: only a PDF pays for loading it.
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise EgressRefused(f"{name} is an encrypted PDF; its text cannot be read")
        pages = reader.pages
        count = len(pages)
        if count > PDF_PAGE_LIMIT:
            raise EgressRefused(
                f"{name} has {count} pages; PDFs are sent as text up to {PDF_PAGE_LIMIT} pages"
            )
        texts = [page.extract_text() for page in pages]
    except EgressRefused:
        raise
    except Exception as exc:
        # A crafted or broken PDF can make a parser raise almost anything (PdfReadError,
        # KeyError, RecursionError, ...): whatever it is, the file stays.
        log.info("%s: pypdf could not read it: %r", name, exc)
        raise EgressRefused(f"{name} cannot be read as a PDF; not sent") from None
    text = "\n\n".join(part.strip() for part in texts if part and part.strip())
    if not text:
        raise EgressRefused(f"{name} is a PDF with no text to extract (scanned?); not sent")
    return _text(f"{name}.txt", text + "\n", len(data), "pdf", pages=count)


# ---- the exits


def refusal_line(reason: str) -> str:
    """The line a thread shows for a file the policy kept back."""
    return f"-# 📎 File not sent: {reason}"


def _sent(outgoing: Outgoing, origin: Origin) -> Outgoing:
    audit(
        "egress.sent",
        channel_id=origin.channel_id,
        thread_id=origin.thread_id,
        user_id=origin.user_id,
        via=origin.via,
        name=outgoing.name,
        sent_as=outgoing.kind,
        size=outgoing.source_size,
        sent_size=len(outgoing.data),
        redacted=outgoing.redacted,
    )
    return outgoing


def _refused(exc: EgressRefused, origin: Origin, name: str, size: int | None) -> EgressRefused:
    audit(
        "egress.refused",
        channel_id=origin.channel_id,
        thread_id=origin.thread_id,
        user_id=origin.user_id,
        via=origin.via,
        name=name,
        size=size,
        reason=exc.reason,
    )
    return exc


async def prepare_bytes(name: str, data: bytes, origin: Origin) -> Outgoing:
    """`screen`, in a worker thread, with the decision recorded."""
    try:
        outgoing = await trio.to_thread.run_sync(screen, name, data)
    except EgressRefused as exc:
        raise _refused(exc, origin, name, len(data)) from None
    return _sent(outgoing, origin)


async def recheck(name: str, data: bytes, origin: Origin) -> Outgoing:
    """`screen` again at the last step before Discord, for bytes that should have been prepared
    already: only a refusal is recorded (what passes was recorded where it was prepared)."""
    try:
        return await trio.to_thread.run_sync(screen, name, data)
    except EgressRefused as exc:
        raise _refused(exc, origin, name, len(data)) from None


async def prepare_text(name: str, text: str, origin: Origin) -> Outgoing:
    """Text the bot made itself (a diff, a long answer): redacted, within `TEXT_LIMIT`."""
    size = len(text.encode("utf-8", errors="replace"))
    try:
        outgoing = await trio.to_thread.run_sync(_text, name, text, size, "text")
    except EgressRefused as exc:
        raise _refused(exc, origin, name, size) from None
    return _sent(outgoing, origin)


async def prepare_path(asked: str, *, directory: Path, data_dir: Path, origin: Origin) -> Outgoing:
    """The file at `asked` (relative to `directory`, or absolute), as it may leave.

    `EgressRefused` with the reason, recorded: a path that is not the session's to send, or
    content that does not pass `screen`.
    """
    if "\0" in asked:
        raise _refused(EgressRefused("the path contains a NUL character"), origin, asked, None)
    directory = Path(await trio.Path(directory).resolve())
    data_dir = Path(await trio.Path(data_dir).resolve())
    try:
        path = Path(await (trio.Path(directory) / asked).resolve())
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
        refusal = EgressRefused(f"{asked} cannot be resolved (a symlink loop?)")
        raise _refused(refusal, origin, asked, None) from None
    try:
        data = await trio.to_thread.run_sync(_load, asked, path, directory, data_dir)
    except EgressRefused as exc:
        raise _refused(exc, origin, asked, exc.size) from None
    try:
        outgoing = await trio.to_thread.run_sync(screen, path.name, data)
    except EgressRefused as exc:
        raise _refused(exc, origin, asked, len(data)) from None
    return _sent(attrs.evolve(outgoing, source=path), origin)


def _path_refusal(asked: str, path: Path, directory: Path, data_dir: Path) -> str | None:
    if not path.is_relative_to(directory):
        return f"{asked} is outside the project directory ({directory})"
    if path.is_relative_to(data_dir) and not in_data_dir(directory, data_dir):
        return f"{asked} is inside kimaki's data directory, which tools cannot read"
    # The name as asked (a link named `.env`) and as resolved (a link to `.env`).
    lexical = Path(os.path.normpath(directory / asked))
    for candidate in (lexical, path):
        if candidate.is_relative_to(directory):
            why = sensitive_reason(candidate.relative_to(directory))
            if why is not None:
                return f"{asked} is never sent: {why}"
    return None


def in_data_dir(directory: Path, data_dir: Path) -> bool:
    """Whether `directory` (resolved) is a folder of its own inside the data dir: a worktree
    (`<data>/worktrees/…`) or a project made by `/add-project` (`<data>/projects/…`). Its own
    files are the session's to send; the daemon's files are outside it anyway. The data dir
    itself as a project sends nothing of it."""
    return directory != data_dir and directory.is_relative_to(data_dir)


def _read_limit(name: str) -> int:
    suffix = PurePosixPath(name).suffix.lower()
    return IMAGE_LIMIT if suffix in _IMAGES or suffix == ".pdf" else TEXT_LIMIT


def _load(asked: str, path: Path, directory: Path, data_dir: Path) -> bytes:
    """Check and read `path` (already resolved); runs in a worker thread.

    Opened without following a last symlink and checked on the open file, so a link swapped in
    after the check cannot point the read elsewhere; only a regular file is read (never a FIFO
    or a device), and never more than the limit for its kind.
    """
    refusal = _path_refusal(asked, path, directory, data_dir)
    if refusal is not None:
        raise EgressRefused(refusal)
    limit = _read_limit(path.name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise EgressRefused(f"there is no file at {asked}") from None
    except PermissionError:
        raise EgressRefused(f"{asked} cannot be read (permission denied)") from None
    except OSError as exc:
        raise EgressRefused(f"{asked} cannot be opened ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise EgressRefused(f"{asked} is {kind}; only a regular file is sent")
        if info.st_size > limit:
            raise EgressRefused(_too_big(asked, info.st_size, limit), size=info.st_size)
        file = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise EgressRefused(f"{asked} grew past the limit of {limit // MIB} MiB while being read")
    return data


def _too_big(asked: str, size: int, limit: int) -> str:
    what = "images and PDFs" if limit == IMAGE_LIMIT else "text files"
    return f"{asked} is {size_text(size, limit)}; {what} are sent up to {limit // MIB} MiB"
