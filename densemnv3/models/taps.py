"""Which backbone taps a head reads, decided from ``feature_info`` alone.

- LR-ASPP: the low feature at stride 8 — the block that opens the stride-8 stage where the backbone
  can name it (``first_block_at_stride``, torchvision's choice for the MobileNets), else the stage
  tap there (``C3``) — and the high feature, the deepest stage tap (``C5``; stride 16 when the
  backbone is dilated to ``output_stride=16``).
- SSDLite: a map at stride 16 — ``C4_expand`` (the expansion output of the block that opens stride
  32, as in the MobileNetV2/V3 papers) where the backbone has one, else the stage tap at stride 16
  (``C4``: MobileNetV1, ShuffleNetV2, ResNets, every ``tv:``/``timm:`` model) — and the deepest
  tap at stride 32 (``C5``).

A backbone without such a tap gets one :class:`ConfigError` naming it, the tap and what it offers.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from densemnv3.errors import ConfigError

from .backbones.base import LEVELS

__all__ = ["lraspp_taps", "ssdlite_taps", "stage_taps"]


def stage_taps(info: Mapping) -> list[str]:
    """The stage taps ``C1``..``C5`` in ``info``, shallowest first."""
    return [t for t in LEVELS if t in info]


def _offers(info: Mapping) -> str:
    return ", ".join(f"{t} (stride {info[t].stride})" for t in stage_taps(info) or info)


def _at_stride(info: Mapping, stride: int, *, deepest: bool) -> str | None:
    taps = [t for t in stage_taps(info) if info[t].stride == stride]
    return (taps[-1] if deepest else taps[0]) if taps else None


def lraspp_taps(backbone: nn.Module, name: str, low_tap: str | None = None) -> tuple[str, str]:
    """``(low, high)`` taps of LR-ASPP on ``backbone`` (registered as ``name``)."""
    info = backbone.feature_info
    if low_tap is None:
        finder = getattr(backbone, "first_block_at_stride", None)
        try:
            low_tap = finder(8) if finder is not None else _at_stride(info, 8, deepest=False)
        except ConfigError:
            low_tap = None
    if low_tap is None:
        raise ConfigError(
            f"LR-ASPP needs a stride-8 tap (its low-level branch), and backbone "
            f"{name!r} has none; it offers {_offers(info)}"
        )
    if low_tap not in info:
        raise ConfigError(
            f"LR-ASPP low_tap {low_tap!r} is not a tap of backbone {name!r}; it offers "
            f"{', '.join(info)}"
        )
    levels = stage_taps(info)
    if not levels:
        raise ConfigError(
            f"LR-ASPP reads the deepest stage tap (C5), and backbone {name!r} has no "
            f"stage taps C1..C5; it offers {', '.join(info)}"
        )
    return low_tap, levels[-1]


def ssdlite_taps(backbone: nn.Module, name: str) -> tuple[str, str]:
    """``(stride-16 map, stride-32 map)`` taps of SSDLite on ``backbone`` (registered as
    ``name``)."""
    info = backbone.feature_info
    first = "C4_expand" if "C4_expand" in info and info["C4_expand"].stride == 16 else None
    first = first or _at_stride(info, 16, deepest=True)
    if first is None:
        raise ConfigError(
            f"SSDLite needs a stride-16 tap for its first map (C4_expand, or else C4), "
            f"and backbone {name!r} has none; it offers {_offers(info)}"
        )
    second = _at_stride(info, 32, deepest=True)
    if second is None:
        raise ConfigError(
            f"SSDLite needs a stride-32 tap for its second map (C5), and backbone "
            f"{name!r} has none; it offers {_offers(info)} (build it without "
            f"output_stride / dilated)"
        )
    return first, second
