"""The report as a clinician sees it: headless Chromium at a laptop's width.

Chromium comes from Debian's package (``make test`` installs it when it can); without it the test
skips with the reason.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from tests.group.test_group_pipeline import _context
from theramark._io import write_json
from theramark.report import build_report
from theramark.workflow import run_analysis

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

#: Measures the laid-out page and writes the result into the DOM, which --dump-dom prints.
_PROBE = """
<script>
window.addEventListener('load', () => {
  const width = window.innerWidth;
  // an element sticking out of its section's card (content inside a scrolling box is fine)
  const wide = [];
  for (const s of document.querySelectorAll('section')) {
    const right = s.getBoundingClientRect().right;
    for (const e of s.querySelectorAll('*')) {
      if (e.closest('.scroll') || e.closest('details:not([open])')) continue;
      if (e.getBoundingClientRect().right > right + 1) { wide.push(s.id + ' ' + e.tagName); break; }
    }
    if (s.scrollWidth > s.clientWidth + 1) wide.push(s.id);
    // a table that only fits by scrolling sideways counts too
    for (const box of s.querySelectorAll('.scroll')) {
      if (box.closest('details:not([open])')) continue;
      if (box.scrollWidth > box.clientWidth + 1) { wide.push(s.id + ' table'); break; }
    }
  }
  const summary = document.getElementById('summary').getBoundingClientRect();
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({
    page_overflow: document.documentElement.scrollWidth - width,
    sections_overflowing: wide,
    summary_top: summary.top, viewport_height: window.innerHeight,
    summary_first: document.querySelector('main section').id,
  });
  document.body.appendChild(out);
});
</script>
"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian package 'chromium'; "
                                              "make test installs it when run as root)")
def test_report_fits_a_laptop_screen_and_opens_with_the_summary(tmp_path):
    ctx = _context(tmp_path, config={"longitudinal": {"n_permutations": 200, "nbs_threshold": 0}})
    run_analysis(ctx, "longitudinal")
    write_json(ctx.group_dir / "run.json", {"title": "browser test", "dataset": "synthetic",
                                            "software": "theramark", "generated": "now"})
    report = build_report(ctx.out_dir)
    page = tmp_path / "probe.html"
    page.write_text(report.read_text().replace("</body>", _PROBE + "</body>"))
    completed = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1366,768",
         "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">(.*?)</pre>', completed.stdout, re.S)
    assert found, completed.stderr[-2000:]
    probe = json.loads(found.group(1).replace("&quot;", '"'))
    assert probe["page_overflow"] <= 0, probe
    assert probe["sections_overflowing"] == [], probe
    assert probe["summary_first"] == "summary"
    assert probe["summary_top"] < probe["viewport_height"] / 2, probe
