"""What this CPU offers int8 inference: AMX, VNNI, or AVX2 alone, read from /proc/cpuinfo's flags.

It matters because ONNX Runtime's x86 u8×s8 kernels differ by instruction set. With AVX2 alone
they multiply pairs of u8 activations and s8 weights with ``vpmaddubsw``, which sums two products
into a *saturating* 16-bit lane: 255·127·2 = 64,770 overflows 32,767, so full-range weights on
full-range activations clip, and 7-bit weights (ORT's ``reduce_range``) cannot. VNNI
(``vpdpbusd``) and AMX accumulate in 32 bits and do not saturate, so 7-bit weights only cost
them precision. Any command that chooses int8 settings asks here rather than guessing.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")

# /proc/cpuinfo flag → what it means for u8×s8 dot products, most capable first.
AMX_FLAGS = ("amx_int8",)
VNNI_FLAGS = ("avx512_vnni", "avx_vnni")
AVX2_FLAG = "avx2"


@dataclass(frozen=True)
class Int8Capability:
    """The CPU's name and its best int8 dot-product path: ``amx``, ``vnni``, ``avx2`` or ``unknown``."""

    model: str
    kind: str
    flags: tuple[str, ...]  # the int8-relevant flags found

    @property
    def saturates_u8s8(self) -> bool:
        """True where ORT's u8×s8 kernels sum pairs in saturating 16 bits (x86 with AVX2, no VNNI/AMX)."""
        return self.kind == "avx2"

    def describe(self) -> str:
        what = {
            "amx": "AMX int8 tiles (32-bit accumulation, no saturation)",
            "vnni": "VNNI dot products (32-bit accumulation, no saturation)",
            "avx2": "AVX2 without VNNI (u8×s8 pairs sum in saturating 16 bits: 7-bit weights avoid it)",
            "unknown": "int8 instruction set unknown (no x86 flags found)",
        }[self.kind]
        return f"{self.model}: {what}"


def cpu_model_and_flags(cpuinfo: str | None = None) -> tuple[str, set[str]]:
    """This machine's CPU model name and flags, or those described by the text of a ``/proc/cpuinfo``."""
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    model, flags = platform.processor() or platform.machine() or "unknown CPU", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            break  # every core lists the same flags; the model name comes before them
    return model, flags


def int8_capability(cpuinfo: str | None = None) -> Int8Capability:
    """This machine's int8 capability, or that described by the text of a ``/proc/cpuinfo``."""
    model, flags = cpu_model_and_flags(cpuinfo)
    found = tuple(f for f in (*AMX_FLAGS, *VNNI_FLAGS, AVX2_FLAG) if f in flags)
    kind = ("amx" if any(f in flags for f in AMX_FLAGS) else "vnni" if any(f in flags for f in VNNI_FLAGS)
            else "avx2" if AVX2_FLAG in flags else "unknown")
    return Int8Capability(model, kind, found)
