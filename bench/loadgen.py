"""Load generators for the benchmarks: wrk when it is installed, else an asyncio httpx client.

wrk is the reference (ANCHORS.md's numbers come from ``wrk -c64``): it is written in C and
leaves most of the CPU to the server. The httpx fallback is pure Python: on a 2-core machine
it competes with the server for the CPU and is usually slower than the server it measures
(a few hundred requests per second here, against wrk's thousands), so it only shows that
every target answers, and its ratios are squeezed towards 1.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

WRK_MARK = "WRKJSON "

# Reports through wrk's done() hook as one JSON line, instead of parsing its human summary.
_WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"non_2xx":%d,"socket_errors":%d,' ..
    '"p50_ms":%.3f,"p99_ms":%.3f}\\n',
    "WRKJSON ", summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


@dataclass(frozen=True)
class Load:
    """What to send: one method and path with `headers`, and `body` as a JSON body when it
    is not empty. Requests rotate through `bearers` (as Authorization) or `variants` (extra
    headers per request), so that each can be another visitor."""

    method: str
    path: str
    bearers: tuple[str, ...] = ()
    body: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    variants: tuple[tuple[tuple[str, str], ...], ...] = ()

    def rotation(self) -> list[dict[str, str]]:
        """The extra headers of each request in turn ([] for a static request)."""
        if self.bearers:
            return [{"Authorization": f"Bearer {b}"} for b in self.bearers]
        return [dict(v) for v in self.variants]


@dataclass(frozen=True)
class Measurement:
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    tool: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "rps": round(self.rps, 1)}


def wrk_path() -> str | None:
    return shutil.which("wrk")


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _wrk_script(load: Load, variants_file: Path) -> str:
    headers = dict(load.headers)
    if load.body:
        headers["Content-Type"] = "application/json"
    setup = f"wrk.method = {_lua_string(load.method)}\n"
    if load.body:
        setup += f"wrk.body = {_lua_string(load.body)}\n"
    for name, value in headers.items():
        setup += f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}\n"
    rotation = load.rotation()
    if not rotation:
        # A static request: wrk's fast path, no Lua per request.
        return setup + _WRK_DONE
    # One line per request variant, tab-separated name/value pairs, read in init(): tens of
    # thousands of variants in a Lua table constructor would overflow LuaJIT's constants.
    variants_file.write_text(
        "".join("\t".join(f"{k}\t{v}" for k, v in h.items()) + "\n" for h in rotation)
    )
    # Every request is formatted once in init(); request() only hands out the next string,
    # so rotating tickets costs wrk almost nothing more than a static request.
    return f"""{setup}
local requests, i = {{}}, 0
init = function(args)
  for line in io.lines({_lua_string(str(variants_file))}) do
    local headers, parts = {{}}, {{}}
    for name, value in pairs(wrk.headers) do headers[name] = value end
    for part in string.gmatch(line, "[^\t]+") do parts[#parts + 1] = part end
    for k = 1, #parts - 1, 2 do headers[parts[k]] = parts[k + 1] end
    requests[#requests + 1] = wrk.format(wrk.method, {_lua_string(load.path)}, headers, wrk.body)
  end
  i = math.random(#requests)  -- threads start at different variants
end
request = function()
  i = i % #requests + 1
  return requests[i]
end
{_WRK_DONE}"""


def run_wrk(
    base_url: str, load: Load, duration_s: float, connections: int, threads: int
) -> Measurement:
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        script = Path(tmp) / "load.lua"
        script.write_text(_wrk_script(load, Path(tmp) / "variants.tsv"))
        argv = [
            wrk_path() or "wrk",
            *(f"-c{connections}", f"-t{threads}", f"-d{max(1, round(duration_s))}s"),
            *("--timeout", "5s", "-s", str(script), base_url + load.path),
        ]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith(WRK_MARK):
            raw = json.loads(line[len(WRK_MARK) :])
            return Measurement(
                requests=raw["requests"],
                seconds=raw["duration_us"] / 1e6,
                non_2xx=raw["non_2xx"],
                socket_errors=raw["socket_errors"],
                p50_ms=round(raw["p50_ms"], 3),
                p99_ms=round(raw["p99_ms"], 3),
                tool="wrk",
            )
    raise RuntimeError(f"wrk gave no summary ({done.returncode}):\n{done.stdout}\n{done.stderr}")


async def _run_httpx(base_url: str, load: Load, duration_s: float, connections: int) -> Measurement:
    latencies: list[float] = []
    non_2xx = errors = 0
    # Every httpx client builds an SSL context, which takes tens of ms here; the URLs are
    # plain http, so one shared context serves all 64 clients.
    tls = ssl.create_default_context()
    deadline = time.perf_counter() + duration_s
    rotation = load.rotation()

    async def worker(offset: int) -> None:
        nonlocal non_2xx, errors
        # One client per connection: a single httpx pool shared by 64 tasks spends its time
        # in the pool's bookkeeping (throughput falls as concurrency rises), while 64 one-
        # connection clients behave like wrk's 64 keep-alive connections.
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(
            base_url=base_url, limits=limits, timeout=5.0, trust_env=False, verify=tls
        ) as client:
            i = offset
            while time.perf_counter() < deadline:
                headers = dict(load.headers)
                if load.body:
                    headers["Content-Type"] = "application/json"
                if rotation:
                    i = (i + 1) % len(rotation)
                    headers.update(rotation[i])
                started = time.perf_counter()
                try:
                    response = await client.request(
                        load.method, load.path, headers=headers, content=load.body or None
                    )
                except httpx.HTTPError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)
                if not 200 <= response.status_code < 400:
                    non_2xx += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker(k * 7919) for k in range(connections)))
    seconds = time.perf_counter() - began
    latencies.sort()

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 3)

    return Measurement(
        requests=len(latencies),
        seconds=seconds,
        non_2xx=non_2xx,
        socket_errors=errors,
        p50_ms=pct(0.5) if latencies else 0.0,
        p99_ms=pct(0.99) if latencies else 0.0,
        tool="httpx",
    )


async def measure(
    base_url: str,
    load: Load,
    duration_s: float,
    connections: int = 64,
    threads: int = 2,
    use_wrk: bool = True,
) -> Measurement:
    if use_wrk:
        # wrk blocks for the whole run: keep the event loop free for anything else.
        return await asyncio.to_thread(run_wrk, base_url, load, duration_s, connections, threads)
    return await _run_httpx(base_url, load, duration_s, connections)
