"""A1111 prompt syntax: LoRA tags, emphasis, BREAK, chunking, SD1.5 / SDXL encoding (toonbooth.models.prompts)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from toonbooth.core.errors import InputError
from toonbooth.models.prompts import (
    LoraTag,
    check_lora_names,
    empty_chunk,
    encode_prompt_sd15,
    encode_prompt_sdxl,
    extract_lora_tags,
    parse_prompt_attention,
    tokenize_prompt_chunks,
)
from toonbooth.models.tiny import build_tiny_sd15, build_tiny_sdxl, make_pipeline, make_tiny_clip_tokenizer

# ---------------------------------------------------------------------------------------------------------
# Emphasis parser: A1111's own doc examples (prompt_parser.py) and edge cases
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        ("\\(literal\\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                ("a ", 1.0),
                ("house", 1.5730000000000004),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.4641000000000006),
                (".", 1.1),
            ],
        ),
        ("((word))", [("word", 1.2100000000000002)]),
        ("[word]", [("word", 1 / 1.1)]),
        ("(word:1.5)", [("word", 1.5)]),
        ("(word: 0.8 )", [("word", 0.8)]),
        ("([a] b)", [("a", 1.0), (" b", 1.1)]),
        ("a) b] c", [("a) b] c", 1.0)]),
        ("[open", [("open", 1 / 1.1)]),
        ("x:1.2) y", [("x:1.2) y", 1.0)]),
        ("(a\\)b)", [("a)b", 1.1)]),
        ("a\\\\b", [("a\\b", 1.0)]),
        ("", [("", 1.0)]),
        ("a BREAK b", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
        ("BREAKfast", [("BREAKfast", 1.0)]),
        ("(a BREAK b)", [("a", 1.1), ("BREAK", -1.0), ("b", 1.1)]),
    ],
)
def test_parse_prompt_attention(text, expected):
    got = parse_prompt_attention(text)
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected], abs=0, rel=1e-15)


def test_parse_doc_example_is_bit_exact():
    got = parse_prompt_attention("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).")
    assert got[1] == ("house", 1.5730000000000004)
    assert got[7] == ("sky", 1.4641000000000006)


def test_parse_bad_weight_is_input_error():
    with pytest.raises(InputError) as err:
        parse_prompt_attention("a (cat:1.2.3)")
    assert err.value.field == "prompt" and "1.2.3" in str(err.value)


# ---------------------------------------------------------------------------------------------------------
# LoRA tags
# ---------------------------------------------------------------------------------------------------------


def test_extract_lora_tags():
    text, tags = extract_lora_tags(
        "emoji, male, <lora:memoji:0.8>, smiling <lyco:style:0.5:0.7><lora:plain> <lora:n:te=0.3:unet=0.9>"
    )
    assert text == "emoji, male, , smiling  "
    assert tags == [
        LoraTag(name="memoji", weight=0.8, unet_weight=0.8, kind="lora"),
        LoraTag(name="style", weight=0.5, unet_weight=0.7, kind="lyco"),
        LoraTag(name="plain", weight=1.0, unet_weight=1.0, kind="lora"),
        LoraTag(name="n", weight=0.3, unet_weight=0.9, kind="lora"),
    ]
    assert extract_lora_tags("no tags (here:1.2)") == ("no tags (here:1.2)", [])


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("a <hypernet:anime:1>", "hypernetworks are not supported: '<hypernet:anime:1>'"),
        ("a <embed:x:1>", "unsupported extra network '<embed:x:1>'"),
        ("a <lora:x:strong>", "bad weight 'strong' in tag '<lora:x:strong>'"),
        ("a <lora:x:1:1:1>", "too many numbers"),
        ("a <lora:x:dyn=4>", "unsupported parameter(s) ['dyn']"),
    ],
)
def test_bad_tags(prompt, message):
    with pytest.raises(InputError) as err:
        extract_lora_tags(prompt)
    assert err.value.field == "prompt"
    assert message in str(err.value)


def test_check_lora_names():
    _, tags = extract_lora_tags("<lora:memoji:1> <lora:x:0.5>")
    with pytest.raises(InputError) as err:
        check_lora_names(tags, ["memoji", "chibi", "anime"])
    assert str(err.value) == "`prompt`: unknown LoRA 'x'; known: anime, chibi, memoji"
    check_lora_names(tags[:1], ["memoji"])  # known name: no error
    with pytest.raises(InputError, match=r"known: \(none\)"):
        check_lora_names(tags, [])


# ---------------------------------------------------------------------------------------------------------
# Chunking (tiny tokenizer: one token per non-space character)
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok():
    return make_tiny_clip_tokenizer()


def _body(chunk, tok):
    """Prompt tokens of a chunk (between BOS and the first EOS)."""
    toks = chunk.tokens[1:]
    return toks[: toks.index(tok.eos_token_id)] if tok.eos_token_id in toks else toks[:75]


def test_chunk_lengths_and_specials(tok):
    one = tokenize_prompt_chunks(tok, "a" * 75)
    assert len(one) == 1 and len(one[0].tokens) == 77
    assert one[0].tokens[0] == tok.bos_token_id and one[0].tokens[76] == tok.eos_token_id
    two = tokenize_prompt_chunks(tok, "a" * 76)
    assert len(two) == 2 and all(len(c.tokens) == 77 for c in two)
    assert len(_body(two[0], tok)) == 75 and len(_body(two[1], tok)) == 1
    # a plain short prompt gives exactly the tokenizer's own padded encoding
    ids = tok("a cat", padding="max_length", max_length=77).input_ids
    assert tokenize_prompt_chunks(tok, "a cat")[0].tokens == ids
    assert empty_chunk(tok).tokens == tok("", padding="max_length", max_length=77).input_ids


def test_weights_follow_tokens(tok):
    (chunk,) = tokenize_prompt_chunks(tok, "ab (cd:1.5) [e]")
    assert chunk.multipliers[:7] == pytest.approx([1.0, 1.0, 1.0, 1.5, 1.5, 1 / 1.1, 1.0])
    assert len(chunk.multipliers) == 77


def test_break_forces_new_chunk(tok):
    chunks = tokenize_prompt_chunks(tok, "abc BREAK de")
    assert len(chunks) == 2
    assert len(_body(chunks[0], tok)) == 3 and len(_body(chunks[1], tok)) == 2
    assert len(tokenize_prompt_chunks(tok, "abc BREAK")) == 1
    assert len(tokenize_prompt_chunks(tok, "BREAK abc")) == 2  # A1111: leading BREAK leaves an empty chunk


def test_comma_backtrack_moves_text_after_last_comma(tok):
    prompt = "a" * 60 + "," + "b" * 30  # comma is token 61, 15 tokens before the 75 limit
    chunks = tokenize_prompt_chunks(tok, prompt)
    assert len(chunks) == 2
    first, second = _body(chunks[0], tok), _body(chunks[1], tok)
    assert len(first) == 61 and first[-1] == tok.get_vocab()[",</w>"]
    assert len(second) == 30
    # without backtrack: a hard cut at 75 tokens
    hard = tokenize_prompt_chunks(tok, prompt, comma_padding_backtrack=0)
    assert len(_body(hard[0], tok)) == 75 and len(_body(hard[1], tok)) == 16
    # comma more than 20 tokens before the limit: hard cut
    far = tokenize_prompt_chunks(tok, "a" * 50 + "," + "b" * 40)
    assert len(_body(far[0], tok)) == 75


def test_pad_token_after_first_eos(tok):
    tok2 = make_tiny_clip_tokenizer()
    tok2.pad_token = "!"  # like SDXL's second tokenizer
    (chunk,) = tokenize_prompt_chunks(tok2, "ab")
    pad = tok2.pad_token_id
    assert chunk.tokens[:4] == [
        tok2.bos_token_id,
        *tok2("ab", add_special_tokens=False).input_ids,
        tok2.eos_token_id,
    ]
    assert chunk.tokens[4:] == [pad] * 73
    assert chunk.tokens == tok2("ab", padding="max_length", max_length=77).input_ids


# ---------------------------------------------------------------------------------------------------------
# SD 1.5 encoding
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sd15_pipe():
    comps = build_tiny_sd15(seed=0)
    # A random CLIP has a zero-bias final layer norm, so its output mean is ~0; the real one's is not, and
    # A1111's mean restoration needs that. Give the tiny encoder a realistic non-zero bias.
    with torch.no_grad():
        bias = comps["text_encoder"].final_layer_norm.bias
        bias.copy_(0.3 + 0.1 * torch.randn(bias.shape, generator=torch.Generator().manual_seed(0)))
    pipe = make_pipeline(comps, "sd15")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_sd15_plain_prompt_equals_diffusers(sd15_pipe):
    pipe = sd15_pipe
    ours = encode_prompt_sd15(pipe.tokenizer, pipe.text_encoder, "a cute cat", "blurry, ugly", "cpu")
    pe, ne = pipe.encode_prompt("a cute cat", "cpu", 1, True, negative_prompt="blurry, ugly")
    assert ours.prompt_embeds.shape == (1, 77, 32)
    torch.testing.assert_close(ours.prompt_embeds, pe)
    torch.testing.assert_close(ours.negative_prompt_embeds, ne)
    # clip skip: A1111's 2 (diffusers' 1) = penultimate hidden state + final layer norm. diffusers' own
    # clip_skip path reads `text_encoder.text_model`, which transformers 5 removed, so compute it here.
    ours2 = encode_prompt_sd15(pipe.tokenizer, pipe.text_encoder, "a cute cat", "", "cpu", clip_skip=2)
    ids = pipe.tokenizer("a cute cat", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = pipe.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
        expected = pipe.text_encoder.final_layer_norm(hidden)
    torch.testing.assert_close(ours2.prompt_embeds, expected)
    assert not torch.allclose(ours2.prompt_embeds, pe)


def test_sd15_emphasis_changes_embeddings_and_keeps_mean(sd15_pipe):
    tok, te = sd15_pipe.tokenizer, sd15_pipe.text_encoder
    plain = encode_prompt_sd15(tok, te, "a cute cat").prompt_embeds
    weighted = encode_prompt_sd15(tok, te, "a cute (cat:1.5)").prompt_embeds
    neutral = encode_prompt_sd15(tok, te, "a cute (cat:1.0)").prompt_embeds
    torch.testing.assert_close(neutral, plain)
    assert (weighted - plain).abs().max() > 1e-3
    torch.testing.assert_close(weighted.mean(), plain.mean())  # A1111 restores the original mean
    # the weighted token positions change relative to the others
    ratio = weighted[0] / plain[0]
    cat_rows = ratio[6:9]  # BOS, "a", "c" "u" "t" "e" = positions 0-5, then "c" "a" "t" = 6-8
    rest = ratio[1:6]
    torch.testing.assert_close(
        cat_rows, torch.full_like(cat_rows, float(rest.mean()) * 1.5), rtol=1e-3, atol=0
    )
    torch.testing.assert_close(rest, torch.full_like(rest, float(rest.mean())), rtol=1e-4, atol=0)


def test_sd15_long_prompt_break_and_negative_padding(sd15_pipe):
    tok, te = sd15_pipe.tokenizer, sd15_pipe.text_encoder
    long_prompt = ", ".join(["cat"] * 30)  # 30*3 + 29 commas = 119 tokens
    out = encode_prompt_sd15(tok, te, long_prompt, "ugly")
    assert out.prompt_embeds.shape == (1, 154, 32)
    assert out.negative_prompt_embeds.shape == (1, 154, 32)
    # the negative's second chunk is the encoding of the empty prompt
    empty = encode_prompt_sd15(tok, te, "").prompt_embeds
    torch.testing.assert_close(out.negative_prompt_embeds[:, 77:], empty)
    short_neg = encode_prompt_sd15(tok, te, "x", "ugly").negative_prompt_embeds
    torch.testing.assert_close(out.negative_prompt_embeds[:, :77], short_neg)
    # BREAK gives two chunks even for a short prompt; the negative follows
    br = encode_prompt_sd15(tok, te, "a cat BREAK a dog", "")
    assert br.prompt_embeds.shape == (1, 154, 32) and br.negative_prompt_embeds.shape == (1, 154, 32)
    torch.testing.assert_close(br.prompt_embeds[:, :77], encode_prompt_sd15(tok, te, "a cat").prompt_embeds)
    torch.testing.assert_close(br.prompt_embeds[:, 77:], encode_prompt_sd15(tok, te, "a dog").prompt_embeds)
    # a negative longer than the prompt pads the prompt instead
    flip = encode_prompt_sd15(tok, te, "cat", long_prompt)
    assert flip.prompt_embeds.shape == (1, 154, 32)


def test_sd15_clip_skip_range(sd15_pipe):
    with pytest.raises(InputError, match="clip_skip"):
        encode_prompt_sd15(sd15_pipe.tokenizer, sd15_pipe.text_encoder, "a", clip_skip=0)


def test_sd15_pipeline_runs_with_embeds(sd15_pipe):
    pipe = sd15_pipe
    emb = encode_prompt_sd15(pipe.tokenizer, pipe.text_encoder, ", ".join(["(cat:1.2)"] * 30), "ugly", "cpu")

    def run(**kw):
        return pipe(
            num_inference_steps=2,
            height=64,
            width=64,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
            **kw,
        ).images

    img = run(**emb.as_pipeline_kwargs())
    assert img.shape == (1, 64, 64, 3) and np.isfinite(img).all()
    # a plain prompt through our embeds gives the same image as the pipeline's own encoding
    plain = encode_prompt_sd15(pipe.tokenizer, pipe.text_encoder, "a cat", "ugly", "cpu")
    np.testing.assert_allclose(
        run(**plain.as_pipeline_kwargs()), run(prompt="a cat", negative_prompt="ugly"), atol=1e-5
    )


# ---------------------------------------------------------------------------------------------------------
# SDXL encoding
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sdxl_pipe():
    comps = build_tiny_sdxl(seed=0)
    comps["tokenizer_2"].pad_token = "!"  # as in SDXL's tokenizer_2 (pad id 0 != EOS)
    pipe = make_pipeline(comps, "sdxl")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _xl(pipe, prompt, negative="", **kw):
    return encode_prompt_sdxl(
        (pipe.tokenizer, pipe.tokenizer_2),
        (pipe.text_encoder, pipe.text_encoder_2),
        prompt,
        negative,
        "cpu",
        **kw,
    )


def test_sdxl_plain_prompt_equals_diffusers(sdxl_pipe):
    pipe = sdxl_pipe
    dim = pipe.text_encoder.config.hidden_size + pipe.text_encoder_2.config.hidden_size
    for negative in ("blurry, ugly", ""):
        ours = _xl(pipe, "a cute cat", negative)
        pe, ne, pp, npp = pipe.encode_prompt(
            "a cute cat",
            device="cpu",
            num_images_per_prompt=1,
            do_classifier_free_guidance=True,
            negative_prompt=negative,
        )
        assert ours.prompt_embeds.shape == (1, 77, dim)
        torch.testing.assert_close(ours.prompt_embeds, pe)
        torch.testing.assert_close(ours.negative_prompt_embeds, ne)
        torch.testing.assert_close(ours.pooled_prompt_embeds, pp)
        torch.testing.assert_close(ours.negative_pooled_prompt_embeds, npp)
    # diffusers zeroes a missing negative (force_zeros_for_empty_prompt); A1111 (and we) encode ""
    _, ne_none, _, npp_none = pipe.encode_prompt("a cute cat", device="cpu", negative_prompt=None)
    assert float(ne_none.abs().max()) == 0.0 and float(npp_none.abs().max()) == 0.0
    assert float(_xl(pipe, "a cute cat").negative_prompt_embeds.abs().max()) > 0


def test_sdxl_long_prompt_prompt_2_and_pooled_from_first_chunk(sdxl_pipe):
    pipe = sdxl_pipe
    long_prompt = "a cute cat, " + ", ".join(["(dog:1.3)"] * 25)
    out = _xl(pipe, long_prompt, "ugly")
    dim = out.prompt_embeds.shape[-1]
    assert out.prompt_embeds.shape == (1, 154, dim) and out.negative_prompt_embeds.shape == (1, 154, dim)
    first_chunk = tokenize_prompt_chunks(pipe.tokenizer_2, long_prompt)[0]
    ids = torch.tensor([first_chunk.tokens])
    with torch.no_grad():
        pooled = pipe.text_encoder_2(ids).text_embeds
    torch.testing.assert_close(out.pooled_prompt_embeds, pooled)
    # emphasis changes both halves of the features; prompt_2 feeds only encoder 2
    plain = _xl(pipe, "a cute cat")
    weighted = _xl(pipe, "a cute (cat:1.4)")
    d1 = pipe.text_encoder.config.hidden_size
    assert (weighted.prompt_embeds[..., :d1] - plain.prompt_embeds[..., :d1]).abs().max() > 1e-3
    assert (weighted.prompt_embeds[..., d1:] - plain.prompt_embeds[..., d1:]).abs().max() > 1e-3
    two = _xl(pipe, "a cute cat", prompt_2="an oil painting")
    torch.testing.assert_close(two.prompt_embeds[..., :d1], plain.prompt_embeds[..., :d1])
    assert (two.prompt_embeds[..., d1:] - plain.prompt_embeds[..., d1:]).abs().max() > 1e-3
    # a long prompt_2 pads encoder 1's chunks too
    assert _xl(pipe, "cat", prompt_2=long_prompt).prompt_embeds.shape == (1, 154, dim)


def test_sdxl_pipeline_runs_with_embeds(sdxl_pipe):
    pipe = sdxl_pipe
    emb = _xl(pipe, "a cute cat BREAK (smiling:1.3), [glasses]", "blurry")
    img = pipe(
        num_inference_steps=2,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        **emb.as_pipeline_kwargs(),
    ).images
    assert img.shape == (1, 64, 64, 3) and np.isfinite(img).all()
