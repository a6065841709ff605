"""The redactor's shapes, one by one: what is replaced, what is kept, and how it is shown."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from kimaki._log import configure_logging, open_log_file
from kimaki._redact import (
    REDACTED,
    is_secret_name,
    redact,
    redact_data,
    register_environment,
    register_secret,
    secret_reason,
)
from kimaki.agents import child_environment

PROVIDER_KEY = "prov-key-5b1e0f6d2c7a4e98"


def test_a_named_environment_value_is_shown_by_its_name() -> None:
    register_environment({"ANTHROPIC_API_KEY": PROVIDER_KEY, "EDITOR": "vim-editor-long"})
    assert redact(f"key={PROVIDER_KEY}!") == "key=[REDACTED:ANTHROPIC_API_KEY]!"
    assert redact(f"xx{PROVIDER_KEY}yy") == "xx[REDACTED:ANTHROPIC_API_KEY]yy"  # inside a word
    assert redact("vim-editor-long") == "vim-editor-long"  # EDITOR is not a secret name


@pytest.mark.parametrize(
    "name",
    [
        "OPENAI_API_KEY",
        "GITHUB_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "DB_PASSWORD",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "HTTP_AUTHORIZATION",
        "KIMAKI_SENTRY_DSN",
        "passwd",
    ],
)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name", ["PATH", "HOME", "max_tokens", "input_tokens", "TOKEN_COUNT", "tokenizer", "PWD"]
)
def test_names_that_are_not_secrets(name: str) -> None:
    assert not is_secret_name(name)


def test_short_values_of_secret_names_are_not_registered() -> None:
    register_environment({"SOME_TOKEN": "true", "OTHER_SECRET": "1234567"})
    assert redact("it is true and 1234567") == "it is true and 1234567"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("DATABASE_PASSWORD=hunter22", f"DATABASE_PASSWORD={REDACTED}"),
        ("export API_KEY='abc def ghi'", f"export API_KEY='{REDACTED}'"),
        ("password: correcthorse", f"password: {REDACTED}"),
        (
            '{"client_secret": "s3cr3t-value", "id": 4}',
            f'{{"client_secret": "{REDACTED}", "id": 4}}',
        ),
        ('{"api_key": "a\\"quoted\\"value"}', f'{{"api_key": "{REDACTED}"}}'),
        ("auth_token = 'xyzw1234'", f"auth_token = '{REDACTED}'"),
    ],
)
def test_assignments_with_secret_names_lose_their_values(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "max_tokens: 4096",
        "input_tokens=12000 output_tokens=300",
        '{"token": null, "password": true}',
        "token: 1234",
        "the password is required",
        "retry_after=1.5 status=429",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == text
    assert secret_reason(text) is None


@pytest.mark.parametrize(
    ("secret", "context"),
    [
        ("Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "curl -H 'Authorization: {}' x"),
        ("MTAxMjM0NTY3ODkwMTIzNDU2.GabcDE.abcdefghijklmnopqrstuvwxyz0123456789AB", "token {}"),
        ("sk-proj-abcdefghijklmnopqrstuvwx", "OPENAI={}"),
        ("sk-ant-api03-abcdefghijklmnopqrstuv", "key {} here"),
        ("ghp_" + "a1B2c3D4e5" * 4, "remote https://{}@github.com/x"),
        ("github_pat_" + "a1B2c3D4e5" * 5, "pat {}"),
        ("xoxb-1234567890-abcdefghij", "slack {}"),
        ("AKIAIOSFODNN7EXAMPLE", "aws {} key"),
        ("AIza" + "b" * 35, "gemini {}"),
        ("gsk_" + "c" * 24, "groq {}"),
        ("user:pa55word", "https://{}@example.com/repo.git"),
    ],
)
def test_key_shapes_are_replaced_wherever_they_are(secret: str, context: str) -> None:
    text = context.format(secret)
    redacted = redact(text)
    assert secret not in redacted
    assert REDACTED in redacted
    assert secret_reason(text) is not None


def test_pem_private_keys_whole_or_cut_short() -> None:
    body = "MIIEowIBAAKCAQEAx4fcq1\nZ29vZ2xlLWtleS1ib2R5\n"
    whole = f"before\n-----BEGIN RSA PRIVATE KEY-----\n{body}-----END RSA PRIVATE KEY-----\nafter"
    assert redact(whole) == f"before\n{REDACTED}\nafter"
    cut = f"cat id_ed25519\n-----BEGIN OPENSSH PRIVATE KEY-----\n{body}"
    assert "MIIEow" not in redact(cut)
    assert "ZZ29v" not in redact(cut)


def test_redaction_is_idempotent() -> None:
    register_secret(PROVIDER_KEY, "OPENAI_API_KEY")
    text = f"OPENAI_API_KEY={PROVIDER_KEY} Bearer abcdefghijkl password: hunter22"
    once = redact(text)
    assert redact(once) == once


def test_a_longer_secret_wins_over_one_it_contains() -> None:
    register_secret("abcdefgh12", "SHORT_TOKEN")
    register_secret("abcdefgh12345678", "LONG_TOKEN")
    assert redact("abcdefgh12345678") == "[REDACTED:LONG_TOKEN]"


def test_json_shaped_data_keeps_its_routing_fields() -> None:
    register_secret(PROVIDER_KEY, "OPENAI_API_KEY")
    data = {
        "custom_id": "ask:1:yes",
        "components": [{"type": 2, "label": f"use {PROVIDER_KEY}", "custom_id": "b"}],
        "count": 3,
    }
    assert redact_data(data) == {
        "custom_id": "ask:1:yes",
        "components": [{"type": 2, "label": "use [REDACTED:OPENAI_API_KEY]", "custom_id": "b"}],
        "count": 3,
    }


def test_an_agents_environment_is_registered_where_it_is_built(tmp_path: Path) -> None:
    env = child_environment(
        home=tmp_path, source={"GROQ_API_KEY": PROVIDER_KEY, "KIMAKI_BOT_TOKEN": "nope-never"}
    )
    assert env["GROQ_API_KEY"] == PROVIDER_KEY  # the agent still gets its key
    assert "KIMAKI_BOT_TOKEN" not in env
    assert redact(f"GROQ_API_KEY={PROVIDER_KEY}") == "GROQ_API_KEY=[REDACTED:GROQ_API_KEY]"


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    configure_logging()
    path = tmp_path / "kimaki.log"
    handler = open_log_file(path)
    yield path
    logging.getLogger("kimaki").removeHandler(handler)
    handler.close()


def test_the_log_shows_which_secret_was_there(log_file: Path) -> None:
    register_environment({"OPENAI_API_KEY": PROVIDER_KEY})
    logging.getLogger("kimaki.agent").info("env: %s", json.dumps({"k": PROVIDER_KEY}))
    text = log_file.read_text()
    assert PROVIDER_KEY not in text
    assert '[AGENT] env: {"k": "[REDACTED:OPENAI_API_KEY]"}' in text
