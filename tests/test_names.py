"""The tensor-name table covers exactly the reference's state_dict, within GGUF's name limit."""

from __future__ import annotations

import numpy as np
import pytest
from _reference import require_reference, shared_path

from pocket_ggml.format.config import load_released_config, released_config_names
from pocket_ggml.format.names import (
    GGUF_MAX_NAME,
    Layout,
    expected_tensors,
    from_gguf,
    from_released,
    stored_shape,
    to_released_layout,
    to_stored_layout,
)

# english, the small GQA/low-rank/z_proj/pointwise and drifting ones, a 24-layer one, the old
# inner_dim=512 one without bos_before_voice, and the 18m (full table + z_proj + drifting).
REFERENCE_CONFIGS = [
    "english",
    "english_2m_2026-10",
    "english_7m_2026-10",
    "english_2026-04_24l",
    "english_2026-01",
    "english_18m_2026-10",
]


@pytest.mark.parametrize("config", REFERENCE_CONFIGS)
def test_expected_tensors_equal_reference_state_dict(config):
    """Names and shapes from our config table == the reference model built offline from its own yaml."""
    torch = require_reference()
    from run_reference import load_reference_model  # ../shared/reference

    torch.manual_seed(0)
    model = load_reference_model(None, shared_path("assets", "tokenizer.model"), config=config)
    ref = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert expected_tensors(load_released_config(config)) == ref


@pytest.mark.parametrize("config", released_config_names())
def test_every_tensor_has_a_short_unique_reversible_gguf_name(config):
    names = expected_tensors(load_released_config(config))
    gguf = [from_released(n).gguf for n in names]
    assert len(set(gguf)) == len(gguf)
    assert max(map(len, gguf)) <= GGUF_MAX_NAME
    for released, g in zip(names, gguf):
        assert from_gguf(g).released == released


def test_without_encoder_drops_exactly_the_voice_cloning_tensors():
    cfg = load_released_config("english")
    dropped = set(expected_tensors(cfg)) - set(expected_tensors(cfg, with_encoder=False))
    assert "flow_lm.speaker_proj_weight" in dropped and "mimi.downsample.conv.conv.weight" in dropped
    assert all(n.startswith(("mimi.encoder", "flow_lm.speaker_proj", "mimi.downsample")) for n in dropped)
    assert len(dropped) == 44


@pytest.mark.parametrize(
    "layout,shape", [(Layout.CONV_MATRIX, (8, 3, 5)), (Layout.CONVTR_MATRIX, (6, 4, 10)), (Layout.RELEASED, (1, 1, 7))]
)
def test_layouts_round_trip(layout, shape):
    a = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    s = to_stored_layout(a, layout)
    assert s.shape == stored_shape(shape, layout)
    np.testing.assert_array_equal(to_released_layout(s, layout, shape), a)


def test_convtr_matrix_rows_are_input_channels_with_kernel_fastest():
    w = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)  # (C_in, C_out, K)
    m = to_stored_layout(w, Layout.CONVTR_MATRIX)  # (C_out*K, C_in): row oc*K + k
    for ci in range(2):
        for oc in range(3):
            for k in range(4):
                assert m[oc * 4 + k, ci] == w[ci, oc, k]
