"""alexnet.classes: a network's class names."""

from alexnet.classes import class_names


def test_the_recorded_names_then_imagenets_then_numbers():
    assert class_names(3, ["cat", "dog", "fish"]) == ["cat", "dog", "fish"]
    assert class_names(3, ["cat", "dog"]) == ["class 0", "class 1", "class 2"]  # not one name per class
    imagenet = class_names(1000)
    assert len(imagenet) == 1000 and imagenet[517] == "construction crane" and imagenet[657] == imagenet[744] == "missile"
    assert imagenet[0] == "tench" and imagenet[1] == "goldfish" and imagenet[999] == "toilet paper"
