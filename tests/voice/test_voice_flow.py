"""Voice messages through the bot: the emulator sends them as Discord does, the fake
transcription server transcribes, and the fake engine sees the transcript as the prompt, in
arrival order with the text messages around it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio
from voice_support import KEY, VOICE, voice_bot

from kimaki._audit import AuditEvent, audit_sink
from kimaki.testing.bot import BotHarness, bot_paragraphs, said
from kimaki.testing.discord._state import File
from kimaki.testing.engine import FakeEngine, RunningTurn, echo, hold_long_jobs
from kimaki.testing.script import Hold, Say, Step
from kimaki.testing.transcription import Transcript, TranscriptionServer
from kimaki.voice import TranscriptionSettings


def status_replies(harness: BotHarness, channel_id: str) -> list[str]:
    return [p for p in bot_paragraphs(harness.emulator, channel_id) if p.startswith("🎤")]


async def test_a_voice_message_opens_a_thread_named_from_its_transcript(
    tmp_path: Path, fake_engine: FakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = TranscriptionServer(["Fix the flaky checkout test."])
    async with voice_bot(tmp_path, fake_engine, server) as harness:
        message = harness.alice.send_voice_message(harness.channel_id, VOICE, duration_secs=1.0)
        thread_id = await harness.thread_of(message)
        await harness.emulator.wait_for_message(
            thread_id, said("echo: Fix the flaky checkout test.")
        )
        thread = harness.emulator.state.channels[thread_id]
        assert thread["name"] == "Fix the flaky checkout test."
        lines = bot_paragraphs(harness.emulator, thread_id)
        assert lines.index("📝 Fix the flaky checkout test.") < lines.index(
            "echo: Fix the flaky checkout test."
        )
        [prompt] = fake_engine.prompts
        assert prompt.first_line == "Fix the flaky checkout test."
        assert prompt.files == ()
        [request] = server.requests
        assert request.audio == VOICE  # downloaded from the emulator's CDN
        assert request.key == KEY
        assert harness.project_dir.name in request.prompt
        assert "pyproject.toml" in request.prompt
        # The channel's "Transcribing…" reply is gone once the thread is open.
        await harness.emulator.wait_until(
            lambda: True if not status_replies(harness, harness.channel_id) else None
        )
        # The audio never touched the project directory, nor the attachments folder.
        assert not list(harness.project_dir.glob("*.ogg"))
        assert not (harness.project_dir.parent / "attachments").exists()
        everything = "\n".join(r.getMessage() for r in caplog.records)
        assert KEY not in everything
        for messages in harness.emulator.state.messages.values():
            assert all(KEY not in m["content"] for m in messages.values())


async def test_voice_keeps_arrival_order_with_text_around_it(
    tmp_path: Path, fake_engine: FakeEngine
) -> None:
    release = trio.Event()
    server = TranscriptionServer()
    async with voice_bot(tmp_path, fake_engine, server) as harness:
        emulator, alice = harness.emulator, harness.alice
        first = alice.send_message(harness.channel_id, "first")
        thread_id = await harness.thread_of(first)
        await emulator.wait_for_message(thread_id, said("echo: first"))
        other = alice.send_message(harness.channel_id, "another thread")
        other_thread = await harness.thread_of(other)
        await emulator.wait_for_message(other_thread, lambda m: m["content"].startswith("echo:"))

        server.add(Transcript.held(release, "the spoken part"))
        alice.send_message(thread_id, "before")
        alice.send_voice_message(thread_id, VOICE, duration_secs=2.0)
        await server.wait_for_requests(1)
        await emulator.wait_for_message(thread_id, said("🎤 Transcribing…"))
        alice.send_message(thread_id, "after")
        # Other threads are not held up, and the text behind the voice message waits.
        alice.send_message(other_thread, "still served")
        await emulator.wait_for_message(other_thread, said("echo: still served"))
        assert not any("after" in p.text for p in fake_engine.prompts)

        release.set()
        await emulator.wait_for_message(thread_id, said("📝 the spoken part"))
        await emulator.wait_until(
            lambda: True if any("after" in p.text for p in fake_engine.prompts) else None
        )
        texts = "\n".join(p.text for p in fake_engine.prompts if p.directory)
        assert texts.index("before") < texts.index("the spoken part") < texts.index("after")


async def test_a_voice_message_interrupts_the_running_turn(
    tmp_path: Path, fake_engine: FakeEngine
) -> None:
    async def slow_then_echo(turn: RunningTurn) -> None:
        if "slow" in turn.prompt:
            await turn.play(Say("working on it"), Step(), Hold())
        await echo(turn)

    fake_engine.responder = slow_then_echo
    server = TranscriptionServer(["Stop, do this instead"])
    async with voice_bot(tmp_path, fake_engine, server) as harness:
        message = harness.alice.send_message(harness.channel_id, "slow task")
        thread_id = await harness.thread_of(message)
        await harness.emulator.wait_for_message(thread_id, said("working on it"))
        harness.alice.send_voice_message(thread_id, VOICE, duration_secs=1.0)
        await harness.emulator.wait_for_message(thread_id, said("echo: Stop, do this instead"))
        assert fake_engine.aborts == 1
        assert [p.first_line for p in fake_engine.prompts] == ["slow task", "Stop, do this instead"]


async def test_a_transcript_ending_with_queue_is_queued(
    tmp_path: Path, fake_engine: FakeEngine
) -> None:
    release = hold_long_jobs(fake_engine)
    server = TranscriptionServer(["Then run the linter. Queue this."])
    async with voice_bot(tmp_path, fake_engine, server) as harness:
        message = harness.alice.send_message(harness.channel_id, "a long job")
        thread_id = await harness.thread_of(message)
        await harness.emulator.wait_for_message(thread_id, said("working"))
        harness.alice.send_voice_message(thread_id, VOICE, duration_secs=1.0)
        await harness.emulator.wait_for_message(
            thread_id, lambda m: m["content"].startswith("📋 Queued at position 1")
        )
        assert fake_engine.aborts == 0
        release.set()
        await harness.emulator.wait_for_message(thread_id, said("echo: Then run the linter"))
        assert [p.first_line for p in fake_engine.prompts] == ["a long job", "Then run the linter"]


async def test_text_and_audio_send_both_text_first(tmp_path: Path, fake_engine: FakeEngine) -> None:
    server = TranscriptionServer(["and make it faster"])
    async with voice_bot(tmp_path, fake_engine, server) as harness:
        message = harness.alice.send_message(
            harness.channel_id,
            "look at the parser",
            files=[
                File("memo.m4a", VOICE, "audio/mp4"),
                File("notes.md", b"# keep it small\n", "text/markdown"),
            ],
        )
        thread_id = await harness.thread_of(message)
        await harness.emulator.wait_for_message(thread_id, said("echo: look at the parser"))
        [prompt] = fake_engine.prompts
        assert prompt.text.startswith("look at the parser\n\nand make it faster")
        assert "Attached file notes.md" in prompt.text
        lines = bot_paragraphs(harness.emulator, thread_id)
        assert "📝 and make it faster" in lines
        assert not any("not an image or a text file" in line for line in lines)
        [request] = server.requests
        assert (request.filename, request.mime) == ("memo.m4a", "audio/mp4")


@pytest.mark.parametrize(
    ("answer", "duration", "expected"),
    [
        (Transcript.failure(401, "Invalid API key"), 1.0, "refused it (401 Unauthorized"),
        (Transcript.failure(503, "overloaded"), 1.0, "(503 Service Unavailable: overloaded)"),
        (Transcript(""), 1.0, "the transcript is empty"),
        (None, 11 * 60.0, "it is 11 min long; voice messages of up to 10 min"),
    ],
)
async def test_each_failure_answers_in_one_line(
    tmp_path: Path,
    fake_engine: FakeEngine,
    answer: Transcript | None,
    duration: float,
    expected: str,
) -> None:
    server = TranscriptionServer([answer] if answer is not None else [])
    async with voice_bot(tmp_path, fake_engine, server) as harness:
        first = harness.alice.send_message(harness.channel_id, "first")
        thread_id = await harness.thread_of(first)
        await harness.emulator.wait_for_message(thread_id, said("echo: first"))
        harness.alice.send_voice_message(thread_id, VOICE, duration_secs=duration)
        failure = await harness.emulator.wait_for_message(
            thread_id, lambda m: m["content"].startswith("⚠️")
        )
        assert failure["content"].startswith("⚠️ I could not transcribe the voice message: ")
        assert expected in failure["content"]
        assert "\n" not in failure["content"]
        # Nothing is lost: the next message is served as usual.
        harness.alice.send_message(thread_id, "go on")
        await harness.emulator.wait_for_message(thread_id, said("echo: go on"))
        assert [p.first_line for p in fake_engine.prompts] == ["first", "go on"]
        if answer is None:
            assert server.requests == []  # too long: refused before downloading


async def test_a_failed_transcription_keeps_the_text(
    tmp_path: Path, fake_engine: FakeEngine
) -> None:
    server = TranscriptionServer([Transcript.failure(429, "rate limited")])
    async with voice_bot(tmp_path, fake_engine, server) as harness:
        message = harness.alice.send_message(
            harness.channel_id, "deploy it", files=[File("take.ogg", VOICE, "audio/ogg")]
        )
        thread_id = await harness.thread_of(message)
        await harness.emulator.wait_for_message(thread_id, said("echo: deploy it"))
        lines = bot_paragraphs(harness.emulator, thread_id)
        assert any(line.startswith("⚠️ I could not transcribe take.ogg") for line in lines)
        assert [p.first_line for p in fake_engine.prompts] == ["deploy it"]


async def test_without_a_service_the_answer_says_how_to_set_one_up(
    tmp_path: Path, fake_engine: FakeEngine
) -> None:
    server = TranscriptionServer()
    async with voice_bot(
        tmp_path, fake_engine, server, settings=TranscriptionSettings()
    ) as harness:
        message = harness.alice.send_voice_message(harness.channel_id, VOICE, duration_secs=1.0)
        reply = await harness.emulator.wait_for_message(
            harness.channel_id, lambda m: m["content"].startswith("⚠️")
        )
        assert "/transcription-key" in reply["content"]
        assert reply["message_reference"]["message_id"] == message["id"]
        assert fake_engine.prompts == []
        assert message["id"] not in harness.emulator.state.channels  # no thread was opened


class Trail:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def put_nowait(self, event: AuditEvent) -> None:
        self.events.append(event)


async def test_transcriptions_are_audited_without_their_words(
    tmp_path: Path, fake_engine: FakeEngine
) -> None:
    trail = Trail()
    server = TranscriptionServer(["secret plans", Transcript.failure(500, "boom")])
    with audit_sink(trail):
        async with voice_bot(tmp_path, fake_engine, server) as harness:
            message = harness.alice.send_voice_message(harness.channel_id, VOICE, duration_secs=1.0)
            thread_id = await harness.thread_of(message)
            await harness.emulator.wait_for_message(thread_id, said("echo: secret plans"))
            harness.alice.send_voice_message(thread_id, VOICE, duration_secs=1.0)
            await harness.emulator.wait_for_message(
                thread_id, lambda m: m["content"].startswith("⚠️")
            )
    voice = [e for e in trail.events if e.kind.startswith("voice.")]
    assert [e.kind for e in voice] == ["voice.transcribed", "voice.failed"]
    transcribed, failed = voice
    assert transcribed.channel_id == int(harness.channel_id)
    assert transcribed.thread_id is None
    assert transcribed.user_id == int(harness.alice.id)
    assert transcribed.detail["characters"] == len("secret plans")
    assert "secret plans" not in repr(transcribed)
    assert failed.thread_id == int(thread_id)
    assert "500" in str(failed.detail["reason"])
