"""tf.train.Example codec in a private protobuf pool: round trips, schema inference, no clash with TensorFlow."""
import math

import pytest
from google.protobuf import descriptor_pool

from kitpkg.shards.example import decode_example, encode_example, example_schema, scalar


def test_round_trip_keeps_types_and_values():
    feats = {"image": b"\xff\xd8jpeg", "image_name": "ISIC_1", "target": 1, "age": 45.5, "multi": [1, 2, 3]}
    data = encode_example(feats)
    out = decode_example(data)
    assert out["image"] == [b"\xff\xd8jpeg"] and out["image_name"] == [b"ISIC_1"]
    assert out["target"] == [1] and out["multi"] == [1, 2, 3] and out["age"] == [pytest.approx(45.5)]
    assert example_schema(data) == {"age": "float", "image": "bytes", "image_name": "bytes", "multi": "int64",
                                    "target": "int64"}
    assert scalar(out["image_name"]) == "ISIC_1" and scalar(out["target"]) == 1
    assert decode_example(data, keys={"target"}) == {"target": [1]}


def test_schema_overrides_inference_and_nan_survives():
    data = encode_example({"age": 40, "site": None, "x": float("nan")}, {"age": "float", "site": "bytes"})
    assert example_schema(data)["age"] == "float"
    out = decode_example(data)
    assert out["site"] == [] and math.isnan(out["x"][0])


def test_encoding_is_deterministic_whatever_the_key_order():
    a = encode_example({"a": 1, "b": b"x", "c": 2.0})
    b = encode_example({"c": 2.0, "b": b"x", "a": 1})
    assert a == b


def test_unknown_kind_is_an_error():
    with pytest.raises(ValueError, match="unknown type"):
        encode_example({"a": 1}, {"a": "string"})


def test_codec_stays_out_of_protobufs_default_pool():
    # TensorFlow (and the `tfrecord` package) register tensorflow.Example there; ours must not collide
    with pytest.raises(KeyError):
        descriptor_pool.Default().FindMessageTypeByName("kitpkg_example.Example")
