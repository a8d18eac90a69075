import pytest
import torch

from pseudolabel.models.text import TEXT_ENCODERS, build_text_encoder


def test_tiny_embeds_distinct_classes_and_caches():
    enc = build_text_encoder("tiny")
    calls = []
    inner = enc._encode
    enc._encode = lambda tokens: calls.append(len(tokens)) or inner(tokens)
    e = enc.embed(["flower", "tree", "flower"])
    assert e.shape == (3, 64) and torch.equal(e[0], e[2]) and not torch.allclose(e[0], e[1])
    enc.embed(["tree", "kite"])
    assert calls == [2, 1]  # each name encoded once
    assert enc.embed([]).shape == (0, 64)
    # seeded: a second build gives the same embeddings
    torch.testing.assert_close(build_text_encoder("tiny").embed(["flower"]), e[:1])


def test_errors_name_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match="unknown text encoder 'bogus'"):
        build_text_encoder("bogus")
    with pytest.raises(ValueError, match="missing.pt: CLIP checkpoint not found"):
        build_text_encoder("ViT-B-32", checkpoint=tmp_path / "missing.pt")
    assert TEXT_ENCODERS.names() == ["tiny"]
