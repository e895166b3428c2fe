"""SamplingSettings: one validated object, one message per bad value wherever it comes from."""

import math

import pytest
from helpers import run_node as run

from vera.__main__ import main as cli
from vera.sampling.settings import WAN_DEFAULTS, SamplingSettings, SettingsError, check_value

BAD = [
    ("steps", 0, "steps = 0: must be a whole number from 1 to 1000"),
    ("steps", 2.5, "steps = 2.5: must be a whole number"),
    ("steps", True, "steps = True: must be a whole number"),
    ("cfg", math.nan, "cfg = nan: must be a finite number from 1 to 30"),
    ("cfg", math.inf, "cfg = inf: must be a finite number"),
    ("cfg", 0.0, "cfg = 0.0: must be a finite number from 1 to 30"),
    ("shift", -1.0, "shift = -1.0: must be a finite number above 0"),
    ("shift", 0.0, "shift = 0.0: must be a finite number above 0"),
    ("seed", -3, "seed = -3: must be a whole number from 0"),
    ("sampler", "ddim", "sampler = 'ddim': must be one of unipc, euler"),
    ("batch_cfg", 1, "batch_cfg = 1: must be one of auto, on, off"),
    ("negative_prompt", None, "negative_prompt = None: must be text"),
    ("alpha_cutoff", 1.5, "alpha_cutoff = 1.5: must be a finite number from 0 to 1"),
]


@pytest.mark.parametrize("name,value,message", BAD)
def test_each_bad_value_is_refused_with_its_name(name, value, message):
    with pytest.raises(SettingsError) as err:
        SamplingSettings(**{name: value})
    assert str(err.value).startswith(message)
    with pytest.raises(SettingsError):
        check_value(name, value)


def test_defaults_are_wan_and_updated_keeps_unset_values():
    assert (WAN_DEFAULTS.steps, WAN_DEFAULTS.cfg, WAN_DEFAULTS.sampler) == (50, 5.0, "unipc")
    changed = WAN_DEFAULTS.updated(steps=10, cfg=None, seed=0)
    assert changed.steps == 10 and changed.cfg == WAN_DEFAULTS.cfg and changed.seed == 0
    assert isinstance(SamplingSettings(cfg=2).cfg, float)
    with pytest.raises(Exception):
        changed.steps = 3  # frozen


def test_from_dict_names_unknown_keys_and_round_trips():
    s = SamplingSettings(steps=7, cfg=1.0, negative_prompt="")
    assert SamplingSettings.from_dict(s.to_dict()) == s
    with pytest.raises(SettingsError, match=r"recipe.json: unknown sampling settings \['guidance"):
        SamplingSettings.from_dict({"guidance": 3}, "recipe.json")


def test_cli_and_sampler_node_give_the_same_message(pack, capsys, tmp_path):
    out = str(tmp_path / "o")
    assert cli(["edit", "--prompt", "add a red circle", "--out", out, "--cfg", "nan"]) == 2
    cli_message = capsys.readouterr().err
    with pytest.raises(ValueError) as err:  # the pack's own SettingsError (ComfyUI-style import)
        run(
            pack,
            "VeraSampler",
            vera_model=None,
            positive=None,
            negative=None,
            vera_source=None,
            seed=0,
            steps=4,
            cfg=math.nan,
            shift=3.0,
            sampler="euler",
        )
    assert str(err.value) in cli_message and "cfg = nan" in cli_message
    with pytest.raises(ValueError, match="alpha_cutoff = -0.5"):
        run(pack, "VeraDecodeLayers", vae=None, vera_layers=None, alpha_cutoff=-0.5)
