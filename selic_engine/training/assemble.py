"""Decoder v2 (issue 31): one selic-v2 model from its stages, where the joint fine-tune starts.

v1's encoder side (g_a, semantic fusion and quality gains: the latent both stages learned from), stage 2's entropy
model (training.entropy_stage) and stage 1's light g_s (training.distill), each from its stage's weight average when
the stage kept one. The result is written as float32 weights of preset small-v2, recording what it was built from;
`selic train --preset small-v2 --init-weights FILE` then fine-tunes it jointly (its own step count starts at 0).

With --base, a selic-v2 model instead gets the light g_s that training.distill --init teacher trained further on its
own frozen latents; everything else, and its step count, stay the base's, and its training seconds add the stage's.

    python -m selic_engine.training.assemble --v1 V1.safetensors --entropy RUN/last.pt --synthesis RUN/last.pt \\
        -o V2.safetensors
    python -m selic_engine.training.assemble --base V2.safetensors --synthesis RUN/last.pt -o V2-gs.safetensors
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from ..config import DecoderV2Config, ElicConfig, preset
from ..model import Architecture, build_model
from ..weights.files import load_weights, read_metadata, save_weights
from . import checkpoint
from .averaging import averaged_weights

#: The preset an assembled model has by default: the one the joint fine-tune continues.
PRESET = "small-v2"


def stage_weights(state: dict[str, Any], key: str) -> dict[str, torch.Tensor]:
    """A stage checkpoint's module weights: its average's parameters over the live module's state (buffers, such
    as the entropy tables, are the live module's: the average does not keep them)."""
    weights = dict(state[key])
    if "ema" in state:
        averaged = averaged_weights(state["ema"])
        weights.update({k: v for k, v in averaged.items() if k in weights})
    return weights


def learned_from(name: str, state: dict[str, Any], model_id: str) -> None:
    """Refuse a stage that learned from another model's latents than the one it is put together with."""
    if state["teacher_id"] != model_id:
        raise ValueError(f"the {name} stage learned from decoder {state['teacher_id']}'s latents, not {model_id}'s")


def assemble(v1: Architecture, v1_id: str, entropy: dict[str, Any], synthesis: dict[str, Any],
             preset_name: str = PRESET) -> Architecture:
    """The model of preset_name (a selic-v2 preset) from v1's encoder side and the two stages' modules; both
    stages must have learned from v1's latents (their teacher id) and have the preset's shapes."""
    for name, state in (("entropy", entropy), ("synthesis", synthesis)):
        learned_from(name, state, v1_id)
    elic = json.loads(entropy["elic_config"])
    stages = DecoderV2Config(ElicConfig(**{**elic, "groups": tuple(elic["groups"])}), tuple(synthesis["widths"]))
    config = preset(preset_name)
    if stages != config.v2 or v1.config.replace(name=config.name, architecture=config.architecture,
                                                v2=config.v2) != config:
        raise ValueError(f"the stages build {stages} on {v1.config}, not preset {preset_name} ({config})")
    model = build_model(config)
    encoder = {k: v for k, v in v1.state_dict().items() if k.split(".")[0] in ("g_a", "fusion", "gains")}
    state = {**encoder, **{f"latent_codec.{k}": v for k, v in stage_weights(entropy, "codec").items()},
             **{f"g_s.{k}": v for k, v in stage_weights(synthesis, "student").items()}}
    model.load_state_dict(state)  # strict: every tensor comes from exactly one source
    model.update(force=True)  # entropy tables of the averaged weights
    return model.eval()


def with_synthesis(base: Architecture, base_id: str, synthesis: dict[str, Any]) -> Architecture:
    """base (a selic-v2 model) with the light g_s of a synthesis stage trained on base's own latents."""
    learned_from("synthesis", synthesis, base_id)
    if base.config.v2 is None or tuple(synthesis["widths"]) != base.config.v2.synthesis_widths:
        raise ValueError(f"the synthesis stage trains widths {synthesis['widths']}, not {base.config.name}'s g_s")
    base.g_s.load_state_dict(stage_weights(synthesis, "student"))  # strict
    return base.eval()


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="python -m selic_engine.training.assemble",
                                description="Assemble decoder v2 from its stages (issue 31) for the joint fine-tune.")
    p.add_argument("--v1", help="decoder v1 weights whose latents the stages learned from")
    p.add_argument("--entropy", help="stage 2's checkpoint (training.entropy_stage's last.pt)")
    p.add_argument("--base", help="instead of --v1 and --entropy: the selic-v2 weights whose g_s --synthesis trained")
    p.add_argument("--synthesis", required=True, help="the synthesis stage's checkpoint (training.distill's last.pt)")
    p.add_argument("--preset", default=PRESET, help=f"the selic-v2 preset to build (default {PRESET})")
    p.add_argument("-o", "--out", required=True, help="the weights to write (.safetensors)")
    args = p.parse_args(argv)
    if (args.base is None) == (args.v1 is None or args.entropy is None):
        p.error("give --v1 and --entropy, or --base")
    synthesis = checkpoint.load(Path(args.synthesis))
    history = {"synthesis": stage_history(args.synthesis, synthesis)}
    if args.base:
        base, base_id = load_weights(Path(args.base))
        model, meta = with_synthesis(base, base_id, synthesis), read_metadata(Path(args.base))
        history["base"] = {"weights": args.base, "model_id": base_id, "step": meta.get("step", "0")}
        step, seconds = meta.get("step", "0"), float(meta.get("train_seconds", 0)) + synthesis["train_seconds"]
    else:
        v1, v1_id = load_weights(Path(args.v1))
        entropy = checkpoint.load(Path(args.entropy))
        model = assemble(v1, v1_id, entropy, synthesis, args.preset)
        history.update(v1={"weights": args.v1, "model_id": v1_id}, entropy=stage_history(args.entropy, entropy))
        step, seconds = "0", 0
    out = Path(args.out)
    save_weights(model, out, {"step": str(step), "train_seconds": str(seconds),
                              "assembled_from": json.dumps(history)})
    return out


def stage_history(path: str, state: dict[str, Any]) -> dict[str, Any]:
    """What the written file records of a stage it took a part from."""
    return {"checkpoint": path, "step": state["step"], "train_seconds": state["train_seconds"]}


if __name__ == "__main__":
    print(main())
