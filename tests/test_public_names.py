"""The names users import keep working: where they are, or for one release where they were,
with a DeprecationWarning naming the new place."""

from __future__ import annotations

import importlib

import pytest

#: module -> the names a user's code imports from it
PUBLIC = {
    "densemnv3.models": [
        "create_backbone",
        "list_backbones",
        "register_backbone",
        "build_model",
        "register_model",
        "list_models",
        "inspect_checkpoint",
        "load_weights",
        "load_state_dict_checked",
        "lraspp_mobilenet_v3_large",
        "lraspp_mobilenet_v3_small",
        "ssdlite320_mobilenet_v3_large",
        "ssdlite320_mobilenet_v3_small",
        "multitask_mobilenet_v3_large",
        "lraspp",
        "ssdlite",
        "LRASPP",
        "SSDLite",
        "LRASPPSSDLite",
    ],
    "densemnv3.load": ["load_model", "LoadedModel"],
    "densemnv3.inference": ["Predictor", "overlay_segmentation", "draw_detections", "label_map"],
    "densemnv3.runtimes": ["load_exported", "ExportedModel", "RUNTIMES", "read_metadata"],
    "densemnv3.config": ["Config", "load_config", "apply_override"],
    "densemnv3.checkpoint": ["inspect_checkpoint", "CheckpointInfo", "load_state_dict_checked"],
}
#: (old module, name, new module): kept one release with a warning
MOVED = [
    ("densemnv3.models", "load_model", "densemnv3.load"),
    ("densemnv3.models", "LoadedModel", "densemnv3.load"),
    ("densemnv3.config", "backbone_spec", "densemnv3.models.backbones.registry"),
]


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_import(module):
    loaded = importlib.import_module(module)
    missing = [name for name in PUBLIC[module] if not hasattr(loaded, name)]
    assert missing == []


@pytest.mark.parametrize(("old", "name", "new"), MOVED)
def test_moved_names_warn_and_are_the_same_object(old, name, new):
    with pytest.warns(DeprecationWarning, match=rf"{old}\.{name} moved to {new}\.{name}"):
        value = getattr(importlib.import_module(old), name)
    assert value is getattr(importlib.import_module(new), name)


def test_an_unknown_name_is_still_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'load_modle'"):
        importlib.import_module("densemnv3.models").load_modle  # noqa: B018
