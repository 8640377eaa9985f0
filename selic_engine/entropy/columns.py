"""Column windows over which decoder v1's float64 convolutions compute exactly what they compute over a whole band.

h_s and the ChARM parameter nets define every v1 file's probabilities by their float64 arithmetic over a coding
band's full width. Over the full width of a wide band their im2col buffers grow without bound (about 16 KB per
latent element: 4 GB for the 4 latent rows of a 2^20-px-wide image), so the decoder computes them in column
windows instead and keeps only the columns each window sees whole (`margin` columns of context each side). Merely
cutting windows is not exact: the CPU convolution unfolds its input (im2col) and makes one GEMM whose N columns
are the output positions in row-major order, and MKL's dgemm gives every column the same value wherever it sits
except its last (N mod P), which it rounds differently (P = 24 on the AMD EPYC, MKL 2024.2 these tests were
written on: measured; windows cut anywhere differ from the whole band in the last bits). So:

- an interior window is a multiple of ALIGN columns wide: N is then a multiple of P for any number of rows,
  and none of its columns is a tail column;
- the last window starts on a multiple of ALIGN and ends at the band's edge: its N is the whole band's N modulo
  P, so the band's last positions are computed as the whole band computes them;
- a band no wider than one window is computed whole, exactly as before.

ALIGN = 48 is twice the measured P and a multiple of the kernel widths x86 GEMM kernels commonly use (4, 8, 12,
16, 24). On a machine whose P does not divide it, a wide band's float64 values would differ in their last bits
(which almost never changes a symbol, and the file's symbol hash would say so):
tests/test_codec.py::test_column_windows_compute_exactly_what_the_whole_band_does checks it on every machine the
tests run on.
"""

from __future__ import annotations

#: Interior windows are a multiple of this many columns wide; the last window starts on a multiple of it.
ALIGN = 48


def column_windows(width: int, window: int, margin: int) -> list[tuple[int, int, int, int]]:
    """(c0, c1, b0, b1), left to right: columns [c0, c1) of a band `width` wide, computed from its columns
    [b0, b1). `window` (a multiple of ALIGN, more than 2 margins) is the interior windows' width."""
    windows = []
    c0 = 0
    while True:
        b0 = max(0, c0 - margin)
        if b0 + window >= width:
            b0 -= b0 % ALIGN
            windows.append((c0, width, b0, width))
            return windows
        c1 = b0 + window - margin
        windows.append((c0, c1, b0, b0 + window))
        c0 = c1
