"""Developer tasks: `nox` runs lint, typecheck and the whole test suite (what CI runs).

`nox -s tests` also installs the pinned OpenCode binary from npm into `.cache/opencode`, so
the end-to-end tests run the real thing; `nox -s e2e` runs only those, `nox -s bench` the
benchmarks.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

ROOT = Path(__file__).parent
OPENCODE_VERSION = "1.18.33"
OPENCODE_PREFIX = ROOT / ".cache" / "opencode"
LINT_PATHS = [p for p in ("kimaki", "tests", "bench", "noxfile.py") if (ROOT / p).exists()]
# Tool versions are pinned so that a new release cannot fail CI on unchanged code.
RUFF = "ruff==0.17.6"
MYPY = "mypy==2.4.1"
IMPORT_LINTER = "import-linter==2.17"


def install_opencode(session: nox.Session) -> dict[str, str]:
    """Install opencode-ai (pinned) from npm; return the env that points the tests at it."""
    binary = OPENCODE_PREFIX / "node_modules" / ".bin" / "opencode"
    stamp = OPENCODE_PREFIX / "installed-version"
    if not (binary.exists() and stamp.exists() and stamp.read_text() == OPENCODE_VERSION):
        if shutil.which("npm") is None:
            if os.environ.get("CI"):
                session.error("npm is needed to install opencode-ai for the end-to-end tests")
            session.warn("npm not found: the end-to-end tests with the real opencode will skip")
            return {}
        OPENCODE_PREFIX.mkdir(parents=True, exist_ok=True)
        session.run(
            "npm",
            "install",
            "--prefix",
            str(OPENCODE_PREFIX),
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            f"opencode-ai@{OPENCODE_VERSION}",
            external=True,
        )
        stamp.write_text(OPENCODE_VERSION)
    return {"KIMAKI_TEST_OPENCODE": str(binary)}


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite, end-to-end tests with the real opencode included."""
    session.install("-e", ".[test]")
    env = install_opencode(session)
    session.run("pytest", *session.posargs, env=env)


@nox.session
def e2e(session: nox.Session) -> None:
    """Only the end-to-end tests (real opencode binary, fake model server)."""
    session.install("-e", ".[test]")
    env = install_opencode(session)
    session.run("pytest", "-m", "e2e", *session.posargs, env=env)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, and the layering contracts in pyproject.toml (`lint-imports`)."""
    session.install(RUFF, IMPORT_LINTER)
    session.run("ruff", "check", *LINT_PATHS)
    session.run("ruff", "format", "--check", *LINT_PATHS)
    session.run("lint-imports")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test]", MYPY)
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks under bench/; figures go to docs/performance.md."""
    session.install("-e", ".[test]", "discord.py", "hikari")
    env = install_opencode(session)
    scripts = session.posargs or sorted(str(p) for p in (ROOT / "bench").glob("*.py"))
    for script in scripts:
        session.run("python", script, env=env)
