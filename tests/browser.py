"""The headless browser CI installs (/usr/bin/chromium): skipped where it is missing, a failure under CI=true."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> Path:
    """The browser's path; skips the test where it is not installed (fails it under CI, which installs it)."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("CI is set but /usr/bin/chromium is missing (CI installs it)")
        pytest.skip("/usr/bin/chromium not installed (CI installs it)")
    return CHROMIUM


# A page that loads the page under test in a frame, waits for each of its images to load or fail, and writes
# [src, naturalWidth] of each into its own DOM, which --dump-dom prints.
_PROBE = """<html><body><pre id="out">pending</pre>
<iframe id="f" src="{url}" width="1200" height="3000"></iframe>
<script>
document.getElementById('f').onload = async () => {{
  let out;
  try {{
    const imgs = [...document.getElementById('f').contentDocument.images];
    imgs.forEach(i => {{ i.loading = 'eager'; }});
    await Promise.all(imgs.map(i => i.complete ? 0 : new Promise(r => {{ i.onload = i.onerror = r; }})));
    out = JSON.stringify(imgs.map(i => [i.getAttribute('src').slice(0, 120), i.naturalWidth]));
  }} catch (e) {{ out = 'error: ' + e; }}
  document.getElementById('out').textContent = out;
}};
</script></body></html>"""


def image_widths(page: Path, work: Path) -> list[tuple[str, int]]:
    """(src, natural width) of every image of a local HTML page as the browser loaded it; width 0 = not loaded."""
    probe = work / "probe.html"
    probe.write_text(_PROBE.format(url=page.resolve().as_uri()))
    cmd = [str(chromium()), *FLAGS, "--allow-file-access-from-files", f"--user-data-dir={work / 'profile'}",
           "--virtual-time-budget=20000", "--dump-dom", probe.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False).stdout
    text = dom.split('<pre id="out">', 1)[1].split("</pre>", 1)[0] if '<pre id="out">' in dom else "no output"
    if not text.startswith("["):
        raise AssertionError(f"the browser did not report the images of {page}: {text[:200]}")
    return [(src, width) for src, width in json.loads(text)]
