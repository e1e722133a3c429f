"""Benchmark: real-time neurofeedback latency, dropped volumes, memory, and online vs offline cost.

1. Latency, file complete -> feedback value: a simulated 64 x 64 x 36 run is replayed by the scanner
   simulator into a folder at TR 0.5 s (twice the clinical rate of TR 1 s); ``theramark realtime``'s
   engine reads it (:class:`FolderSource`), realigns, extracts the ROIs, updates the GLM, the Kalman
   filter and the feedback, and publishes the record (to the browser display when it is
   installed). ``latency_ms`` in the log is ``t_feedback - t_ready``, ``t_ready`` being when the
   file was complete and read. Goals: median < 50 ms, p99 < 200 ms on 2 cores; no volume missing.
2. Memory over 2,000 volumes (volumes fed from memory, as fast as processed): peak traced memory
   (tracemalloc) after 10% of the volumes and at the end; bounded means no growth with run length.
3. Online per-volume cost against the offline pipeline's per-volume cost on the same volumes
   (realign, reslice the whole volume with :func:`scipy.ndimage.affine_transform`, mask means:
   what a batch pipeline does per volume), as a ratio.

Run: ``.venv/bin/python -m benchmarks realtime`` (``--quick``: 60 volumes, 400 for memory)
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np


def _simulate(folder: Path, n_volumes: int) -> dict[str, Path]:
    from theramark.simulate.neurofeedback import simulate_neurofeedback_run

    return simulate_neurofeedback_run(folder, n_volumes=n_volumes, tr=1.0, shape=(64, 64, 36), random_state=0)


def latency(paths: dict[str, Path], n_volumes: int, tr: float, folder: Path) -> dict[str, float]:
    from theramark.realtime.engine import mask_rois, run_realtime
    from theramark.realtime.ingest import FolderSource
    from theramark.realtime.protocol import read_protocol
    from theramark.realtime.scanner import simulate_scanner

    display = None
    try:
        from theramark.realtime.display import DisplayServer

        display = DisplayServer(port=0)
        display.start()
    except Exception as exc:  # the display's optional dependencies may be absent
        print(f"  (display not started: {exc}; timing the engine's publish call)")
        display = None
    from theramark.realtime.engine import RealtimeEngine

    rois = mask_rois([paths["acc_mask"], paths["amygdala_mask"]])
    protocol = read_protocol(paths["events"])
    # as `theramark realtime run` does: the engine is built (and its imports made) once to check
    # the settings before the scanner starts; the run's volumes then meet a warm process
    RealtimeEngine(rois, protocol, tr, n_volumes)
    export = folder / "export"
    # the protocol is in seconds of the TR-1 run; replaying at TR 0.5 s halves its timing, which
    # changes nothing in the per-volume cost
    scanner = threading.Thread(target=simulate_scanner, args=(paths["bold"], export, tr),
                               kwargs={"n_volumes": n_volumes}, daemon=True)
    scanner.start()
    source = FolderSource(export, n_volumes, tr)
    try:
        log = run_realtime(source, rois, protocol, tr, n_volumes, folder / "log", display=display)
    finally:
        source.close()
        if display is not None:
            display.stop()
    scanner.join()
    ms = log["latency_ms"].to_numpy()
    ok = log["status"] == "ok"
    worst = log.loc[ok].nlargest(3, "latency_ms")[["volume", "latency_ms"]].round(1).to_dict("records")
    print(f"  slowest volumes: {worst}")
    return {"median_ms": float(np.nanmedian(ms[ok])), "p99_ms": float(np.nanpercentile(ms[ok], 99)),
            "max_ms": float(np.nanmax(ms[ok])), "missing": int((~ok).sum()), "display": display is not None}


def memory(paths: dict[str, Path], n_volumes: int, folder: Path) -> dict[str, float]:
    from theramark.realtime.engine import mask_rois, run_realtime
    from theramark.realtime.protocol import read_protocol
    from theramark.realtime.volumes import Volume

    image = nib.load(paths["bold"])
    data = np.asarray(image.dataobj, dtype=np.float32)
    protocol_path = folder / "protocol.tsv"
    blocks = ["onset\tduration\ttrial_type"] + [f"{k * 20}\t20\t{('baseline', 'regulate')[k % 2]}"
                                               for k in range(n_volumes // 20 + 1)]
    protocol_path.write_text("\n".join(blocks) + "\n", encoding="utf-8")
    marks: dict[str, float] = {}

    def volumes():
        for t in range(n_volumes):
            if t == n_volumes // 10:
                marks["early"] = tracemalloc.get_traced_memory()[1]
            yield Volume(t + 1, "ok", data[..., t % data.shape[-1]], image.affine, time.time())

    tracemalloc.start()
    start = time.perf_counter()
    run_realtime(volumes(), mask_rois([paths["acc_mask"]]), read_protocol(protocol_path), 1.0, n_volumes,
                 folder / "memory")
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"early_mib": marks["early"] / 2**20, "peak_mib": peak / 2**20,
            "ms_per_volume_traced": 1000 * seconds / n_volumes}


def cost_ratio(paths: dict[str, Path], n_volumes: int) -> dict[str, float]:
    from scipy import ndimage

    from theramark.realtime.engine import RealtimeEngine, mask_rois
    from theramark.realtime.protocol import read_protocol
    from theramark.realtime.realign import Realigner, rigid_matrix
    from theramark.realtime.volumes import Volume

    image = nib.load(paths["bold"])
    data = np.asarray(image.dataobj, dtype=np.float32)[..., :n_volumes]
    rois = mask_rois([paths["acc_mask"], paths["amygdala_mask"]])
    engine = RealtimeEngine(rois, read_protocol(paths["events"]), 1.0, data.shape[-1])
    start = time.perf_counter()
    for t in range(data.shape[-1]):
        engine.process(Volume(t + 1, "ok", data[..., t], image.affine, time.time()))
    online = (time.perf_counter() - start) / data.shape[-1]
    masks = [np.asarray(r.image.dataobj) > 0 for r in rois]
    start = time.perf_counter()
    realigner = Realigner(data[..., 0], image.affine)
    inverse, centre = np.linalg.inv(image.affine), realigner.centre_
    previous = None
    for t in range(data.shape[-1]):
        previous = realigner.estimate(data[..., t], previous)
        shift = np.eye(4)
        shift[:3, 3] = centre
        matrix = inverse @ shift @ rigid_matrix(previous) @ np.linalg.inv(shift) @ image.affine
        resliced = ndimage.affine_transform(data[..., t], matrix[:3, :3], offset=matrix[:3, 3], order=1)
        _ = [resliced[m].mean() for m in masks]
    offline = (time.perf_counter() - start) / data.shape[-1]
    return {"online_ms": 1000 * online, "offline_ms": 1000 * offline, "ratio": online / offline}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    n_latency, n_memory = (60, 400) if args.quick else (300, 2000)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        paths = _simulate(folder / "sim", n_latency)
        print(f"simulated {n_latency} volumes of 64x64x36 in {time.perf_counter() - start:.1f} s")
        result = latency(paths, n_latency, 0.5, folder)
        print(f"latency file complete -> feedback, TR 0.5 s, {n_latency} volumes: median "
              f"{result['median_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, max {result['max_ms']:.1f} ms "
              f"(goals 50 / 200 ms); missing volumes: {result['missing']} (goal 0); "
              f"display: {'yes' if result['display'] else 'no'}")
        result = memory(paths, n_memory, folder)
        print(f"memory over {n_memory} volumes: peak traced {result['early_mib']:.1f} MiB over the first "
              f"10%, {result['peak_mib']:.1f} MiB over the whole run "
              f"({result['ms_per_volume_traced']:.0f} ms/volume under tracemalloc)")
        result = cost_ratio(paths, min(n_latency, 60))
        print(f"per-volume cost: online {result['online_ms']:.1f} ms, offline (realign + reslice + masks) "
              f"{result['offline_ms']:.1f} ms, ratio {result['ratio']:.2f}")


if __name__ == "__main__":
    main()
