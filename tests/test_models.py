"""Model presets: the study's baseline as published, the edge preset within its Raspberry Pi budget."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from instrument_ai.train.models import (  # noqa: E402
    MAX_EDGE_INT8_BYTES,
    MAX_EDGE_MACS,
    MAX_EDGE_PARAMS,
    build_model,
    count_macs,
    estimate_int8_bytes,
)

# int8 builtins that XNNPACK also runs (qs8 slice, subtract and concatenate for the level-invariant front)
INT8_FRIENDLY_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "SUB", "MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN",
                     "FULLY_CONNECTED", "SOFTMAX", "RESHAPE", "STRIDED_SLICE", "CONCATENATION", "QUANTIZE",
                     "DEQUANTIZE", "DELEGATE"}  # fmt: skip


def _int8_flatbuffer(model: object) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    converter.representative_dataset = lambda: ([rng.standard_normal((1, 40, 59, 1)).astype(np.float32)]
                                                 for _ in range(8))  # fmt: skip
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def test_edge_preset_fits_the_pi_budget() -> None:
    model = build_model("edge", 11, (40, 59, 1))
    assert tuple(model.input_shape) == (None, 40, 59, 1)
    assert tuple(model.output_shape) == (None, 11)
    macs, params, estimate = count_macs(model), model.count_params(), estimate_int8_bytes(model)
    assert macs <= MAX_EDGE_MACS
    assert params <= MAX_EDGE_PARAMS
    assert estimate <= MAX_EDGE_INT8_BYTES
    flatbuffer = _int8_flatbuffer(model)
    assert len(flatbuffer) <= MAX_EDGE_INT8_BYTES
    assert len(flatbuffer) <= estimate  # the estimate is an upper bound, so a test on it is a safe test
    assert len(flatbuffer) >= 0.8 * estimate  # ... and not a loose one
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert ops <= INT8_FRIENDLY_OPS, ops - INT8_FRIENDLY_OPS
    detail = interpreter.get_input_details()[0]
    assert detail["dtype"] == np.int8 and tuple(detail["shape"]) == (1, 40, 59, 1)


def test_baseline_is_the_study_cnn() -> None:
    import keras

    model = build_model("baseline", 8, (40, 59, 1))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [16, 32, 64, 128]
    assert all(tuple(c.kernel_size) == (2, 2) for c in convs)
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers) == 4
    assert [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)] == [0.2] * 4
    assert any(isinstance(layer, keras.layers.GlobalAveragePooling2D) for layer in model.layers)
    assert model.layers[-1].activation.__name__ == "softmax"
    assert model.loss.__class__.__name__ == "CategoricalCrossentropy"
    assert model.optimizer.__class__.__name__ == "Adam"
    # multiply-adds by hand: conv k x k x in x out per output position, then the dense layer
    by_hand = (39 * 58 * 16 * 4 * 1) + (18 * 28 * 32 * 4 * 16) + (8 * 13 * 64 * 4 * 32) + (3 * 5 * 128 * 4 * 64)
    assert count_macs(model) == by_hand + 128 * 8


def test_count_macs_of_separable_depthwise_and_dense_layers() -> None:
    import keras

    inputs = keras.Input((10, 12, 4))
    x = keras.layers.SeparableConv2D(6, 3, padding="same")(inputs)  # dw 10*12*9*4 + pw 10*12*4*6
    x = keras.layers.DepthwiseConv2D(3, padding="valid")(x)  # 8*10*9*6
    x = keras.layers.Conv2D(5, 1, groups=1)(x)  # 8*10*6*5
    x = keras.layers.Dense(7)(x)  # 8*10*5*7
    model = keras.Model(inputs, x)
    expected = 10 * 12 * 9 * 4 + 10 * 12 * 4 * 6 + 8 * 10 * 9 * 6 + 8 * 10 * 6 * 5 + 8 * 10 * 5 * 7
    assert count_macs(model) == expected


def test_build_model_refuses_bad_requests() -> None:
    with pytest.raises(ValueError, match="preset"):
        build_model("huge", 4)
    with pytest.raises(ValueError, match="2 classes"):
        build_model("edge", 1)


def test_edge_model_does_not_hear_the_input_gain() -> None:
    """A gain adds a constant to c0 only (orthonormal DCT of a dB shift): the edge model's answer is unchanged."""
    model = build_model("edge", 11, (40, 59, 1), compile=False)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 40, 59, 1)).astype(np.float32)
    louder = x.copy()
    louder[:, 0] += 2.5
    np.testing.assert_allclose(model.predict(louder, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    other = x.copy()
    other[:, 1] += 2.5  # the spectral shape is still heard
    assert np.abs(model.predict(other, verbose=0) - model.predict(x, verbose=0)).max() > 1e-3
