"""The one registry type (awp.registry): register, get with a did-you-mean suggestion, names and
descriptions; an unknown name is one line naming the closest entries."""
import pytest

from awp.errors import UsageError
from awp.registry import Registry, suggest, unknown_name


def _models():
    reg = Registry("model")
    for name in ("smallcnn", "preactresnet18", "wrn-34-10", "wrn-28-10"):
        reg.register(name, object(), description=f"the {name}")
    return reg


def test_get_returns_what_was_registered_and_keeps_the_order():
    reg = Registry("method")
    a, b = object(), object()
    reg.register("at", a, description="PGD AT")
    reg.register("trades", b, description="TRADES", aliases=("zhang",))
    assert reg.get("at") is a and reg["trades"] is b and reg.get("zhang") is b
    assert reg.names() == ["at", "trades"] and list(reg) == ["at", "trades"] and len(reg) == 2
    assert "zhang" in reg and "mart" not in reg and 3 not in reg
    assert reg.describe() == {"at": "PGD AT", "trades": "TRADES"}
    assert reg.resolve("zhang") == "trades"


def test_decorator_takes_the_description_from_the_docstring():
    reg = Registry("figure")

    @reg.register("fig_gap")
    def draw():
        """Train and test robust accuracy over epochs.

        More text that is not the one-line description."""

    assert reg.get("fig_gap") is draw
    assert reg.description("fig_gap") == "Train and test robust accuracy over epochs."


def test_a_typo_names_the_closest_entry_on_one_line():
    with pytest.raises(UsageError) as err:
        _models().get("smallcnm")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("unknown model 'smallcnm'; did you mean smallcnn?")
    assert "choose from: smallcnn, preactresnet18, wrn-34-10, wrn-28-10" in message


def test_a_prefix_suggests_every_entry_it_starts():
    assert suggest("wrn", _models().names()) == ["wrn-34-10", "wrn-28-10"]
    assert suggest("xyz", _models().names()) == []
    assert str(unknown_name("model", "resnet9", _models().names())).startswith("unknown model 'resnet9'; choose from: ")


def test_long_lists_name_only_the_closest_and_where_to_look():
    reg = Registry("preset", listing="`awp presets` lists them")
    for i in range(30):
        reg.register(f"digits-{i:02d}", i, description=str(i))
    message = str(unknown_name(reg.kind, "digits-7", reg.names(), listing=reg.listing))
    assert "did you mean" in message and "digits-07" in message
    assert "30 presets: `awp presets` lists them" in message and "digits-29" not in message


def test_non_strings_and_duplicates():
    reg = _models()
    with pytest.raises(UsageError, match="unknown model 3"):
        reg.get(3)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("smallcnn", object(), description="again")
    with pytest.raises(ValueError, match="one-line description"):
        reg.register("nodoc", object())


def test_a_plain_enumeration():
    schedules = Registry("schedule", {"piecewise": "steps at milestones", "cosine": "half a cosine"})
    assert schedules.get("cosine") == "cosine" and schedules.names() == ["piecewise", "cosine"]
    with pytest.raises(UsageError, match="did you mean cosine"):
        schedules.get("cosin")
