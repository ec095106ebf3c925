#!/usr/bin/env python3
"""Refit the device classes of a device-data file and write the results into it.

For every class of a ``roofline-weighted-v2`` device-data file (data/energy/device-classes-2.0.0.json,
or a file written by ``eeki-label calibrate``) this recomputes, from the class's workloads alone,
the fitted ``k`` and bytes weight ``w`` and every workload's leave-one-workload-out error
(eeki_label/energy/fit.py), and writes them under ``classes[].fit.result``. The loader always refits
from the workloads; ``result`` is there for a reader of the file, and tests/energy/test_calibration.py
fails when it drifts from the recomputed fit.

Usage:
    python scripts/fit_devices.py [FILE]      (default: the newest shipped device data)
    python scripts/fit_devices.py --check [FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eeki_label.energy.calibrate import fit_result_block  # noqa: E402
from eeki_label.energy.devices import load_devices  # noqa: E402


def refit(path: Path) -> tuple[str, str]:
    """(old text, new text) of the file with every class's fit.result recomputed."""
    text = path.read_text()
    doc = json.loads(text)
    reg = load_devices(None, str(path))
    for entry in doc["classes"]:
        entry["fit"]["result"] = fit_result_block(reg.get(entry["id"]))
    return text, json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", nargs="?", help="device-data file (default: the newest in data/energy/)")
    ap.add_argument("--check", action="store_true", help="only report whether the stored results are current")
    args = ap.parse_args(argv)
    path = Path(args.file) if args.file else sorted((ROOT / "data" / "energy").glob("device-classes-*.json"))[-1]
    old, new = refit(path)
    if args.check:
        print(f"{path.name}: {'current' if old == new else 'STALE: run scripts/fit_devices.py'}")
        return 0 if old == new else 1
    path.write_text(new)
    print(f"{path.name}: fit results written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
