"""`/transcription-key` and `/transcription`: the key is stored, used, never shown, and never
handed to an agent."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from voice_support import VOICE, answer, commands_ready, voice_bot

from kimaki.agents._process import child_environment
from kimaki.testing.bot import said
from kimaki.testing.engine import FakeEngine
from kimaki.testing.transcription import TranscriptionServer
from kimaki.voice import TranscriptionSettings

STORED_KEY = "gsk-stored-voice-key-9876543210"
EPHEMERAL = 1 << 6


async def test_a_stored_key_is_used_and_never_shown(
    tmp_path: Path, fake_engine: FakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = TranscriptionServer(["ship it"])

    # A server of one's own for Groq's wire: the stored key picks the provider, the
    # environment's base URL still applies to it.
    def settings(url: str) -> TranscriptionSettings:
        return TranscriptionSettings(base_url=url)

    async with voice_bot(tmp_path, fake_engine, server, settings=settings) as harness:
        await commands_ready(harness)
        emulator = harness.emulator
        shown = await answer(
            emulator, harness.alice.run_command(harness.channel_id, "transcription")
        )
        assert "`openai`" in shown["content"]
        assert "no key" in shown["content"]

        refused = await answer(
            emulator,
            harness.stranger("bob").run_command(
                harness.channel_id, "transcription-key", {"provider": "groq", "key": STORED_KEY}
            ),
        )
        assert "refused" in refused["content"] or "Kimaki" in refused["content"]
        # alice has the Kimaki role but is not a manager.
        refused = await answer(
            emulator,
            harness.alice.run_command(
                harness.channel_id, "transcription-key", {"provider": "groq", "key": STORED_KEY}
            ),
        )
        assert "Only the server owner" in refused["content"]
        assert await harness.store.credentials.get_transcription_key() is None

        stored = await answer(
            emulator,
            harness.owner.run_command(
                harness.channel_id, "transcription-key", {"provider": "groq", "key": STORED_KEY}
            ),
        )
        assert stored["flags"] & EPHEMERAL
        assert "Stored the `groq` key" in stored["content"]
        assert await harness.store.credentials.get_transcription_key() == ("groq", STORED_KEY)

        shown = await answer(
            emulator, harness.owner.run_command(harness.channel_id, "transcription")
        )
        assert "`groq`" in shown["content"]
        assert "`whisper-large-v3-turbo`" in shown["content"]
        assert "/transcription-key" in shown["content"]

        message = harness.owner.send_voice_message(harness.channel_id, VOICE, duration_secs=1.0)
        thread_id = await harness.thread_of(message)
        await emulator.wait_for_message(thread_id, said("echo: ship it"))
        [request] = server.requests
        assert request.key == STORED_KEY

        for messages in emulator.state.messages.values():
            assert all(STORED_KEY not in m["content"] for m in messages.values())
        assert all(STORED_KEY not in r.getMessage() for r in caplog.records)
        assert all(STORED_KEY not in prompt.text for prompt in fake_engine.prompts)

        cleared = await answer(
            emulator,
            harness.owner.run_command(
                harness.channel_id, "transcription-key", {"provider": "groq", "key": "clear"}
            ),
        )
        assert "removed" in cleared["content"]
        assert await harness.store.credentials.get_transcription_key() is None


async def test_a_key_that_is_not_one_is_refused(tmp_path: Path, fake_engine: FakeEngine) -> None:
    server = TranscriptionServer()
    async with voice_bot(tmp_path, fake_engine, server) as harness:
        await commands_ready(harness)
        refused = await answer(
            harness.emulator,
            harness.owner.run_command(
                harness.channel_id,
                "transcription-key",
                {"provider": "openai", "key": "a b c d e f"},
            ),
        )
        assert "does not look like an API key" in refused["content"]
        assert await harness.store.credentials.get_transcription_key() is None


def test_the_key_never_reaches_an_agent_environment() -> None:
    source = {
        "PATH": "/usr/bin",
        "KIMAKI_TRANSCRIPTION_API_KEY": "sk-kimaki-transcription-0123456789",
        "KIMAKI_TRANSCRIPTION_PROVIDER": "openai",
    }
    env = child_environment(source=source)
    assert not any(name.startswith("KIMAKI_TRANSCRIPTION") for name in env)
    assert "sk-kimaki-transcription-0123456789" not in env.values()
