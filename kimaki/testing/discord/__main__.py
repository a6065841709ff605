"""`python -m kimaki.testing.discord --port N`: a fake Discord for manual runs and benchmarks.

It seeds a guild (owner, "Kimaki" role, a category with text channels, users holding the role),
prints the URLs and token to point the daemon at, and serves until interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import trio

from kimaki.testing.discord._emulator import open_discord_emulator


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kimaki.testing.discord",
        description="Run a Discord-compatible emulator (REST + gateway) on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=0, help="REST port (default: any free port)")
    parser.add_argument("--gateway-port", type=int, default=0, help="gateway websocket port")
    parser.add_argument("--token", help="bot token to accept (default: a fresh random one)")
    parser.add_argument("--guild", default="Kimaki Test", help="name of the seeded guild")
    parser.add_argument(
        "--channel", action="append", help="text channel to seed (repeatable; default: general)"
    )
    parser.add_argument(
        "--user", action="append", help="user holding the Kimaki role (repeatable; default: alice)"
    )
    parser.add_argument("--no-rate-limits", action="store_true", help="never answer 429 on its own")
    parser.add_argument(
        "--validate",
        action="store_true",
        help="insist on checking request bodies against ../shared/reference/discord-openapi.json"
        " (checked by default whenever the file is present)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line instead")
    return parser


async def _serve(args: argparse.Namespace) -> None:
    async with open_discord_emulator(
        token=args.token,
        port=args.port,
        gateway_port=args.gateway_port,
        enforce_rate_limits=not args.no_rate_limits,
        validate_requests=True if args.validate else None,
    ) as emulator:
        emulator.wait_timeout = None
        space = emulator.create_workspace(
            guild_name=args.guild,
            channels=args.channel or ["general"],
            users=args.user or ["alice"],
        )
        info = {
            "api_url": emulator.api_url,
            "gateway_url": emulator.gateway_url,
            "token": emulator.token,
            "application_id": emulator.application_id,
            "guild_id": space.guild["id"],
            "channels": {name: channel["id"] for name, channel in space.channels.items()},
            "users": {name: actor.id for name, actor in space.users.items()},
        }
        if args.json:
            print(json.dumps(info), flush=True)
        else:
            print(f"REST base URL: {info['api_url']}")
            print(f"Gateway URL:   {info['gateway_url']}")
            print(f"Bot token:     {info['token']}")
            print(f"Guild:         {args.guild} ({info['guild_id']})")
            for name, channel_id in info["channels"].items():
                print(f"Channel:       #{name} ({channel_id})")
            print()
            print(f"KIMAKI_DISCORD_API_URL={info['api_url']} KIMAKI_BOT_TOKEN={info['token']}")
            sys.stdout.flush()
        await trio.sleep_forever()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        trio.run(_serve, args)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
