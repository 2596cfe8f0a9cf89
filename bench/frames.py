"""Client-frame checks on the relay's hot path: µs per audio append, by chunk length.

    python bench/frames.py [--quick]   # one JSON line out

`is_plain_audio_append` is what every client audio frame costs before it goes upstream
undecoded (`sniff_type` shown beside it); `orjson` is the decode + re-encode every other
client event gets, i.e. what the audio path would cost without the fast path.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import timeit
from collections.abc import Callable
from functools import partial

import orjson

from orchestrator.realtime import protocol

CHUNKS_MS = (20, 100, 200, 1000)


def _reencode(frame: str) -> bytes:
    return orjson.dumps(orjson.loads(frame))


def _us(fn: Callable[[], object], number: int, repeat: int) -> float:
    return round(min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6, 2)


def measure(quick: bool) -> dict[str, dict[str, float]]:
    """µs per call of each check, by audio chunk length (24 kHz PCM16, base64)."""
    number, repeat = (500, 5) if quick else (5000, 30)
    result: dict[str, dict[str, float]] = {}
    for ms in CHUNKS_MS:
        audio = base64.b64encode(os.urandom(24_000 * 2 * ms // 1000)).decode()
        frame = json.dumps({"type": "input_audio_buffer.append", "audio": audio})
        sdk_order = json.dumps({"audio": audio, "type": "input_audio_buffer.append"})
        result[f"{ms}ms"] = {
            "bytes": len(frame),
            "sniff_type": _us(partial(protocol.sniff_type, frame), number, repeat),
            "is_plain_audio_append": _us(
                partial(protocol.is_plain_audio_append, frame), number, repeat),
            "is_plain_audio_append_sdk_order": _us(
                partial(protocol.is_plain_audio_append, sdk_order), number, repeat),
            "orjson_loads_dumps": _us(partial(_reencode, frame), number, repeat),
        }
    return result


def main() -> None:
    """Print the measurements as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    print(json.dumps({"bench": "frames", "us_per_frame": measure(args.quick)}))


if __name__ == "__main__":
    main()
