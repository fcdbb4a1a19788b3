"""`houseline demo --once` (what `make demo-once` runs): the whole stack comes up from nothing,
prints its ready line with both sandboxes, and the scripted round trips on Telegram and
WhatsApp both arrive."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_once_round_trips_on_both_networks() -> None:
    done = subprocess.run([sys.executable, "-m", "bridge", "demo", "--once"], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    ready = json.loads(next(line for line in lines if line.startswith('{"event": "ready"')))
    assert ready["sandbox"]["telegram"].startswith("http://127.0.0.1:")
    assert ready["sandbox"]["whatsapp"].startswith("http://127.0.0.1:")
    assert any(line.startswith("client   <- company bot :") and "Erin Employee (Example Advisers)" in line for line in lines)
    assert any(line.startswith("client   <- WhatsApp 1001:") and "*Alex Adviser (Example Advisers)*" in line for line in lines)
    assert lines[-1].startswith("round trip OK")
