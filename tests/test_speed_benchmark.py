"""benchmarks.speed's convolution count, which its roofline table divides by the measured time."""

from __future__ import annotations

import torch

from benchmarks.speed import conv_macs


def test_conv_macs_counts_every_convolution_once_per_call():
    net = torch.nn.Sequential(
        torch.nn.Conv2d(4, 8, 3, padding=1),  # 8x10x10 outputs x 4x3x3 taps
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2),  # 8x5x5 outputs x 4x3x3 taps
        torch.nn.Conv2d(8, 2, 1),  # 2x5x5 outputs x 8 taps
    )
    x = torch.randn(1, 4, 10, 10)
    assert conv_macs(net, x) == 800 * 36 + 200 * 36 + 50 * 8
    assert conv_macs(net, x) == conv_macs(net, x)  # the hooks are removed after the call
    assert not any(m._forward_hooks for m in net.modules())


def test_conv_macs_counts_transposed_convolutions_per_input_value():
    net = torch.nn.ConvTranspose2d(4, 6, 5, stride=2, padding=2, output_padding=1)  # as compressai's deconv
    x = torch.randn(1, 4, 3, 5)
    assert conv_macs(net, x) == 4 * 3 * 5 * 6 * 25  # each input value meets 6 x 5x5 weights


def test_cold_start_measures_a_fresh_process_and_renders_alone():
    """benchmarks.speed --cold-start: each row is a real process's exit and peak RSS; the section needs no runs."""
    from benchmarks.common import machine
    from benchmarks.speed import COLD_START, fresh_process, markdown

    seconds, rss = fresh_process("import sys; assert sys.argv[1] == 'x'", "x", 1)
    assert seconds > 0 and rss > 1  # MiB: an interpreter is several
    rows = {name: {"seconds": 1.5 + i, "peak_rss_mib": 850.0 + 100 * i} for i, name in enumerate(COLD_START)}
    text = markdown({"benchmark": "speed", "cold_start": {"machine": machine(), "model": "small", "threads": 1,
                                                          "repeats": 3, "rows": rows}})
    assert "| decode a 64x64 file | 2.50 | 950.00 |" in text and "adds 1.00 s and 100 MiB" in text


def test_versus_times_the_other_models_idle_decodes_in_the_same_run():
    """--versus V2: the other model's idle paths and large image join the run, and its decodes are set against
    --model's on the same path (issue 31: v2 against v1, same machine, same run)."""
    from benchmarks.speed import configs, parse_args, versus_markdown

    args = parse_args(["--versus", "/w/v2.safetensors", "--devices", "cpu"])
    runs = configs(args, ["cpu"])
    other = [c for c in runs if c["model"] == "/w/v2.safetensors"]
    assert other and all(c["load"] == "idle" and c["path"] != "before" for c in other)
    assert {c["size"] for c in other} == {"kodak", "large"}
    timed = [{**c, "decode_median_s": 1.0 if c["model"] == "small" else 0.25} for c in runs
             if c["load"] == "idle" and c["semantic"] is False and not c.get("stages") and not c.get("pool")]
    stats = {"weights_file": "v2.safetensors", "model_id": "0" * 16, "decoder_parameters": 1e6,
             "config": {"name": "small-v2", "architecture": "selic-v2"}}
    text = "\n".join(versus_markdown({"options": vars(args), "versus_model": stats, "runs": timed}))
    assert "| cpu | Kodak 768x512 | float32 | 1.000 | 0.250 | 0.250 |" in text
    assert "| cpu | large | auto | 1.000 | 0.250 | 0.250 |" in text
