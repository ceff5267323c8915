"""DropoutParams: every option of a dropout run, validated once."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .errors import UsageError

MODES = ("train", "eval")
VARIANTS = ("element", "channel", "alpha", "feature-alpha")
RNGS = ("default", "torch")
# SELU's alpha * scale: alpha' in torch's AlphaDropout (specs/torch-cpu-dropout.md, section 6)
ALPHA_PRIME = 1.7580993408473766


@dataclass(frozen=True)
class DropoutParams:
    """What to do to each tensor; the CLI options map one to one onto these fields.

    >>> DropoutParams(p=0.25).scale_factor()
    1.3333333333333333
    """

    p: float = 0.5
    mode: str = "train"
    variant: str = "element"
    scale: bool = True
    fill: float | None = None
    channel_axis: int = 1
    share_axes: tuple[int, ...] = field(default_factory=tuple)
    exact_count: bool = False
    rng: str = "default"

    def __post_init__(self) -> None:
        p = self.p
        if isinstance(p, bool) or not isinstance(p, (int, float)) or math.isnan(p) \
                or not 0.0 <= p <= 1.0:
            raise UsageError(f"p must be a number with 0 <= p <= 1, got {p!r}")
        object.__setattr__(self, "p", float(p))
        for name, allowed in (("mode", MODES), ("variant", VARIANTS), ("rng", RNGS)):
            if getattr(self, name) not in allowed:
                raise UsageError(f"{name} must be one of {', '.join(allowed)}, "
                                 f"got {getattr(self, name)!r}")
        object.__setattr__(self, "share_axes", tuple(int(a) for a in self.share_axes))
        if self.share_axes and self.variant in ("channel", "feature-alpha"):
            raise UsageError("share_axes and the channel variants both set the mask shape; "
                             "give one of them")
        if self.fill is not None and isinstance(self.fill, bool):
            object.__setattr__(self, "fill", float(self.fill))
        if self.rng == "torch":
            if self.exact_count or self.share_axes:
                raise UsageError("rng='torch' reproduces torch's own functions; exact_count and "
                                 "share_axes have no torch counterpart")
            if self.fill is not None or not self.scale:
                raise UsageError("rng='torch' computes exactly what torch does; fill and "
                                 "scale=False are not available with it")

    @property
    def is_alpha(self) -> bool:
        return self.variant in ("alpha", "feature-alpha")

    @property
    def is_channel(self) -> bool:
        return self.variant in ("channel", "feature-alpha")

    @property
    def identity(self) -> bool:
        """Eval mode and p == 0 return the input bit for bit."""
        return self.mode == "eval" or self.p == 0.0

    def fill_value(self) -> float:
        """Value of a dropped element (for alpha: before the affine correction)."""
        if self.fill is not None:
            return float(self.fill)
        return -ALPHA_PRIME if self.is_alpha else 0.0

    def scale_factor(self) -> float | None:
        """1 / (1 - p) when survivors are scaled (None when p == 1 or not scaling)."""
        if self.is_alpha or not self.scale or self.p >= 1.0:
            return None
        return 1.0 / (1.0 - self.p)

    def alpha_affine(self) -> tuple[float, float]:
        """(a, b) of alpha dropout: kept x -> a*x + b, dropped -> a*fill + b.

        With the default fill -alpha', these are torch's constants.
        """
        if not self.scale:
            return 1.0, 0.0
        d, p = self.fill_value(), self.p
        a = 1.0 / math.sqrt((1.0 - p) * (1.0 + p * d * d))
        return a, -a * p * d
