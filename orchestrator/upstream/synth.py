"""Local audio for the scripted model: tone "speech", G.711 codecs and an energy VAD.

Nothing here is meant to sound like a voice. A word is a short tone whose pitch follows the
word, so a listener hears the rhythm of the reply and a benchmark moves real-sized audio
frames. Audio is cut in chunks of `CHUNK_MS`, each base64-encoded once and cached.
"""

from __future__ import annotations

import base64
import math
import sys
import zlib
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

CHUNK_MS = 100
WORD_MS = 300  # 3 chunks per word: ~200 words a minute, a brisk speaking rate
_TONE_MS = 240
_FADE_MS = 10
_AMPLITUDE = 8000
_PITCHES = 8
_VAD_FRAME_MS = 20
_VAD_STRIDE = 4  # look at every 4th sample: the level barely changes, the cost drops 4x

FormatKind = Literal["pcm", "pcmu", "pcma"]


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """A GA audio format: 16-bit PCM at 24 kHz, or G.711 μ-law / A-law at 8 kHz."""

    kind: FormatKind

    @property
    def rate(self) -> int:
        """Samples per second."""
        return 24000 if self.kind == "pcm" else 8000

    @property
    def sample_bytes(self) -> int:
        """Bytes per sample."""
        return 2 if self.kind == "pcm" else 1

    def duration_ms(self, nbytes: int) -> float:
        """How long `nbytes` of this format play."""
        return nbytes * 1000 / (self.sample_bytes * self.rate)

    @classmethod
    def from_wire(cls, fmt: Mapping[str, Any] | None) -> AudioFormat:
        """The format of a GA `{"type": "audio/pcm", ...}` object (default PCM)."""
        kind = str((fmt or {}).get("type", "audio/pcm")).removeprefix("audio/")
        return cls("pcmu" if kind == "pcmu" else "pcma" if kind == "pcma" else "pcm")


PCM16 = AudioFormat("pcm")


def ulaw_encode(sample: int) -> int:
    """One 16-bit sample to a G.711 μ-law byte."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(-sample if sample < 0 else sample, 32635) + 0x84
    exponent = max(0, min(7, magnitude.bit_length() - 8))
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def ulaw_decode(byte: int) -> int:
    """One G.711 μ-law byte to a 16-bit sample."""
    u = ~byte & 0xFF
    exponent, mantissa = (u >> 4) & 0x07, u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return -magnitude if u & 0x80 else magnitude


def alaw_encode(sample: int) -> int:
    """One 16-bit sample to a G.711 A-law byte."""
    sign = 0x80 if sample >= 0 else 0
    magnitude = min((sample if sample >= 0 else -sample - 1) >> 3, 0x0FFF)
    if magnitude < 32:
        exponent, mantissa = 0, magnitude >> 1
    else:
        exponent = magnitude.bit_length() - 5
        mantissa = (magnitude >> exponent) & 0x0F
    return (sign | (exponent << 4) | mantissa) ^ 0x55


def alaw_decode(byte: int) -> int:
    """One G.711 A-law byte to a 16-bit sample."""
    a = byte ^ 0x55
    exponent, mantissa = (a >> 4) & 0x07, a & 0x0F
    if exponent == 0:
        magnitude = (mantissa << 4) + 8
    else:
        magnitude = ((mantissa << 4) + 0x108) << (exponent - 1)
    return magnitude if a & 0x80 else -magnitude


_ULAW_TABLE = tuple(ulaw_decode(b) for b in range(256))
_ALAW_TABLE = tuple(alaw_decode(b) for b in range(256))


def encode(samples: array[int], fmt: AudioFormat) -> bytes:
    """16-bit samples (at the format's rate) to bytes of the format."""
    if fmt.kind == "pcm":
        if sys.byteorder == "big":
            samples = array("h", samples)
            samples.byteswap()
        return samples.tobytes()
    coder = ulaw_encode if fmt.kind == "pcmu" else alaw_encode
    return bytes(coder(s) for s in samples)


def decode(data: bytes, fmt: AudioFormat, stride: int = 1) -> list[int]:
    """Bytes of the format to 16-bit samples, keeping every `stride`-th sample."""
    if fmt.kind == "pcm":
        samples = array("h")
        samples.frombytes(data[: len(data) - len(data) % 2])
        if sys.byteorder == "big":
            samples.byteswap()
        return list(samples[::stride])
    table = _ULAW_TABLE if fmt.kind == "pcmu" else _ALAW_TABLE
    return [table[b] for b in data[::stride]]


def _pitch(word: str) -> int:
    return zlib.crc32(word.lower().encode()) % _PITCHES


def _tone(fmt: AudioFormat, pitch: int) -> array[int]:
    """`WORD_MS` of samples: a faded sine, then silence."""
    rate = fmt.rate
    tone_n, fade_n = rate * _TONE_MS // 1000, rate * _FADE_MS // 1000
    total_n = rate * WORD_MS // 1000
    step = 2 * math.pi * (160 + 30 * pitch) / rate
    samples = array("h", bytes(2 * total_n))
    for i in range(tone_n):
        envelope = min(1.0, i / fade_n, (tone_n - i) / fade_n)
        samples[i] = int(_AMPLITUDE * envelope * math.sin(step * i))
    return samples


@lru_cache(maxsize=64)
def _word_chunks(fmt: AudioFormat, pitch: int) -> tuple[str, ...]:
    data = encode(_tone(fmt, pitch), fmt)
    size = fmt.rate * fmt.sample_bytes * CHUNK_MS // 1000
    return tuple(base64.b64encode(data[i : i + size]).decode() for i in range(0, len(data), size))


def word_audio(word: str, fmt: AudioFormat) -> tuple[str, ...]:
    """The base64 chunks (`CHUNK_MS` each, `WORD_MS` in all) that "say" one word."""
    return _word_chunks(fmt, _pitch(word))


def frame_levels(data: bytes, fmt: AudioFormat) -> list[tuple[float, float]]:
    """(RMS level 0..1, duration in ms) of each `_VAD_FRAME_MS` frame of `data`."""
    samples = decode(data, fmt, _VAD_STRIDE)
    per_frame = max(1, fmt.rate * _VAD_FRAME_MS // 1000 // _VAD_STRIDE)
    ms_per_sample = 1000 * _VAD_STRIDE / fmt.rate
    levels: list[tuple[float, float]] = []
    for start in range(0, len(samples), per_frame):
        frame = samples[start : start + per_frame]
        rms = math.sqrt(sum(s * s for s in frame) / len(frame)) / 32768
        levels.append((rms, len(frame) * ms_per_sample))
    return levels


@dataclass(frozen=True, slots=True)
class VadEdge:
    """Speech started or stopped at `ms` since the first appended audio."""

    kind: Literal["started", "stopped"]
    ms: int


class EnergyVad:
    """A plain energy detector with the knobs of the GA `server_vad` turn detection."""

    def __init__(self, threshold: float, prefix_padding_ms: int, silence_duration_ms: int) -> None:
        # threshold 0.5 (the GA default) means a level of 0.02 (-34 dBFS).
        self.level = max(0.001, 0.04 * threshold)
        self.prefix_padding_ms = prefix_padding_ms
        self.silence_duration_ms = silence_duration_ms
        self.position_ms = 0.0
        self.speaking = False
        self._silence_ms = 0.0

    def feed(self, data: bytes, fmt: AudioFormat) -> list[VadEdge]:
        """Advance over appended audio; return the speech edges found in it."""
        edges: list[VadEdge] = []
        for level, frame_ms in frame_levels(data, fmt):
            loud = level >= self.level
            if loud and not self.speaking:
                self.speaking, self._silence_ms = True, 0.0
                start = max(0.0, self.position_ms - self.prefix_padding_ms)
                edges.append(VadEdge("started", int(start)))
            elif self.speaking:
                self._silence_ms = 0.0 if loud else self._silence_ms + frame_ms
                if self._silence_ms >= self.silence_duration_ms:
                    self.speaking = False
                    edges.append(VadEdge("stopped", int(self.position_ms + frame_ms)))
            self.position_ms += frame_ms
        return edges

    def reset(self) -> None:
        """Forget a turn in progress (the buffer was cleared or committed by hand)."""
        self.speaking, self._silence_ms = False, 0.0
