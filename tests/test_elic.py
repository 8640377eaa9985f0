"""Decoder v2's latent codec (entropy.elic) on the band driver: exact round trips, estimated bits against the real
stream, band independence and the guard, on a tiny random codec built from its config."""

from __future__ import annotations

import copy

import pytest
import torch

from selic_engine.config import ElicConfig, elic_groups
from selic_engine.entropy.elic import CheckerboardGroups, anchors
from selic_engine.errors import DesyncError
from selic_engine.model.selic_v2 import elic_latent_codec

TINY_ELIC = ElicConfig(groups=(4, 4, 8, 16), Nz=16, hyper_hidden=16, param_hidden=16, context_hidden=16)


def tiny_codec(seed: int = 0):
    """A tiny random codec, ready to code (tables built, probability side in float64), and a latent for it. Its
    scales start near 4 rather than at the table's floor, so that most symbols are inside the tables, as a trained
    codec's are (a random net's far tails cost the likelihood floor's 30 bits, and the coder's escapes less)."""
    torch.manual_seed(seed)
    codec = elic_latent_codec(32, TINY_ELIC)
    with torch.no_grad():
        for g, net in zip(TINY_ELIC.groups, codec.context.param_nets, strict=True):
            net[-1].bias[g:] += 4.0
    codec.update(force=True)
    codec.eval().coding_layout()
    y = 6 * torch.randn(1, 32, 16, 24)
    return codec, y


def estimated_bits(codec, y: torch.Tensor) -> float:
    """-log2 of the eval-mode likelihoods (rounded latents) of y and z, all in float64."""
    with torch.no_grad():
        out = copy.deepcopy(codec).double()(y.double())
    return sum(-torch.log2(lik).sum().item() for lik in out["likelihoods"].values())


def test_groups_follow_elic_and_are_checked():
    assert elic_groups(192) == (16, 16, 32, 64, 64)
    assert elic_groups(128) == (16, 16, 32, 64)
    assert ElicConfig().channel_groups(320) == (16, 16, 32, 64, 192)
    with pytest.raises(ValueError, match="sum to M"):
        ElicConfig(groups=(4, 4)).channel_groups(32)
    with pytest.raises(ValueError, match="explicitly"):
        elic_groups(32)


def test_checkerboard_halves_every_band():
    mask = anchors(torch.zeros(1, 1, 3, 4))
    assert mask.tolist() == [[True, False, True, False], [False, True, False, True], [True, False, True, False]]


def test_round_trip_is_exact_and_the_estimate_matches_the_stream():
    codec, y = tiny_codec()
    coded = codec.compress(y, band_rows=64)  # one band: the whole latent, as the training pass sees it
    y_hat, digest = codec.decompress(coded.z_stream, coded.y_stream, coded.z_shape, 64, torch.float64)
    assert digest == coded.symbol_hash
    with torch.no_grad():  # the training pass's loop on the decoded z, over the whole latent
        expected = codec.context(y.double(), codec.h_s(codec.decompress_side(coded.z_stream, coded.z_shape)))[0]
    assert torch.equal(y_hat, expected)  # the decoder's values are the training pass's, bit for bit
    assert (y_hat - y.double()).abs().max() <= 0.5 + 1e-9
    real = 8 * (len(coded.y_stream) + len(coded.z_stream))
    assert abs(real - estimated_bits(codec, y)) < 0.05 * real


def test_a_latent_wider_than_the_column_windows_decodes_to_the_whole_bands_values():
    """Outside training the context nets run in windows of NET_WINDOW_COLUMNS latent columns (bounded memory on a
    wide image); across three windows and a ragged last one, the decoder's values are still the whole band's."""
    codec, _ = tiny_codec(3)
    width = 2 * CheckerboardGroups.NET_WINDOW_COLUMNS + 40
    y = 6 * torch.randn(1, 32, 4, width)
    coded = codec.compress(y, band_rows=64)
    y_hat, digest = codec.decompress(coded.z_stream, coded.y_stream, coded.z_shape, 64, torch.float64)
    assert digest == coded.symbol_hash
    codec.context.train()  # the whole band at once, as the training pass runs it
    with torch.no_grad():
        expected = codec.context(y.double(), codec.h_s(codec.decompress_side(coded.z_stream, coded.z_shape)))[0]
    assert torch.equal(y_hat, expected)


def test_bands_round_trip_and_repeat_exactly():
    codec, y = tiny_codec(1)
    coded = codec.compress(y, band_rows=4)
    again = codec.compress(y, band_rows=4)
    assert (coded.y_stream, coded.symbol_hash) == (again.y_stream, again.symbol_hash)
    y_hat, digest = codec.decompress(coded.z_stream, coded.y_stream, coded.z_shape, 4)
    assert digest == coded.symbol_hash
    assert (y_hat - y).abs().max() <= 0.5 + 1e-6
    whole = codec.compress(y, band_rows=64)
    assert whole.symbol_hash != coded.symbol_hash  # each band's contexts see only that band


def test_a_truncated_stream_is_refused():
    codec, y = tiny_codec(2)
    coded = codec.compress(y, band_rows=8)
    with pytest.raises(DesyncError):
        codec.decompress(coded.z_stream, coded.y_stream[: len(coded.y_stream) // 3], coded.z_shape, 8)


def test_training_pass_gives_gradients_to_every_prior_net():
    torch.manual_seed(0)
    codec = elic_latent_codec(32, TINY_ELIC).train()
    out = codec(4 * torch.randn(2, 32, 8, 8))
    bits = sum(-torch.log2(lik).sum() for lik in out["likelihoods"].values())
    bits.backward()
    for name, p in codec.named_parameters():
        if name != "entropy_bottleneck.quantiles":
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
