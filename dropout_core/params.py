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

# How each interface names the options its messages mention: the library speaks
# Python's keyword arguments, the command line its flags.
INTERFACES = ("python", "cli")
# option -> (its name in Python's keywords, its name on the command line)
_SAY = {
    "rng_torch": ("rng='torch'", "--rng torch"),
    "exact_count": ("exact_count", "--exact-count"),
    "share_axes": ("share_axes", "--share-axes"),
    "fill": ("fill", "--fill"),
    "no_scale": ("scale=False", "--no-scale"),
    "exclude": ("exclude", "--exclude"),
    "tensor": ("tensors", "--tensor"),
    "force": ("force=True", "--force"),
    "inplace": ("inplace=True", "--inplace"),
    "seed": ("seed", "--seed"),
    "p": ("p", "-p"),
    "mask_in": ("mask_in", "--mask-in"),
    "mask_out": ("mask_out", "--mask-out"),
    "channel_axis": ("channel_axis", "--channel-axis"),
    "variant": ("variant", "--variant"),
    "output": ("output", "-o/--output"),
    "output_stdout": ("output='-'", "-o -"),
    "out_dir": ("out_dir", "--out-dir"),
    "suffix": ("suffix", "--suffix"),
    "repeat": ("repeat", "--repeat"),
    "jobs": ("jobs", "--jobs"),
    "dask_scheduler": ("dask_scheduler", "--dask-scheduler"),
    "dask_split_size": ("dask_split_size", "--dask-split-size"),
    "stats": ("stats", "--stats"),
    "stats_stdout": ("stats='-'", "--stats -"),
    "key": ("key", "--key"),
    "max_images": ("max_images", "--max-images"),
}


_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "kb": 10**3, "m": 1 << 20,
               "mib": 1 << 20, "mb": 10**6, "g": 1 << 30, "gib": 1 << 30, "gb": 10**9,
               "t": 1 << 40, "tib": 1 << 40, "tb": 10**12}


def parse_size(text: str | int, option: str = "size") -> int:
    """A positive number of bytes: an integer, or one with a unit (K, M, G, T and KiB..TiB
    are powers of 1024; KB..TB powers of 1000), as ``du`` and ``dd`` read them.

    >>> parse_size("64MiB"), parse_size("1G"), parse_size("2kb"), parse_size(4096)
    (67108864, 1073741824, 2000, 4096)
    """
    if isinstance(text, int) and not isinstance(text, bool):
        n = text
    elif isinstance(text, str):
        t = text.strip().replace("_", "")
        digits = len(t) - len(t.lstrip("0123456789"))
        unit = _SIZE_UNITS.get(t[digits:].strip().lower())
        if not digits or unit is None or digits > 30:
            raise UsageError(f"{option} must be a number of bytes such as 67108864, 64MiB "
                             f"or 1G, got {text!r}")
        n = int(t[:digits]) * unit
    else:
        raise UsageError(f"{option} must be a number of bytes, got {text!r}")
    if n < 1:
        raise UsageError(f"{option} must be at least 1 byte, got {text!r}")
    return n


def say(option: str, interface: str = "python") -> str:
    """An option's name as ``interface`` ("python" or "cli") spells it in a message.

    >>> say("no_scale"), say("no_scale", "cli")
    ('scale=False', '--no-scale')
    """
    return _SAY[option][INTERFACES.index(interface)]


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
    # which interface's option names messages use ("python" or "cli"); not a result
    interface: str = field(default="python", compare=False, repr=False)

    def __post_init__(self) -> None:
        p = self.p
        if isinstance(p, bool) or not isinstance(p, (int, float)) or math.isnan(p) \
                or not 0.0 <= p <= 1.0:
            raise UsageError(f"p must be a number with 0 <= p <= 1, got {p!r}")
        object.__setattr__(self, "p", float(p) + 0.0)  # -0.0 is 0
        if self.interface not in INTERFACES:
            raise UsageError(f"interface must be one of {', '.join(INTERFACES)}, got "
                             f"{self.interface!r}")
        for name, allowed in (("mode", MODES), ("variant", VARIANTS), ("rng", RNGS)):
            if getattr(self, name) not in allowed:
                raise UsageError(f"{name} must be one of {', '.join(allowed)}, "
                                 f"got {getattr(self, name)!r}")
        object.__setattr__(self, "share_axes", tuple(int(a) for a in self.share_axes))
        if self.share_axes and self.variant in ("channel", "feature-alpha"):
            raise UsageError(f"{self.say('share_axes')} and the channel variants both set the "
                             "mask shape; give one of them")
        if self.fill is not None and isinstance(self.fill, bool):
            object.__setattr__(self, "fill", float(self.fill))
        check = getattr(self.stream_module(), "check_params", None)
        if check is not None:
            check(self)

    def say(self, option: str) -> str:
        """The option's name in this interface's words (for messages)."""
        return say(option, self.interface)

    @property
    def stream(self) -> str:
        """Which random stream draws the masks (a key of ``streams.REGISTRY``)."""
        if self.rng == "torch":
            return "torch"
        return "exact" if self.exact_count else "default"

    def stream_module(self):
        from .streams import stream_module

        return stream_module(self.stream)

    def effective_p(self) -> float:
        """The drop probability the chosen stream realises for p (0 for the identity)."""
        return 0.0 if self.identity else self.stream_module().effective_p(self.p)

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


def effective_p(params: DropoutParams) -> float:
    """The drop probability ``params``' stream realises (0 for eval mode or p = 0)."""
    return params.effective_p()
