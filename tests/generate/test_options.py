"""DecodeOptions: every field checked where the object is made, None keeps a field, and the
run config's `decode:` section is this one class."""

from __future__ import annotations

import dataclasses

import pytest

from aiayn.config import RunConfig, config_from_dict
from aiayn.generate.options import DecodeOptions


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"beam": 0}, "beam must be at least 1, got 0"),
        ({"beam": 2, "n_best": 3}, r"n_best \(3\) cannot exceed beam \(2\)"),
        ({"alpha": -0.1}, "alpha must be >= 0, got -0.1"),
        ({"min_len": -1}, "min_len must be >= 0"),
        ({"top_p": 0.0}, "0 < top_p <= 1"),
        ({"max_new_tokens": 0}, "max_new_tokens must be at least 1"),
        ({"long_input": "drop"}, "long_input must be 'truncate' or 'error', got 'drop'"),
    ],
)
def test_bad_values_are_refused_with_the_field_and_value(changes, message):
    with pytest.raises(ValueError, match=message):
        DecodeOptions(**changes)


def test_replace_changes_given_fields_and_keeps_the_rest():
    options = DecodeOptions(beam=5, alpha=1.0)
    changed = options.replace(beam=1, alpha=None, temperature=0.0)
    assert (changed.beam, changed.alpha, changed.temperature) == (1, 1.0, 0.0)
    assert options.replace() == options
    with pytest.raises(ValueError, match="beam must be at least 1"):
        options.replace(beam=0)


def test_the_run_configs_decode_section_is_decode_options():
    assert RunConfig().decode == DecodeOptions()
    fields = {f.name for f in dataclasses.fields(DecodeOptions)}
    config = config_from_dict({"decode": {"beam": 6, "n_best": 2, "long_input": "error"}})
    assert isinstance(config.decode, DecodeOptions) and config.decode.n_best == 2
    with pytest.raises(ValueError, match="decode: n_best"):
        config_from_dict({"decode": {"beam": 1, "n_best": 2}})
    assert "max_new_tokens" in fields and "long_input" in fields
