"""Every message the thread writer sends, or fails to, is an audit event; redacted first."""

from __future__ import annotations

import attrs

from kimaki._audit import AuditEvent, audit_sink
from kimaki._redact import register_secret
from kimaki.discord.rest import File, RESTClient
from kimaki.testing.discord import open_discord_emulator
from kimaki.threads import ThreadWriter

SECRET = "delivery-secret-4e8a1c"


@attrs.define
class Recorder:
    events: list[AuditEvent] = attrs.Factory(list)

    def put_nowait(self, event: AuditEvent) -> None:
        self.events.append(event)


async def test_deliveries_and_failures_are_audited() -> None:
    register_secret(SECRET, "DEPLOY_TOKEN")
    recorder = Recorder()
    async with (
        open_discord_emulator() as emulator,
        RESTClient(emulator.token, base_url=emulator.api_url, max_retries=0) as rest,
    ):
        workspace = emulator.create_workspace(channels=["project"])
        channel_id = int(workspace.channels["project"]["id"])
        thread = await rest.start_thread(channel_id, "audited")
        writer = ThreadWriter(rest, thread.id)
        with audit_sink(recorder):
            writer.add("x" * 1990 + SECRET)  # two messages: redacted, then split
            await writer.flush()
            await writer.send("here", files=[File("notes.txt", b"notes")])
            emulator.rest.script_error("POST /channels/{channel_id}/messages", status=500)
            assert await writer.post("lost") is None
    sent = [e for e in recorder.events if e.kind == "delivery.sent"]
    failed = [e for e in recorder.events if e.kind == "delivery.failed"]
    assert [e.thread_id for e in sent] == [thread.id] * 3
    posted = emulator.state.messages[str(thread.id)]
    assert {e.detail["message_id"] for e in sent} <= {int(i) for i in posted}
    assert sent[-1].detail["files"] == ["notes.txt"]
    assert "[REDACTED:DEPLOY_TOKEN]" in "".join(m["content"] for m in posted.values())
    (failure,) = failed
    assert failure.thread_id == thread.id
    assert "500" in str(failure.detail["error"])
    assert writer.messages_sent == 3
    assert writer.messages_failed == 1
