from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from kimaki.mcp._catalog import (
    CatalogEntry,
    McpConfigError,
    load_catalog,
    opencode_config_paths,
    strip_jsonc,
)

GITHUB_TOKEN = "ghp_catalogsecret0123456789"
BEARER = "Bearer remote-secret-abcdef"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def mcp_json(tmp_path: Path, servers: object) -> Path:
    return write(tmp_path / "data" / "mcp.json", json.dumps({"mcpServers": servers}))


def test_both_sources_are_read(tmp_path: Path) -> None:
    ours = mcp_json(
        tmp_path,
        {
            "github": {
                "command": "npx",
                "args": ["-y", "@modelcontextprotocol/server-github"],
                "env": {"GITHUB_TOKEN": GITHUB_TOKEN},
            },
            "docs": {"type": "http", "url": "https://docs.example/mcp", "headers": {"X-Key": "k"}},
        },
    )
    local = {"type": "local", "command": ["uvx", "mcp-server-time"], "environment": {"TZ": "UTC"}}
    remote = {"type": "remote", "url": "https://remote.example/mcp", "headers": {"A": BEARER}}
    theirs = write(
        tmp_path / "opencode" / "opencode.json",
        json.dumps({"model": "x/y", "mcp": {"time": local, "remote": remote}}),
    )

    catalog = load_catalog(ours, [theirs])

    assert sorted(catalog) == ["docs", "github", "remote", "time"]
    assert catalog["github"] == CatalogEntry(
        name="github",
        transport="stdio",
        command="npx",
        args=("-y", "@modelcontextprotocol/server-github"),
        env={"GITHUB_TOKEN": GITHUB_TOKEN},
        raw={
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-github"],
            "env": {"GITHUB_TOKEN": GITHUB_TOKEN},
        },
    )
    docs = catalog["docs"]
    assert (docs.transport, docs.url, docs.headers, docs.source) == (
        "http",
        "https://docs.example/mcp",
        {"X-Key": "k"},
        "kimaki",
    )
    time = catalog["time"]
    assert (time.transport, time.command, time.args, time.env, time.source) == (
        "stdio",
        "uvx",
        ("mcp-server-time",),
        {"TZ": "UTC"},
        "opencode",
    )
    assert time.raw == local  # the OpenCode form, to switch that entry off by name
    assert (catalog["remote"].url, catalog["remote"].headers) == (
        "https://remote.example/mcp",
        {"A": BEARER},
    )


def test_mcp_json_wins_a_clash_and_later_opencode_files_win_earlier_ones(tmp_path: Path) -> None:
    ours = mcp_json(tmp_path, {"shared": {"command": "ours"}})
    first = write(
        tmp_path / "a.json",
        json.dumps(
            {
                "mcp": {
                    "shared": {"type": "local", "command": ["theirs"]},
                    "only": {"type": "local", "command": ["first"]},
                }
            }
        ),
    )
    second = write(
        tmp_path / "b.json", json.dumps({"mcp": {"only": {"type": "local", "command": ["second"]}}})
    )

    catalog = load_catalog(ours, [first, second])

    assert (catalog["shared"].command, catalog["shared"].source) == ("ours", "kimaki")
    assert catalog["only"].command == "second"


def test_missing_files_make_an_empty_catalog(tmp_path: Path) -> None:
    assert load_catalog(tmp_path / "mcp.json", [tmp_path / "opencode.json"]) == {}
    assert load_catalog(write(tmp_path / "empty.json", "{}"), []) == {}


def test_opencode_jsonc_comments_and_trailing_commas(tmp_path: Path) -> None:
    theirs = write(
        tmp_path / "opencode.jsonc",
        """{
  // a line comment, with a "quote" in it
  "mcp": {
    /* a block
       comment */
    "web": {
      "type": "remote",
      "url": "https://example.com/mcp//not-a-comment/*nor-this*/",
      "headers": {"A": "x,}"},  // after a value
    },
  },
}
""",
    )

    catalog = load_catalog(tmp_path / "mcp.json", [theirs])

    assert catalog["web"].url == "https://example.com/mcp//not-a-comment/*nor-this*/"
    assert catalog["web"].headers == {"A": "x,}"}


def test_strip_jsonc_keeps_positions_for_error_messages() -> None:
    text = '{\n  /* one\n two */ "a": 1,\n  "b": [1, 2,],\n}'
    stripped = strip_jsonc(text)
    assert json.loads(stripped) == {"a": 1, "b": [1, 2]}
    assert stripped.count("\n") == text.count("\n")
    assert len(stripped) == len(text)


def test_opencode_env_references_resolve(tmp_path: Path) -> None:
    theirs = write(
        tmp_path / "opencode.json",
        json.dumps(
            {
                "mcp": {
                    "gh": {
                        "type": "local",
                        "command": ["gh-mcp", "--org={env:ORG}"],
                        "environment": {"TOKEN": "{env:GH_TOKEN}", "EMPTY": "{env:UNSET}"},
                    }
                }
            }
        ),
    )

    catalog = load_catalog(
        tmp_path / "mcp.json", [theirs], environ={"ORG": "acme", "GH_TOKEN": GITHUB_TOKEN}
    )

    assert catalog["gh"].args == ("--org=acme",)
    assert catalog["gh"].env == {"TOKEN": GITHUB_TOKEN, "EMPTY": ""}
    assert catalog["gh"].raw["environment"]["TOKEN"] == "{env:GH_TOKEN}"


def test_the_name_kimaki_is_reserved(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="kimaki.mcp")
    ours = mcp_json(tmp_path, {"kimaki": {"command": "x"}, "ok": {"command": "y"}})
    theirs = write(
        tmp_path / "opencode.json",
        json.dumps({"mcp": {"Kimaki": {"type": "local", "command": ["z"]}}}),
    )

    catalog = load_catalog(ours, [theirs])

    assert sorted(catalog) == ["ok"]
    reserved = [r for r in caplog.records if "reserved" in r.getMessage()]
    assert len(reserved) == 2


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            '{"mcpServers": {"a": {"command": "x",}}}',
            "is not valid JSON (line 1, column 38: Expecting property name",
        ),
        ("[]", 'must hold a JSON object: {"mcpServers"'),
        ('{"mcpServers": []}', '"mcpServers" must be an object of servers by name'),
        (
            '{"mcpServers": {"gh": {"command": "x", "args": "-y"}}}',
            'server "gh": "args" must be a list of strings; fix that entry or remove it',
        ),
        (
            '{"mcpServers": {"gh": {"command": "x", "env": {"N": 1}}}}',
            'server "gh": "env" must be an object of strings; fix that entry or remove it',
        ),
        (
            '{"mcpServers": {"gh": {"args": []}}}',
            'server "gh": needs a "command" (stdio) or a "url" (http)',
        ),
        (
            '{"mcpServers": {"gh": {"command": "x", "url": "https://x"}}}',
            'server "gh": has both "command" and "url"; keep one',
        ),
        (
            '{"mcpServers": {"old": {"type": "sse", "url": "https://x/sse"}}}',
            'server "old": SSE servers are not supported; give the server\'s Streamable HTTP URL',
        ),
        (
            '{"mcpServers": {"web": {"url": "ftp://x"}}}',
            'server "web": "url" must be an http:// or https:// URL',
        ),
        (
            '{"mcpServers": {"a b": {"command": "x"}}}',
            "server \"a b\": a name is 1 to 64 letters, digits, '_', '-' or '.'",
        ),
    ],
)
def test_a_malformed_mcp_json_says_where_and_how_to_fix_it(
    tmp_path: Path, content: str, expected: str
) -> None:
    path = write(tmp_path / "mcp.json", content)

    with pytest.raises(McpConfigError) as caught:
        load_catalog(path, [])

    message = str(caught.value)
    assert message.startswith(str(path))
    assert expected in message


def test_a_malformed_opencode_config_is_skipped_and_logged_without_values(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="kimaki.mcp")
    broken = write(tmp_path / "broken.json", '{"mcp": {"x": {"type": "local", "command": [')
    entries = {
        "good": {"type": "local", "command": ["fine"]},
        "bad": {"type": "local", "command": "a string", "environment": {"T": GITHUB_TOKEN}},
        "worse": {"type": "remote", "url": "ftp://x", "headers": {"A": BEARER}},
        "odd": {"type": "sse"},
    }
    partial = write(tmp_path / "partial.json", json.dumps({"mcp": entries}))

    catalog = load_catalog(tmp_path / "mcp.json", [broken, partial])

    assert sorted(catalog) == ["good"]
    assert f"{broken}: skipped, not valid JSON or JSONC" in caplog.text
    assert "'bad' skipped: \"command\" must be a list of strings" in caplog.text
    assert "'worse' skipped: \"url\" must be an http:// or https:// URL" in caplog.text
    assert '\'odd\' skipped: "type" must be "local" or "remote"' in caplog.text
    assert GITHUB_TOKEN not in caplog.text
    assert BEARER not in caplog.text


def test_repr_hides_env_and_header_values() -> None:
    stdio = CatalogEntry(
        name="gh", transport="stdio", command="npx", env={"GITHUB_TOKEN": GITHUB_TOKEN}
    )
    http = CatalogEntry(name="web", transport="http", url="https://x", headers={"A": BEARER})

    assert GITHUB_TOKEN not in repr(stdio)
    assert BEARER not in repr(http)
    assert "npx" in repr(stdio)


def test_an_entry_round_trips_through_json() -> None:
    entry = CatalogEntry(
        name="time",
        transport="stdio",
        command="uvx",
        args=("mcp-server-time",),
        env={"TZ": "UTC"},
        source="opencode",
        raw={"type": "local", "command": ["uvx", "mcp-server-time"]},
    )

    assert CatalogEntry.from_json(json.loads(json.dumps(entry.to_json()))) == entry
    with pytest.raises(McpConfigError, match='a stdio server needs a "command"'):
        CatalogEntry.from_json({"name": "x", "transport": "stdio"})


def test_opencode_config_paths(tmp_path: Path) -> None:
    home = tmp_path / "home"

    assert opencode_config_paths({}, home) == [
        home / ".config/opencode/config.json",
        home / ".config/opencode/opencode.json",
        home / ".config/opencode/opencode.jsonc",
    ]
    xdg = tmp_path / "xdg"
    assert opencode_config_paths(
        {"XDG_CONFIG_HOME": str(xdg), "OPENCODE_CONFIG": str(tmp_path / "mine.json")}, home
    ) == [
        xdg / "opencode/config.json",
        xdg / "opencode/opencode.json",
        xdg / "opencode/opencode.jsonc",
        tmp_path / "mine.json",
    ]
