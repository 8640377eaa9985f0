"""Engine round trips, determinism and the model's training pass."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import pillow_selic  # noqa: F401  (registers SELIC with Pillow)
import selic_engine as se
from selic_engine.config import FUSION_MODES, PRESETS
from selic_engine.testing import build_tiny


@pytest.mark.parametrize("quality", [1, 2.5, 4, 8])
def test_round_trip_every_quality(tiny_engine, photo, quality):
    data = se.encode(photo, quality, caption=False, model=tiny_engine.model_id)
    out = se.decode(data)
    assert out.size == (photo.shape[1], photo.shape[0]) and out.mode == "RGB"
    assert out.info["quality"] == quality
    assert out.info["model"] == tiny_engine.model_id
    header = se.probe(data)
    assert (header.width, header.height, header.mode, header.quality) == (101, 77, "RGB", quality)


@pytest.mark.parametrize("bad", [0.5, 8.01, float("nan"), -1])
def test_quality_out_of_range(tiny_engine, photo, bad):
    with pytest.raises(ValueError, match="from 1 to 8"):
        se.encode(photo, bad, caption=False, model=tiny_engine.model_id)


def test_sizes_not_multiple_of_64(tiny_engine):
    rng = np.random.default_rng(0)
    for h, w in [(1, 1), (3, 130), (65, 64), (64, 65)]:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        out = se.decode(se.encode(img, 3, caption=False, model=tiny_engine.model_id))
        assert out.size == (w, h)


@pytest.mark.parametrize("w, h", [(0, 0), (0, 10), (10, 0)])
def test_zero_size_is_a_value_error_naming_the_size(tiny_engine, w, h):
    """Encoding (array, PIL, Pillow save) and reading a header of an empty image: ValueError with the size."""
    from benchmarks.fuzzing import with_header

    size = f"{w}x{h}"
    for image in (np.zeros((h, w, 3), np.uint8), Image.new("RGB", (w, h)), Image.new("LA", (w, h))):
        with pytest.raises(ValueError, match=size):
            se.encode(image, 4, caption=False, model=tiny_engine.model_id)
    with pytest.raises(ValueError, match=size):
        Image.new("RGB", (w, h)).save(io.BytesIO(), format="SELIC", model=tiny_engine.model_id, caption=False)
    forged = with_header(se.encode(np.zeros((8, 8, 3), np.uint8), 4, caption=False, model=tiny_engine.model_id),
                         width=w, height=h)
    for read in (se.probe, se.decode):
        with pytest.raises(se.SelicFormatError, match=size):
            read(forged)


def test_caption_changes_latent_and_decoder_needs_no_caption(tiny_engine, photo):
    plain = se.encode(photo, 4, caption=False, model=tiny_engine.model_id)
    guided = se.encode(photo, 4, caption="a striped test pattern with a disc", model=tiny_engine.model_id)
    assert plain != guided  # the text vector reaches the latent
    assert se.decode(guided).size == (101, 77)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_coding_is_thread_exact_at_each_precision(tiny_engine, photo, precision):
    """Every CPU convolution goes to oneDNN (model.determinism): the same file and the same pixels at 1, 2 and 3
    threads, in float32 and in bfloat16 (emulated, and slow, on CPUs with AVX512 but not AVX512-BF16)."""
    from selic_engine.precision import onednn_bf16

    if precision == "bfloat16" and not onednn_bf16():
        pytest.skip("this CPU's oneDNN has no bfloat16 convolutions (AVX2 only)")
    before = torch.get_num_threads()
    files, pixels = set(), []
    try:
        for threads in (1, 2, 3, 2):
            torch.set_num_threads(threads)
            data = se.encode(photo, 5, caption=False, model=tiny_engine.model_id, precision=precision)
            files.add(data)
            pixels.append(np.asarray(se.decode(data, precision=precision)))
    finally:
        torch.set_num_threads(before)
    assert len(files) == 1
    assert all(np.array_equal(pixels[0], p) for p in pixels[1:])


def test_avx2_only_cpus_code_in_float32_and_refuse_forced_bfloat16(tiny_weights):
    """ONEDNN_MAX_CPU_ISA=AVX2 makes oneDNN behave as on an AVX2-only CPU (where CI may run): "auto" codes in
    float32 and a forced bfloat16 is refused by name rather than failing inside oneDNN."""
    code = f"""
import numpy as np, selic_engine as se
from selic_engine.engine import get_engine, transform_dtype
data = se.encode(np.full((40, 60, 3), 90, np.uint8), 4, caption=False, model={str(tiny_weights)!r})
print(transform_dtype(None, get_engine({str(tiny_weights)!r}).device), se.decode(data).size)
try:
    se.decode(data, precision="bfloat16")
except ValueError as exc:
    print("refused:", exc)
"""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "torch.float32 (60, 40)" in out.stdout and "refused: precision 'bfloat16' needs" in out.stdout


def test_precisions_decode_the_same_symbols(tiny_engine, photo, monkeypatch):
    """A file decodes at either precision (the symbol hash is checked, so the symbols are exact); pixels differ
    by a few levels at most. $SELIC_PRECISION forces a precision; a bad value is refused by name."""
    from selic_engine.precision import onednn_bf16

    data = se.encode(photo, 5, caption=False, model=tiny_engine.model_id, precision="float32")
    full = np.asarray(se.decode(data, precision="float32"), np.int16)
    if onednn_bf16():
        monkeypatch.setenv("SELIC_PRECISION", "bfloat16")
        half = np.asarray(se.decode(data), np.int16)
        assert np.abs(full - half).max() <= 8 and np.abs(full - half).mean() < 1
    monkeypatch.setenv("SELIC_PRECISION", "float16")
    with pytest.raises(ValueError, match="float16"):
        se.decode(data)


def test_bucketized_indexes_equal_compressai_build_indexes():
    """ChannelARM.indexes (one bucketize) gives compressai's build_indexes exactly, table edges and NaN included."""
    from compressai.models.base import get_scale_table

    from selic_engine.entropy import ChannelARM

    charm = ChannelARM(32, 2, 16)
    charm.gaussian_conditional.update_scale_table(get_scale_table())
    charm.double()
    table = charm.gaussian_conditional.scale_table
    scales = torch.cat([torch.rand(5000, dtype=torch.float64) * 100, table, table * (1 + 1e-12), table * (1 - 1e-12),
                        torch.tensor([0.0, -1.0, 1e-9, 1e9, float("inf"), float("nan")], dtype=torch.float64)])
    scales = scales.reshape(1, 1, 1, -1)
    expected = charm.gaussian_conditional.build_indexes(scales)
    got = charm.indexes(scales)
    assert got.dtype == expected.dtype and torch.equal(got, expected)


def test_encode_is_repeatable(tiny_engine, photo):
    a = se.encode(photo, 3, caption=False, model=tiny_engine.model_id)
    b = se.encode(photo, 3, caption=False, model=tiny_engine.model_id)
    assert a == b


def test_decode_in_fresh_process_matches(tiny_weights, tmp_path, photo):
    data = se.encode(photo, 6, caption=False, model=tiny_weights)
    (tmp_path / "x.selic").write_bytes(data)
    here = np.asarray(se.decode(data))
    code = (
        "import os, sys, numpy as np, selic_engine as se;"
        f"os.environ['SELIC_MODEL_PATH']={str(tiny_weights)!r};"
        f"img=se.decode(open({str(tmp_path / 'x.selic')!r},'rb').read());"
        f"np.save({str(tmp_path / 'out.npy')!r}, np.asarray(img));"
        "print('transformers' in sys.modules)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"  # decoding never imports the semantic models
    assert np.array_equal(np.load(tmp_path / "out.npy"), here)


def test_weights_file_round_trip(tiny_weights, photo):
    from selic_engine.weights.files import load_weights, read_metadata

    model, mid = load_weights(tiny_weights)
    assert read_metadata(tiny_weights)["model_id"] == mid
    assert model.config.name == "tiny"


def test_unknown_model_is_a_clear_error(tiny_engine, photo):
    data = bytearray(se.encode(photo, 4, caption=False, model=tiny_engine.model_id))
    from selic_engine.container import pack, unpack

    f = unpack(bytes(data))
    f.header.model_id = "00" * 8
    with pytest.raises(se.UnknownModelError, match="0000000000000000"):
        se.decode(pack(f))


def test_missing_shipped_weights_refused(monkeypatch, tmp_path):
    from selic_engine import weights

    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(se.WeightsNotFoundError, match="not installed"):
        weights.resolve_weights("small")


def test_device_selection(monkeypatch):
    monkeypatch.delenv("SELIC_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert se.select_device().type == expected
    assert se.select_device("cpu").type == "cpu"
    monkeypatch.setenv("SELIC_DEVICE", "cpu")
    assert se.select_device().type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            se.select_device("cuda")


@pytest.mark.parametrize("fusion", FUSION_MODES)
def test_training_pass_and_gradients(fusion):
    model = build_tiny(fusion=fusion).train()
    x = torch.rand(2, 3, 64, 64)
    out = model(x, torch.tensor([1.0, 7.5]), torch.randn(2, 384), torch.tensor([True, False]))
    assert out["x_hat"].shape == x.shape
    rate = sum(-torch.log2(v).sum() for v in out["likelihoods"].values())
    (rate + out["x_hat"].pow(2).sum()).backward()
    assert model.g_a[0].conv1.weight.grad is not None
    if fusion != "none":
        assert model.fusion.project[0].weight.grad.abs().sum() > 0
        assert model.fusion.null_embedding.grad.abs().sum() > 0


def test_unknown_fusion_mode_is_refused():
    """No silent fallback: a mode outside config.FusionMode fails in the config and in the module itself."""
    from selic_engine.model.fusion import SemanticFusion

    with pytest.raises(ValueError, match="unknown fusion mode 'gate'"):
        build_tiny(fusion="gate")
    with pytest.raises(ValueError, match="unknown fusion mode 'gate'"):
        SemanticFusion(384, 32, "gate")  # type: ignore[arg-type]


def test_presets_are_consistent():
    for name, cfg in PRESETS.items():
        assert cfg.name == name and cfg.M % cfg.slices == 0
    assert PRESETS["paper"].N == 128 and PRESETS["paper"].fusion == "concat"


def test_grayscale_and_alpha_round_trip(tiny_engine, photo):
    gray = Image.fromarray(photo).convert("L")
    assert se.decode(se.encode(gray, 4, caption=False, model=tiny_engine.model_id)).mode == "L"
    rgba = Image.fromarray(photo).convert("RGBA")
    alpha = np.random.default_rng(1).integers(0, 256, photo.shape[:2], dtype=np.uint8)
    rgba.putalpha(Image.fromarray(alpha))
    out = se.decode(se.encode(rgba, 4, caption=False, model=tiny_engine.model_id))
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out)[..., 3], alpha)


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _resized_png_header(png: bytes, width: int, height: int) -> bytes:
    """The PNG with IHDR claiming another size (CRC recomputed)."""
    ihdr = png[12:29]  # type, width, height, depth, colour type, ...
    ihdr = ihdr[:4] + struct.pack(">II", width, height) + ihdr[12:]
    return png[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


@pytest.mark.parametrize("alpha", [
    b"", b"not a png", "truncated", _png(Image.new("L", (3, 3))), _png(Image.new("RGB", (101, 77))),
    _resized_png_header(_png(Image.new("L", (3, 3))), 60000, 60000),  # refused by its header, never inflated
])
def test_damaged_alpha_is_a_format_error_before_the_rgb_decode(tiny_engine, photo, monkeypatch, alpha):
    """A damaged ALPH chunk used to raise a plain ValueError, and only after the whole RGB decode."""
    from benchmarks.fuzzing import chunk_payload, replace_chunk
    from selic_engine.model import SelicModel

    rgba = Image.fromarray(photo).convert("RGBA")
    data = se.encode(rgba, 4, caption=False, model=tiny_engine.model_id)
    if alpha == "truncated":  # half its pixels missing
        png = chunk_payload(data, b"ALPH")
        alpha = png[: len(png) // 2]
    monkeypatch.setattr(SelicModel, "decompress", lambda *a, **k: pytest.fail("the RGB decode ran"))
    with pytest.raises(se.SelicFormatError, match="alpha"):
        se.decode(replace_chunk(data, b"ALPH", alpha))


def test_probe_and_decode_take_a_path(tiny_engine, photo, tmp_path):
    """se.probe("x.selic") used to say "bad magic" of a good file, and se.decode("x.selic") raise TypeError."""
    data = se.encode(photo, 4, caption=False, model=tiny_engine.model_id)
    path = tmp_path / "x.selic"
    path.write_bytes(data)
    expected = np.asarray(se.decode(data))
    for source in (path, str(path)):
        assert se.probe(source) == se.probe(data)
        assert np.array_equal(np.asarray(se.decode(source)), expected)
    with pytest.raises(FileNotFoundError):
        se.probe(tmp_path / "missing.selic")


def test_refuses_high_bit_depth(tiny_engine):
    img = Image.new("I;16", (8, 8))
    with pytest.raises(ValueError, match="bit depth"):
        se.encode(img, 4, caption=False, model=tiny_engine.model_id)


def test_quality_changes_rate(tiny_engine, photo):
    # The gains start geometrically spaced over the qualities, so even an untrained model spends more bits at q=8.
    sizes = [len(se.encode(photo, q, caption=False, model=tiny_engine.model_id)) for q in (1, 8)]
    assert sizes[0] < sizes[1]


def test_banded_parameter_nets_match_the_whole_latent():
    from selic_engine.entropy.charm import banded, param_net

    net = param_net(8, 16, 4).double().eval()
    x = torch.randn(1, 8, 100, 7, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(banded(net, x, 32, 3), net(x), rtol=0, atol=1e-12)


def test_hyper_bands_match_the_whole_latent_h_s(tiny_engine):
    """Each coding band's means and scales are the rows a whole-latent h_s gives (its margin covers h_s's reach)."""
    from selic_engine.entropy import coding_bands

    model = tiny_engine.model
    z_hat = torch.randn(1, model.config.Nz, 37, 5, dtype=torch.float64).mul_(4).round_()
    with torch.no_grad():
        means, scales = model.h_s(z_hat).chunk(2, dim=1)
        for r0, r1 in coding_bands(4 * 37, model.geometry.coding_band_rows):
            band_means, band_scales = model.latent_codec.band_context(z_hat, (r0, r1)).window(0, 4 * 5)
            assert torch.allclose(band_means, means[..., r0:r1, :], rtol=0, atol=1e-12)
            assert torch.allclose(band_scales, scales[..., r0:r1, :], rtol=0, atol=1e-12)


@pytest.mark.parametrize("model_name", ["shipped", "tiny"])
def test_column_windows_compute_exactly_what_the_whole_band_does(tiny_engine, model_name):
    """Issue 32: a band wider than a window (entropy.columns) gets bit for bit the values decoder v1 computes over
    the whole band (h_s over the band's z rows, each parameter net over the band in row bands), at widths whose
    GEMMs end in a tail kernel and not. Fails on a machine whose dgemm kernel width does not divide columns.ALIGN."""
    from selic_engine.entropy.charm import banded

    model = (se.get_engine("small") if model_name == "shipped" else tiny_engine).model
    codec, charm = model.latent_codec, model.charm
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for z_rows, z_cols, (r0, r1) in [(1, 101, (0, 4)), (20, 100, (64, 80))]:
            z = torch.randn(1, model.config.Nz, z_rows, z_cols, generator=g, dtype=torch.float64).mul_(3).round_()
            a0, a1 = max(0, r0 // 4 - 3), min(z_rows, r1 // 4 + 3)
            whole = model.h_s(z[..., a0:a1, :])[..., r0 - 4 * a0 : r1 - 4 * a0, :]
            assert torch.equal(torch.cat(codec.band_context(z, (r0, r1)).window(0, 4 * z_cols), dim=1), whole)
        for net in (charm.scale_nets[-1], charm.lrp_nets[0]):
            cin = net[0].in_channels
            for rows, width in [(4, 1000), (4, 768), (38, 433), (64, 400)]:
                x = torch.randn(1, cin, rows, width, generator=g, dtype=torch.float64)
                whole = banded(net, x, charm.NET_BAND_ROWS, charm.NET_BAND_MARGIN)
                assert torch.equal(charm._net(net, lambda b0, b1, x=x: [x[..., b0:b1]], width), whole), (rows, width)


def test_tall_image_is_coded_in_bands_and_round_trips(tiny_engine):
    """Above 1024 px the latent is coded in independent bands: the decoder follows from the height alone,
    reproduces the encoder's symbols (hash), and a single-band coding of the same latent differs."""
    from selic_engine.container import unpack
    from selic_engine.entropy import coding_bands

    rng = np.random.default_rng(7)
    img = Image.fromarray(rng.integers(0, 256, (1100, 24, 3), dtype=np.uint8)).resize((64, 1100))
    geometry = tiny_engine.model.geometry
    assert len(coding_bands(geometry.z_shape((1100, 64))[0] * 4, geometry.coding_band_rows)) == 2
    data = se.encode(img, 4, caption=False, model=tiny_engine.model_id)
    out = se.decode(data)
    assert out.size == (64, 1100)
    f = unpack(data)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None]
    whole = tiny_engine.model.compress(x, 4, band_rows=1 << 20)
    assert whole.y_stream != f.y_stream  # the band edge changed the ChARM context
    # and a reader with another band layout decodes other symbols (or runs out), never the file's
    try:
        _, digest = tiny_engine.model.latent_codec.decompress(f.z_stream, f.y_stream,
                                                              geometry.z_shape((1100, 64)), band_rows=1 << 20)
    except se.DesyncError:
        return
    assert digest != f.header.symbol_hash
