"""The lossy options as one frozen value, validated once where it is made (the bottom layer,
beside errors and dtypes, so the CLI can build its options from it without importing numpy).

Every entry point that can quantize (``compress_file``, ``compress_bytes``, ``compress_dir``,
``hub.push``, the CLI's ``compress`` and ``push``) takes a :class:`LossyOptions` (or the same
keywords, turned into one here), so the rules and the defaults live in this one place, in the
spirit of python-zstandard's ``ZstdCompressionParameters``. Importing this module is light: no
numpy, no quantizer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_GROUP_SIZE",
    "GGML_PRESETS",
    "GROUP_SIZES",
    "MANTISSA_BITS",
    "PRESETS",
    "LossyOptions",
]

# ggml's block formats (issue 18, zipmodel.stages.ggml), in order of bits: llama.cpp's blocks
# that ``zipmodel export --to gguf`` writes verbatim.
GGML_PRESETS = ("q3_k", "iq4_xs", "q4_k", "q5_k", "q6_k", "q8_0")
PRESETS = ("bf16", "fp8", "int8", "int4", "nf4", *GGML_PRESETS)
DEFAULT_GROUP_SIZE = 64
GROUP_SIZES = (32, 128)  # what a new container may use; decoding accepts any recorded size
MANTISSA_BITS = (0, 22)  # mantissa rounding alone (FP32 keeps 23); with bf16 at most 7
TARGET_BITS = (0.05, 8.0)  # --target-bits: bits per quantized weight (ECSQ, stages.allocate)
BF16_MANTISSA_BITS = 7

# The keywords that only tune a stage: alone (no preset, no mantissa_bits) they mean nothing.
TUNING = ("group_size", "per_tensor", "asymmetric", "keep", "only")


@dataclass(frozen=True)
class LossyOptions:
    """What a lossy stage does and which tensors it touches.

    ``preset``: ``bf16``, ``fp8``, ``int8``, ``int4``, ``nf4``, or a ggml block format
    (``q3_k``, ``iq4_xs``, ``q4_k``, ``q5_k``, ``q6_k``, ``q8_0``); ``mantissa_bits``: round
    float mantissas to that many bits (alone, or with ``bf16``); ``group_size`` (32-128):
    elements per scale for ``int4``/``nf4``; ``per_tensor``: one ``fp8`` scale per tensor;
    ``asymmetric``: ``int4`` groups with a zero point; ``keep``/``only``: name globs that
    exclude / restrict tensors (docs/lossy.md); ``target_bits`` (bits per weight on disk over
    the tensors the rules select) or ``target_size`` (bytes of the whole container): ECSQ with
    a step per tensor chosen to minimise the total squared error at that budget (no preset;
    ``zipmodel.stages.allocate``). ``LossyOptions()`` is "nothing lossy":
    :attr:`enabled` is false. A combination that means nothing raises ``ValueError`` naming
    the field.
    """

    preset: str | None = None
    mantissa_bits: int | None = None
    group_size: int = DEFAULT_GROUP_SIZE
    per_tensor: bool = False
    asymmetric: bool = False
    keep: tuple[str, ...] = ()
    only: tuple[str, ...] = ()
    target_bits: float | None = None
    target_size: int | None = None

    def __post_init__(self) -> None:
        # globs may come as any sequence (click gives tuples, callers lists): store tuples
        for name in ("keep", "only"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ValueError(f"{name} is a sequence of name globs, not one string")
            object.__setattr__(self, name, tuple(value))
        p, bits = self.preset, self.mantissa_bits
        if p is not None and p not in PRESETS:
            raise ValueError(f"unknown lossy preset {p!r}; choose one of {', '.join(PRESETS)}")
        self._check_target()
        if not self.enabled:
            tuned = [n for n in TUNING if getattr(self, n) != _DEFAULTS[n]]
            if tuned:
                raise ValueError(
                    f"{', '.join(tuned)} tune a lossy stage: give a lossy preset or "
                    "mantissa_bits too"
                )
            return
        if bits is not None:
            if p is not None and p != "bf16":
                raise ValueError(f"--mantissa-bits combines with bf16 only, not {p}")
            if p == "bf16" and not 0 <= bits <= BF16_MANTISSA_BITS:
                raise ValueError(
                    f"bf16 keeps at most {BF16_MANTISSA_BITS} mantissa bits, not {bits}"
                )
            lo, hi = MANTISSA_BITS
            if not lo <= bits <= hi:
                raise ValueError(f"mantissa bits must be in [{lo}, {hi}], not {bits}")
        if self.per_tensor and p != "fp8":
            raise ValueError(f"per-tensor scales are an fp8 option, not {p}")
        if self.asymmetric and p != "int4":
            raise ValueError(f"asymmetric is an int4 option, not {p}")
        lo, hi = GROUP_SIZES
        if p in ("int4", "nf4") and not lo <= self.group_size <= hi:
            raise ValueError(f"group size must be in [{lo}, {hi}], not {self.group_size}")

    def _check_target(self) -> None:
        tb, ts = self.target_bits, self.target_size
        if tb is None and ts is None:
            return
        if tb is not None and ts is not None:
            raise ValueError("give target_bits or target_size, not both")
        if self.preset is not None or self.mantissa_bits is not None:
            raise ValueError(
                "target_bits/target_size choose the stage themselves (ECSQ): drop the lossy "
                "preset / mantissa_bits"
            )
        if tb is not None:
            lo, hi = TARGET_BITS
            if isinstance(tb, bool) or not isinstance(tb, (int, float)) or not lo <= tb <= hi:
                raise ValueError(f"target bits must be in [{lo}, {hi}] bits per weight, not {tb}")
        if ts is not None and (isinstance(ts, bool) or not isinstance(ts, int) or ts <= 0):
            raise ValueError(f"target size must be a positive number of bytes, not {ts}")

    @property
    def targeted(self) -> bool:
        """Whether a budget (``target_bits`` / ``target_size``) picks the steps."""
        return self.target_bits is not None or self.target_size is not None

    @property
    def enabled(self) -> bool:
        """Whether a lossy stage is asked for: a preset, a mantissa rounding or a budget (the
        other fields only tune one)."""
        return self.preset is not None or self.mantissa_bits is not None or self.targeted

    @classmethod
    def of(cls, lossy: str | LossyOptions | None = None, /, **fields: Any) -> LossyOptions:
        """The options of an API call's ``lossy=`` and lossy keywords: ``lossy`` itself when it
        is a :class:`LossyOptions` (then no keywords), else the preset, with ``fields``."""
        if isinstance(lossy, LossyOptions):
            if fields:
                raise ValueError(
                    f"give lossy=LossyOptions(...) or the lossy keywords ({', '.join(fields)}), "
                    "not both"
                )
            return lossy
        unknown = sorted(set(fields) - set(_DEFAULTS) - {"preset"})
        if unknown:
            raise TypeError(f"unexpected keyword argument(s): {', '.join(unknown)}")
        return cls(preset=lossy, **fields) if lossy is not None else cls(**fields)

    def replace(self, **changes: Any) -> LossyOptions:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_kwargs(self) -> dict[str, Any]:
        """The keywords this value stands for (``lossy=`` the preset); empty when disabled."""
        if not self.enabled:
            return {}
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["lossy"] = d.pop("preset")
        return d

    def cli_args(self) -> str:
        """The ``zipmodel compress`` options that make these (for a model card)."""
        parts = [f"--lossy {self.preset}"] if self.preset else []
        if self.mantissa_bits is not None:
            parts.append(f"--mantissa-bits {self.mantissa_bits}")
        if self.target_bits is not None:
            parts.append(f"--target-bits {self.target_bits:g}")
        if self.target_size is not None:
            parts.append(f"--target-size {self.target_size}")
        return " ".join(parts)


_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(LossyOptions)}
NO_LOSSY = LossyOptions()
