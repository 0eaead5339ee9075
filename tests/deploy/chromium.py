"""Render a page in headless Chromium (Debian's ``chromium``) and report what a reader sees."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip

# Runs before the page's own content: records errors and, after load, every image's state.
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e.type)), true);
const _ce = console.error; console.error = (...a) => { window.__errors.push(a.join(' ')); _ce(...a); };
window.addEventListener('load', () => {
  const imgs = [...document.images].map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0,
                                               w: i.naturalWidth, h: i.naturalHeight}));
  const pre = document.createElement('pre'); pre.id = '__probe';
  pre.textContent = JSON.stringify({errors: window.__errors, images: imgs});
  document.body.appendChild(pre);
});
</script>"""


def chromium() -> str | None:
    """Path of the chromium binary, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def render(page: Path, timeout: float = 60.0) -> dict[str, Any]:
    """Load ``page`` (with the probe injected) and return ``{"errors": [...], "images": [...]}``
    plus ``console``: console/JS error lines Chromium itself logged."""
    binary = chromium()
    assert binary is not None
    with tempfile.TemporaryDirectory(prefix="pk-chromium-") as tmp:
        probed = Path(tmp) / "page.html"
        text = page.read_text(encoding="utf-8")
        probed.write_text(text.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
        cmd = [binary, *FLAGS, f"--user-data-dir={tmp}/profile", "--enable-logging=stderr",
               "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    m = re.search(r'<pre id="__probe">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"page did not finish loading; chromium said: {proc.stderr[-2000:]}"
    import html

    out = json.loads(html.unescape(m.group(1)))
    out["console"] = [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln]
    return out
