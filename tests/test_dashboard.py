"""The live dashboard in a real browser: ``idsim up --preset guangzhou-2021 --demo 1`` (35
nodes, memory stores), headless Chromium (Debian's, driven by Playwright for Python) opens
the recursive node's ``/dashboard``; all 35 nodes render, ready; a bounded burst of resolves
through the recursive node (half of them bypassing its cache) makes the displayed network
resolutions/s and some secondary node's resolutions/s change (and, where nodes answer
/metrics, the recursive node's requests/s). Skipped, with the reason printed, when Chromium or
Playwright cannot be had. ``IDSIM_DASHBOARD_SCREENSHOT=docs/dashboard.png`` saves the page
there (the README's screenshot); it is always saved under the test's tmp_path.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from benchmarks.network import free_preset
from network_fixtures import net  # noqa: F401  (fixture)
from resolver.config import Config
from test_cli_up import REPO, Up

pytestmark = pytest.mark.timeout(90)
LOAD_CAP = 30_000      # resolves at most
LOAD_SECONDS = 30.0    # ... and for at most this long


def chromium_or_skip() -> str:
    try:
        import playwright.async_api  # noqa: F401
        from benchmarks.tools import ensure
        return ensure("chromium", ["chromium"])
    except Exception as exc:  # noqa: BLE001 - any reason not to run is printed
        reason = f"no headless Chromium for the dashboard test: {type(exc).__name__}: {exc}"
        print(reason)
        pytest.skip(reason)


def start_cluster(tmp_path: Path) -> Up:
    topo = free_preset("guangzhou-2021")
    data = tmp_path / "data"
    log = tmp_path / "up.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "topology.cli", "up", "--preset", "guangzhou-2021",
             "--demo", "1", "--store", "memory", "--workers", "2", "--port",
             str(topo.recursive.http_port), "--data", str(data)],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    return Up(proc, data, log)


def has_metrics(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


async def load(url: str, handles: list[str], stop: asyncio.Event) -> int:
    """Resolve ``handles`` round-robin through ``url`` until ``stop``, the cap or the time."""
    done = 0
    deadline = time.monotonic() + LOAD_SECONDS
    async with aiohttp.ClientSession() as http:
        async def worker(k: int) -> None:
            nonlocal done
            i = k
            while not stop.is_set() and done < LOAD_CAP and time.monotonic() < deadline:
                fresh = "?auth=true" if k % 2 else ""  # half bypass the cache: nodes work
                async with http.get(f"{url}/api/handles/{handles[i % len(handles)]}{fresh}") as r:
                    await r.read()
                    assert r.status == 200, r.status
                done += 1
                i += 16
        await asyncio.gather(*(worker(k) for k in range(16)))
    return done


def number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


async def test_dashboard_shows_the_network_and_its_load(tmp_path: Path) -> None:
    chromium = chromium_or_skip()
    from playwright.async_api import async_playwright

    up = start_cluster(tmp_path)
    try:
        state = await asyncio.to_thread(up.wait_ready)
        rec = state["recursiveUrl"]
        handles = [f"{p}/SN000000000" for p in state["prefixes"]]
        async with async_playwright() as pw:
            try:  # as root Chromium needs --no-sandbox
                browser = await pw.chromium.launch(executable_path=chromium,
                                                   args=["--no-sandbox", "--disable-gpu"])
            except Exception as exc:  # noqa: BLE001 - the reason is printed, then skipped
                reason = f"Chromium at {chromium} does not start: {exc}"[:500]
                print(reason)
                pytest.skip(reason)
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(f"{rec}/dashboard")
            await page.wait_for_function(
                "document.querySelectorAll('[data-node][data-state=ready]').length === 35",
                timeout=30_000)
            names = await page.eval_on_selector_all("[data-node]",
                                                    "els => els.map(e => e.dataset.node)")
            assert sorted(names) == sorted(n["name"] for n in state["nodes"])
            assert await page.text_content("#total-enterprises") == "4,065"
            assert await page.text_content("#total-ready") == "35/35"
            cities = await page.eval_on_selector_all("[data-city]",
                                                     "els => els.map(e => e.dataset.city)")
            assert {"Guangzhou", "Shenzhen", "Changsha", "Haikou"} <= set(cities)
            before = await page.text_content("#total-resolutions")
            assert not (number(before) or 0) > 0, before  # idle so far

            stop = asyncio.Event()
            burst = asyncio.ensure_future(load(rec, handles, stop))
            try:
                during = await (await page.wait_for_function(
                    "(() => { const t = document.querySelector('#total-resolutions')"
                    ".textContent; return parseFloat(t.replace(/,/g, '')) > 0 && t; })()",
                    timeout=LOAD_SECONDS * 1000)).json_value()
                await page.wait_for_function(  # a secondary's resolutions/s (RPC included)
                    "[...document.querySelectorAll('[data-f=res]')]"
                    ".some(e => parseFloat(e.textContent.replace(/,/g, '')) > 0)",
                    timeout=20_000)
                if has_metrics(rec):
                    await page.wait_for_function(
                        "parseFloat(document.querySelector('[data-node=recursive] "
                        "[data-f=rate]').textContent.replace(/,/g, '')) > 0", timeout=20_000)
                shot = tmp_path / "dashboard.png"
                await page.screenshot(path=str(shot), full_page=True)
            finally:
                stop.set()
                sent = await burst
            print(f"resolutions/s shown: {before} before, {during} during a burst of {sent}")
            assert not errors, errors
            await browser.close()
        target = os.environ.get("IDSIM_DASHBOARD_SCREENSHOT")
        if target:
            Path(REPO, target).write_bytes(shot.read_bytes())
        assert up.interrupt() == 0
    finally:
        up.kill_all()


async def test_dashboard_data_is_one_gathering_per_cache_period(net):
    """Every browser in one cache period gets the same snapshot; the next one has rates."""
    status, first = await net.get(f"{net.url}/dashboard/data")
    assert status == 200
    assert [n["name"] for n in first["nodes"]] == ["recursive", "top", "88.101", "88.118",
                                                   "88.201"]
    assert all(n["up"] and n["ready"] for n in first["nodes"])
    assert first["totals"]["enterprises"] == 12 and first["interval"] is None
    assert first["refresh"] == Config().observe.dashboard_poll
    _, again = await net.get(f"{net.url}/dashboard/data")
    assert again == first  # not gathered again
    net.clock.advance(Config().observe.dashboard_cache)
    _, later = await net.get(f"{net.url}/dashboard/data")
    assert later["interval"] == Config().observe.dashboard_cache
    assert later["totals"]["resolutionsPerSecond"] == 0.0


async def test_the_page_and_its_script_are_served_by_the_recursive_node_only(net):
    async with net.http.get(f"{net.url}/dashboard") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        page = await resp.text()
    assert '<script src="/dashboard/dashboard.js">' in page and "http" not in page.split(
        "<body>")[1].replace("http://www.w3.org", "")  # nothing fetched from elsewhere
    async with net.http.get(f"{net.url}/dashboard/dashboard.js") as resp:
        assert resp.status == 200 and "/dashboard/data" in await resp.text()
    status, body = await net.get(f"{net.top_url}/dashboard")
    assert status == 404 and body["responseCode"] == 4
