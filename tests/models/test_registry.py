import pytest

from pseudolabel.models.registry import Registry


def test_duplicates_rejected_and_unknown_named():
    reg = Registry("widget")
    reg.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        reg.register("a")(lambda: 2)
    with pytest.raises(ValueError, match="unknown widget 'b'; known: a"):
        reg.get("b")
    assert reg.get("a")() == 1 and "a" in reg
