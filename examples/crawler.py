"""A small gevent crawler with the faults monitor_agent exists to catch.

It serves a tiny site on a local port with gevent.pywsgi and crawls it with 20
greenlets through the (monkey-patched) standard library, as crawlers do. Three
things go wrong on purpose:

* ``legacy_lookup()`` (page 40) calls into a "C client" that gevent cannot patch (here:
  the original ``time.sleep``), stalling every greenlet for 250 ms;
* ``extract_links()`` parses one huge page (page 7) with a CPU-heavy loop (~200 ms);
* the page cache leaks until it is cleared, pushing memory over a threshold.

Run it under the agent (events go to the terminal and to demo-events.jsonl)::

    monitor-agent run --transports log,jsonl:demo-events.jsonl --max-memory-usage 160MB \\
        --memory-monitor-period 0.2 -- python examples/crawler.py

It finishes by itself in a few seconds.
"""
from gevent import monkey

monkey.patch_all()

import hashlib
import re
import time
import urllib.request

import gevent
import gevent.pool
import gevent.pywsgi

PAGES = 60
_unpatched_sleep = monkey.get_original("time", "sleep")
cache = []


def site(environ, start_response):
    """Page N links to pages 2N and 2N+1; page 7 is huge."""
    n = int(environ["PATH_INFO"].strip("/") or 1)
    gevent.sleep(0.01)  # a little network latency
    links = "".join(f'<a href="/{m}">{m}</a>' for m in (2 * n, 2 * n + 1) if m <= PAGES)
    filler = "lorem ipsum " * (20000 if n == 7 else 50)
    start_response("200 OK", [("Content-Type", "text/html")])
    return [f"<html><body>{links}<p>{filler}</p></body></html>".encode()]


def legacy_lookup(url):
    """A blocking client library that monkey-patching cannot reach."""
    _unpatched_sleep(0.25)
    return hashlib.sha1(url.encode()).hexdigest()


def extract_links(html):
    """Link extraction with a needlessly expensive normalisation pass."""
    words = html.split()
    checksum = 0
    for _ in range(80 if len(html) > 100_000 else 0):
        for word in words:
            checksum ^= hash(word)
    return re.findall(r'href="/(\d+)"', html)


def crawl(base, start=1):
    seen, pool = set(), gevent.pool.Pool(20)

    def fetch(n):
        url = f"{base}/{n}"
        with urllib.request.urlopen(url) as response:
            html = response.read().decode()
        cache.append(html.encode() * 40)  # the leak: a cache nobody bounds
        if n == 40:
            legacy_lookup(url)
        for link in extract_links(html):
            if int(link) not in seen:
                seen.add(int(link))
                pool.spawn(fetch, int(link)).name = f"fetch-{link}"

    seen.add(start)
    pool.spawn(fetch, start).name = f"fetch-{start}"
    pool.join()
    return seen


def main():
    server = gevent.pywsgi.WSGIServer(("127.0.0.1", 0), site, log=None)
    server.start()
    base = f"http://127.0.0.1:{server.server_port}"
    started = time.time()
    pages = crawl(base)
    print(f"crawled {len(pages)} pages in {time.time() - started:.2f}s; cache holds "
          f"{sum(map(len, cache)) / 2**20:.0f} MiB")
    ballast = [b"x" * (16 * 2**20) for _ in range(8)]  # the cache spike of a big batch
    gevent.sleep(0.6)
    del ballast
    cache.clear()
    gevent.sleep(0.6)  # memory is back down; let the monitor notice
    server.stop()
    print("done")


if __name__ == "__main__":
    main()
