"""What agent tools cost: the daemon's work per tool call, and the MCP policy proxy's hop.

    python bench/agent_tools.py [--runs 3] [--calls 200] [--proxy-calls 500] [--only daemon|proxy]

- **daemon overhead per tool call**: the bot in-process (its own wiring, `running_bot`)
  against the Discord emulator (rate limits not enforced, requests not validated) and the fake
  engine, one turn held open so its session is live, and the lock port's `ControlServer` with
  the real tool routes (`install_tool_routes` over `GrantedPlaces`, a grant bound to the held
  session).
  `--calls` sequential `send_message` calls over httpx, one keep-alive client, as the relay
  sends them, started `--interval` apart (33 a second: the bot's REST client keeps under
  Discord's 50 requests a second; the message route's bucket is opened wide, since waiting
  out Discord's limits is not overhead). Measured from the `/tools/call` request reaching its
  route (the HTTP request parsed; stamped by wrapping the route) to the emulator receiving
  the bot's `POST /channels/<thread>/messages` (stamped when its REST handler sees it, so
  the HTTP request and the emulator's parsing of it count as ours), split where the bot's
  REST client hands the request to httpx (an httpx request hook: instrumentation, not an
  API). Everything is one trio loop; every stamp is `trio.current_time()`. The rest of the
  caller's round trip (Discord's answer, the gateway's MESSAGE_CREATE, the route's answer)
  is shown beside it. Target: under 5 ms median.
- **the proxy's added latency per `tools/call`**: the MCP SDK's `ClientSession` calling
  `echo` on the test server (`python -m kimaki.testing.mcp_server`) over stdio, (a) directly
  and (b) through the real proxy process (`python -m kimaki mcp-proxy --server echo`, which
  fetches its plan from a `ControlServer` here serving `install_mcp_routes`, with `echo`
  allowed). Both through `kimaki.mcp.open_upstream`, the project's stdio transport; both
  warmed up, then `--proxy-calls` calls each, sequential and alternating, timed around
  `call_tool` with `time.perf_counter()`. The difference of the medians is the proxy's
  added latency (a process hop: two more pipe writes and reads, and the SDK's server and
  client sessions inside it). Target: under 2 ms median added. Beside it, the CPU time per
  call of the direct echo server and of the proxy process (from /proc, Linux only).

Each measurement runs `--runs` times (fresh bot, fresh processes); the summary is the median
of the runs' medians (and of their p95s).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final

import httpx
import trio
from mcp import ClientSession, types

from kimaki._control import ControlServer, control_url
from kimaki._http import Request, Response
from kimaki.agents import Grants, ToolGrant
from kimaki.bot import Engines
from kimaki.bot._tool_places import GrantedPlaces
from kimaki.mcp import CatalogEntry, ProxyPlan, install_mcp_routes, open_upstream
from kimaki.testing.bot import running_bot
from kimaki.testing.daemon import free_port
from kimaki.testing.discord import open_discord_emulator
from kimaki.testing.engine import RunningTurn, open_fake_engine
from kimaki.testing.script import Say
from kimaki.tools import BUILTIN_TOOLS, ToolBox, install_tool_routes

ROOT = Path(__file__).resolve().parent.parent
# The emulator still advertises its buckets when it does not enforce them, and the bot's REST
# client waits for them as it must: one channel's message bucket (5 per 5 s on Discord) would
# put waits of seconds into the figures. Waiting out Discord's limits is not overhead.
UNLIMITED: Final = {"POST /channels/{channel_id}/messages": (1_000_000, 1.0)}
Route = Callable[[Request], Awaitable[Response]]
Figures = dict[str, list[float]]


def _median(values: list[float]) -> float:
    return statistics.median(values) * 1000


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] * 1000


# -- daemon overhead -------------------------------------------------------------------------


class _StampedRoutes:
    """A `RouteTable` in front of the control server: stamps each request reaching a route."""

    def __init__(self, control: ControlServer) -> None:
        self._control = control
        self.arrivals: list[float] = []

    def add_route(self, method: str, path: str, route: Route) -> None:
        async def stamped(request: Request) -> Response:
            self.arrivals.append(trio.current_time())
            return await route(request)

        self._control.add_route(method, path, stamped)


async def daemon_run(calls: int, warmup: int, interval: float) -> Figures:
    """One bot, one held turn, `warmup + calls` sequential `send_message` calls, one every
    `interval` seconds at most."""
    overhead: list[float] = []
    ours: list[float] = []
    wire: list[float] = []
    answer_back: list[float] = []
    round_trip: list[float] = []
    with tempfile.TemporaryDirectory(prefix="kimaki-bench-") as tmp:
        async with (
            open_fake_engine() as engine,
            open_discord_emulator(
                enforce_rate_limits=False, validate_requests=False, rate_limits=UNLIMITED
            ) as emulator,
            running_bot(emulator, engine, Path(tmp) / "data") as harness,
            trio.open_nursery() as nursery,
        ):
            running, held = trio.Event(), trio.Event()
            session: list[str] = []

            async def responder(turn: RunningTurn) -> None:
                session.append(turn.session.session_id)
                running.set()
                await held.wait()
                await turn.play(Say("done"))

            engine.responder = responder
            control = ControlServer(port=free_port(), data_dir=Path(tmp), health=dict)
            port = await nursery.start(control.serve)
            routes = _StampedRoutes(control)
            grants = Grants()
            engines = Engines({engine.name: engine}, default=engine.name)
            places = GrantedPlaces(grants, engines, harness.bot.threads)
            install_tool_routes(routes, ToolBox(BUILTIN_TOOLS), places)

            message = harness.alice.send_message(harness.channel_id, "hold the turn")
            thread = await harness.thread_of(message)
            await running.wait()
            grant: ToolGrant = grants.mint(engine.name, harness.project_dir)
            grant.session_id = session[0]
            posted_path = f"/channels/{thread}/messages"
            headers = {"Authorization": f"Bearer {grant.token}"}
            handed: list[float] = []

            async def on_request(request: httpx.Request) -> None:
                if request.method == "POST" and request.url.path.endswith(posted_path):
                    handed.append(trio.current_time())

            # Benchmark instrumentation: the bot's REST client hands its request to httpx.
            harness.rest._client.event_hooks["request"].append(on_request)

            async with httpx.AsyncClient(base_url=control_url(port), trust_env=False) as client:
                for n in range(warmup + calls):
                    sent = trio.current_time()
                    next_call = sent + interval
                    answer = await client.post(
                        "/tools/call",
                        json={"name": "send_message", "arguments": {"content": f"note {n}"}},
                        headers=headers,
                    )
                    back = trio.current_time()
                    if answer.status_code != 200 or answer.json().get("isError"):
                        raise RuntimeError(f"the tool call failed: {answer.text}")
                    arrival = routes.arrivals[-1]
                    posted = _first_post(emulator.rest.requests, posted_path, arrival)
                    if n >= warmup:
                        overhead.append(posted - arrival)
                        ours.append(handed[-1] - arrival)
                        wire.append(posted - handed[-1])
                        answer_back.append(back - posted)
                        round_trip.append(back - sent)
                    await trio.sleep_until(next_call)
            held.set()
            nursery.cancel_scope.cancel()
    return {
        "overhead": overhead,
        "to_httpx": ours,
        "httpx_to_discord": wire,
        "answer_back": answer_back,
        "round_trip": round_trip,
    }


def _first_post(requests: Any, path: str, since: float) -> float:
    """When the emulator first saw `POST path` at or after `since` (calls are sequential)."""
    found: float | None = None
    for at, method, seen in reversed(requests):
        if at < since:
            break
        if method == "POST" and seen == path:
            found = at
    if found is None:
        raise RuntimeError(f"no POST {path} reached the emulator")
    return found


# -- proxy hop -------------------------------------------------------------------------------


class _OnePlan:
    """The policy side of `/mcp/plan`: server "echo", with `echo` allowed."""

    def __init__(self, entry: CatalogEntry) -> None:
        self._plan = ProxyPlan(entry, frozenset({"echo"}))

    async def proxy_plan(self, grant: ToolGrant, server: str) -> ProxyPlan | None:
        return self._plan if server == "echo" else None


def _stdio(name: str, args: tuple[str, ...], env: Mapping[str, str]) -> CatalogEntry:
    # LC_ALL stops Python from setting LC_CTYPE in the child (PEP 538); PYTHONPATH finds kimaki
    # from a checkout that is not installed.
    base = {"LC_ALL": "C.UTF-8", "PYTHONPATH": str(ROOT)}
    return CatalogEntry(
        name=name, transport="stdio", command=sys.executable, args=args, env={**base, **env}
    )


async def _echo(session: ClientSession, text: str) -> str:
    result = await session.call_tool("echo", {"text": text})
    content = result.content[0]
    if result.isError or not isinstance(content, types.TextContent):
        raise RuntimeError(f"echo failed: {result}")
    return content.text


def _child_cpu(marker: str) -> float:
    """CPU seconds (user + system) of this process's child whose command line holds
    `marker`, from /proc (Linux; NaN elsewhere or when there is none)."""
    clock = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and marker.encode() in command:
            return (int(fields[11]) + int(fields[12])) / clock
    return float("nan")


async def proxy_run(calls: int, warmup: int) -> Figures:
    """Two warm sessions, direct and proxied; `calls` echoes each, alternating."""
    server = _stdio("echo", ("-m", "kimaki.testing.mcp_server"), {})
    direct: list[float] = []
    proxied: list[float] = []
    with tempfile.TemporaryDirectory(prefix="kimaki-bench-") as tmp:
        async with trio.open_nursery() as nursery:
            control = ControlServer(port=free_port(), data_dir=Path(tmp), health=dict)
            port = await nursery.start(control.serve)
            grants = Grants()
            grant = grants.mint("bench", Path(tmp))
            install_mcp_routes(control, _OnePlan(server), grants)
            proxy = _stdio(
                "proxy",
                ("-m", "kimaki", "mcp-proxy", "--server", "echo"),
                {"KIMAKI_CONTROL_URL": control_url(port), "KIMAKI_GRANT": grant.token},
            )
            async with (
                open_upstream(server, stderr="discard") as plain,
                open_upstream(proxy, stderr="discard") as through,
            ):
                for session in (plain, through):
                    if await _echo(session, "ping") != "ping":
                        raise RuntimeError("echo did not echo")
                for n in range(warmup + calls):
                    if n == warmup:
                        cpu = {m: _child_cpu(m) for m in ("mcp-proxy", "mcp_server")}
                    for session, figures in ((plain, direct), (through, proxied)):
                        started = time.perf_counter()
                        await _echo(session, f"call {n}")
                        took = time.perf_counter() - started
                        if n >= warmup:
                            figures.append(took)
                cpu = {m: (_child_cpu(m) - cpu[m]) / calls for m in cpu}
            nursery.cancel_scope.cancel()
    return {
        "direct": direct,
        "proxied": proxied,
        "server_cpu": [cpu["mcp_server"]],
        "proxy_cpu": [cpu["mcp-proxy"]],
    }


# -- report ----------------------------------------------------------------------------------


def _summary(runs: list[Figures]) -> dict[str, dict[str, Any]]:
    """Per measure: the median over runs of each run's median (and p95), in ms."""
    summary: dict[str, dict[str, Any]] = {}
    for name in runs[0]:
        figures: dict[str, Any] = {
            "median_ms": statistics.median(_median(run[name]) for run in runs),
            "runs_median_ms": [round(_median(run[name]), 3) for run in runs],
        }
        if all(len(run[name]) > 1 for run in runs):
            figures["p95_ms"] = statistics.median(_p95(run[name]) for run in runs)
        summary[name] = figures
    return summary


async def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "load_average_before": os.getloadavg()[0],
    }
    if args.only in (None, "daemon"):
        runs = []
        for n in range(args.runs):
            runs.append(await daemon_run(args.calls, args.warmup, args.interval))
            print(f"daemon run {n + 1}: {_median(runs[-1]['overhead']):.3f} ms", file=sys.stderr)
        report["daemon"] = _summary(runs)
    if args.only in (None, "proxy"):
        runs = []
        for n in range(args.runs):
            runs.append(await proxy_run(args.proxy_calls, args.warmup))
            added = _median(runs[-1]["proxied"]) - _median(runs[-1]["direct"])
            print(f"proxy run {n + 1}: +{added:.3f} ms", file=sys.stderr)
        summary = _summary(runs)
        summary["added"] = {
            "median_ms": statistics.median(
                _median(run["proxied"]) - _median(run["direct"]) for run in runs
            )
        }
        report["proxy"] = summary
    report["load_average_after"] = os.getloadavg()[0]
    return report


def _print_table(report: dict[str, Any]) -> None:
    print(
        f"\nPython {report['python']}, {report['cpus']} CPUs, load average "
        f"{report['load_average_before']:.2f} before, {report['load_average_after']:.2f} after"
    )
    print("medians of runs (ms)" + " " * 38 + f"{'median':>8}{'p95':>9}")
    rows = [
        ("daemon", "overhead", "tool call at the route → message POST at Discord"),
        ("daemon", "to_httpx", "  route → the bot's REST request handed to httpx"),
        ("daemon", "httpx_to_discord", "  httpx → the emulator's REST handler"),
        ("daemon", "answer_back", "message POST at Discord → answer at the caller"),
        ("daemon", "round_trip", "the caller's round trip (httpx POST → answer)"),
        ("proxy", "direct", "echo over stdio, direct"),
        ("proxy", "proxied", "echo over stdio, through kimaki mcp-proxy"),
        ("proxy", "added", "  added by the proxy (difference of medians)"),
        ("proxy", "server_cpu", "CPU per call: the echo server (direct)"),
        ("proxy", "proxy_cpu", "CPU per call: the proxy process"),
    ]
    for part, name, label in rows:
        if part not in report:
            continue
        figures = report[part][name]
        p95 = f"{figures['p95_ms']:9.3f}" if "p95_ms" in figures else ""
        print(f"{label:58}{figures['median_ms']:8.3f}{p95}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--calls", type=int, default=200, help="tool calls per daemon run")
    parser.add_argument("--proxy-calls", type=int, default=500, help="echoes per session per run")
    parser.add_argument(
        "--interval",
        type=float,
        default=0.03,
        help="seconds between tool calls' starts (the bot's REST client keeps under 50/s)",
    )
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--only", choices=("daemon", "proxy"))
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    report = trio.run(run, args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
