"""A registered secret never reaches Discord, whatever cuts the text: properties, through the
real thread writer and REST client, against the Discord emulator.

The secrets are drawn from an alphabet the surrounding text never uses (digits and V-Z), and the
name they are shown by has none of it either, so "not one character of the secret arrived" is
the whole check: a secret split into halves by the 2000-character boundary or a reopened code
fence would leave some of its characters in a message.

Hypothesis drives the examples from a worker thread (`trio.to_thread`), each example's Discord
calls going back to the test's trio loop (`trio.from_thread.run`): one emulator serves them all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kimaki._redact import register_secret
from kimaki.discord.rest import File, RESTClient
from kimaki.testing.discord import DiscordEmulator, open_discord_emulator
from kimaki.threads import ThreadWriter

SECRET_ALPHABET = "0123456789VWXYZ"
NAME = "KIMAKI_TEST_TOKEN"  # shown as [REDACTED:KIMAKI_TEST_TOKEN]: none of the alphabet
FILLER = "abcdefghijklmnop \n`*#>-_.:="

T = TypeVar("T")
# Many messages in a few seconds: Discord's per-channel limits would make the examples wait.
NO_LIMITS = {
    "POST /channels/{channel_id}/messages": (100_000, 1.0),
    "PATCH /channels/{channel_id}": (100_000, 1.0),
}

secrets_ = st.text(alphabet=SECRET_ALPHABET, min_size=8, max_size=80)
filler = st.text(alphabet=FILLER, max_size=300)
# Where the secret starts: anywhere, with extra weight around the 2000-character boundary.
lead = st.one_of(st.integers(0, 4200), st.integers(1900, 2010))
fence = st.sampled_from(["", "```\n", "```python\n", "~~~\n", "`", "\n\n"])

EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def leaked(text: str) -> str:
    return "".join(sorted({c for c in text if c in SECRET_ALPHABET}))


def _padding(size: int) -> str:
    words = "lorem ipsum dolor sit amet\n"
    return (words * (size // len(words) + 1))[:size]


async def _with_emulator(
    body: Callable[[DiscordEmulator, RESTClient, int, int], Awaitable[None]],
) -> None:
    async with open_discord_emulator(rate_limits=NO_LIMITS) as emulator:
        workspace = emulator.create_workspace(channels=["project"])
        channel_id = int(workspace.channels["project"]["id"])
        async with RESTClient(emulator.token, base_url=emulator.api_url) as rest:
            thread = await rest.start_thread(channel_id, "property thread")
            await body(emulator, rest, channel_id, thread.id)


def _in_loop(token: trio.lowlevel.TrioToken) -> Callable[[Callable[[], Awaitable[T]]], T]:
    def run(fn: Callable[[], Awaitable[T]]) -> T:
        return trio.from_thread.run(fn, trio_token=token)

    return run


def _new_messages(emulator: DiscordEmulator, thread_id: int, after: int) -> list[dict[str, Any]]:
    stored = emulator.state.messages.get(str(thread_id), {}).values()
    return sorted((m for m in stored if int(m["id"]) > after), key=lambda m: int(m["id"]))


def _last_id(emulator: DiscordEmulator, thread_id: int) -> int:
    return max((int(i) for i in emulator.state.messages.get(str(thread_id), {})), default=0)


async def test_a_secret_never_survives_the_writers_splits() -> None:
    async def body(emulator: DiscordEmulator, rest: RESTClient, _: int, thread_id: int) -> None:
        run = _in_loop(trio.lowlevel.current_trio_token())

        @EXAMPLES
        @given(secret=secrets_, at=lead, opener=fence, before=filler, after=filler, rest_=filler)
        def check(secret: str, at: int, opener: str, before: str, after: str, rest_: str) -> None:
            register_secret(secret, NAME)
            writer = ThreadWriter(rest, thread_id)
            block = _padding(at) + before + opener + secret + after
            writer.add(block)
            writer.add(rest_ + secret)  # a second block: the secret again, after a join
            floor = _last_id(emulator, thread_id)
            run(writer.flush)
            posted = _new_messages(emulator, thread_id, floor)
            assert posted, "nothing was delivered"
            for message in posted:
                assert len(message["content"]) <= 2000
                assert not leaked(message["content"]), message["content"]
            assert f"[REDACTED:{NAME}]" in "".join(m["content"] for m in posted)

        await trio.to_thread.run_sync(check)

    await _with_emulator(body)


async def test_a_secret_never_survives_in_uploaded_files_or_their_names() -> None:
    async def body(emulator: DiscordEmulator, rest: RESTClient, _: int, thread_id: int) -> None:
        run = _in_loop(trio.lowlevel.current_trio_token())

        @settings(EXAMPLES, max_examples=25)
        @given(secret=secrets_, at=lead, before=filler, after=filler)
        def check(secret: str, at: int, before: str, after: str) -> None:
            register_secret(secret, NAME)
            writer = ThreadWriter(rest, thread_id)
            text = _padding(at) + before + secret + after
            upload = File(f"env-{secret}.txt", text.encode(), description=f"from {secret}")
            floor = _last_id(emulator, thread_id)

            async def send() -> None:
                await writer.send(f"the file {secret}", files=[upload])

            run(send)
            (message,) = _new_messages(emulator, thread_id, floor)
            assert not leaked(message["content"])
            (attachment,) = message["attachments"]
            assert not leaked(attachment["filename"])
            assert not leaked(attachment.get("description", ""))
            stored = emulator.state.files[attachment["id"]].data.decode()
            assert not leaked(stored)
            assert stored.count(f"[REDACTED:{NAME}]") == 1

        await trio.to_thread.run_sync(check)

    await _with_emulator(body)


async def test_a_secret_never_survives_in_a_thread_name() -> None:
    async def body(emulator: DiscordEmulator, rest: RESTClient, channel_id: int, _: int) -> None:
        run = _in_loop(trio.lowlevel.current_trio_token())

        @settings(EXAMPLES, max_examples=25)
        @given(secret=secrets_, at=st.integers(0, 110), after=filler)
        def check(secret: str, at: int, after: str) -> None:
            register_secret(secret, NAME)
            name = ("n" * at + secret + after).replace("\n", " ").strip() or "x"

            async def start() -> Any:
                return await rest.start_thread(channel_id, name)

            thread = run(start)
            stored = emulator.state.channels[str(thread.id)]["name"]
            assert len(stored) <= 100
            assert not leaked(stored), stored

            async def rename() -> Any:
                return await rest.edit_channel(thread.id, name=f"{secret} renamed")

            run(rename)
            assert not leaked(emulator.state.channels[str(thread.id)]["name"])

        await trio.to_thread.run_sync(check)

    await _with_emulator(body)


async def test_the_rest_client_redacts_what_others_post_embeds_and_buttons_included() -> None:
    secret = "90817263545VWXYZ"
    register_secret(secret, NAME)

    async def body(emulator: DiscordEmulator, rest: RESTClient, _: int, thread_id: int) -> None:
        from kimaki.discord.models import ActionRow, Button, ButtonStyle

        floor = _last_id(emulator, thread_id)
        await rest.create_message(
            thread_id,
            f"a notice with {secret} in it",
            embeds=[{"title": f"t {secret}", "description": f"OPENAI_API_KEY={secret}"}],
            components=[
                ActionRow(
                    components=(Button(style=ButtonStyle.PRIMARY, label=secret, custom_id="go"),)
                )
            ],
        )
        (message,) = _new_messages(emulator, thread_id, floor)
        assert message["content"] == f"a notice with [REDACTED:{NAME}] in it"
        assert secret not in str(message["embeds"])
        button = message["components"][0]["components"][0]
        assert button["label"] == f"[REDACTED:{NAME}]"
        assert button["custom_id"] == "go"  # read back when pressed: kept

    await _with_emulator(body)
