"""tf.train.Example encode/decode with protobuf, in a private descriptor pool.

The message layout equals tensorflow/core/example/{example,feature}.proto, so the wire bytes are identical; the
messages live under the package name ``kitpkg_example`` in a pool of our own, so this codec and TensorFlow (or the
`tfrecord` package) can be imported in one notebook kernel without a "duplicate symbol" clash in protobuf's default
pool.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Union

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

Value = Union[bytes, str, int, float, List[bytes], List[int], List[float], None]
_PACKAGE = "kitpkg_example"


def _build_pool() -> descriptor_pool.DescriptorPool:
    fdp = descriptor_pb2.FileDescriptorProto(name="kitpkg_example.proto", package=_PACKAGE, syntax="proto3")
    FD = descriptor_pb2.FieldDescriptorProto

    def message(name: str, fields):
        msg = fdp.message_type.add(name=name)
        for fname, number, ftype, label, type_name, oneof in fields:
            field = msg.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                field.type_name = type_name
            if oneof is not None:
                field.oneof_index = oneof
        return msg

    rep, opt = FD.LABEL_REPEATED, FD.LABEL_OPTIONAL
    message("BytesList", [("value", 1, FD.TYPE_BYTES, rep, None, None)])
    message("FloatList", [("value", 1, FD.TYPE_FLOAT, rep, None, None)]).field[0].options.packed = True
    message("Int64List", [("value", 1, FD.TYPE_INT64, rep, None, None)]).field[0].options.packed = True
    feature = message(
        "Feature",
        [
            ("bytes_list", 1, FD.TYPE_MESSAGE, opt, f".{_PACKAGE}.BytesList", 0),
            ("float_list", 2, FD.TYPE_MESSAGE, opt, f".{_PACKAGE}.FloatList", 0),
            ("int64_list", 3, FD.TYPE_MESSAGE, opt, f".{_PACKAGE}.Int64List", 0),
        ],
    )
    feature.oneof_decl.add(name="kind")
    features = message("Features", [("feature", 1, FD.TYPE_MESSAGE, rep, f".{_PACKAGE}.Features.FeatureEntry", None)])
    entry = features.nested_type.add(name="FeatureEntry")
    entry.field.add(name="key", number=1, type=FD.TYPE_STRING, label=opt)
    entry.field.add(name="value", number=2, type=FD.TYPE_MESSAGE, label=opt, type_name=f".{_PACKAGE}.Feature")
    entry.options.map_entry = True
    message("Example", [("features", 1, FD.TYPE_MESSAGE, opt, f".{_PACKAGE}.Features", None)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return pool


_POOL = _build_pool()
Example = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.Example"))

# Schema type names used in manifests: the three kinds a tf.train.Feature can hold.
BYTES, INT64, FLOAT = "bytes", "int64", "float"


def _as_list(value: Value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def encode_example(features: Mapping[str, Value], schema: Mapping[str, str] | None = None) -> bytes:
    """Serialize a dict to tf.train.Example bytes; types come from `schema` or from the Python values."""
    example = Example()
    fmap = example.features.feature
    for key, value in features.items():
        values = _as_list(value)
        kind = (schema or {}).get(key) or _infer_kind(values)
        if kind == BYTES:
            fmap[key].bytes_list.value.extend(v.encode() if isinstance(v, str) else bytes(v) for v in values)
        elif kind == INT64:
            fmap[key].int64_list.value.extend(int(v) for v in values)
        elif kind == FLOAT:
            fmap[key].float_list.value.extend(float(v) for v in values)
        else:
            raise ValueError(f"feature {key!r}: unknown type {kind!r} (use bytes, int64 or float)")
    return example.SerializeToString(deterministic=True)


def _infer_kind(values: list) -> str:
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values) and values:
        return INT64
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) and values:
        return FLOAT
    return BYTES


def decode_example(data: bytes, keys: set | None = None) -> Dict[str, Any]:
    """Parse tf.train.Example bytes into {name: list of values}; only `keys` when given."""
    example = Example.FromString(data)
    out: Dict[str, Any] = {}
    for key, feature in example.features.feature.items():
        if keys is not None and key not in keys:
            continue
        kind = feature.WhichOneof("kind")
        out[key] = list(getattr(feature, kind).value) if kind else []
    return out


def example_schema(data: bytes) -> Dict[str, str]:
    """The {name: bytes|int64|float} schema of one serialized Example."""
    example = Example.FromString(data)
    kinds = {"bytes_list": BYTES, "int64_list": INT64, "float_list": FLOAT}
    return {k: kinds.get(f.WhichOneof("kind"), BYTES) for k, f in sorted(example.features.feature.items())}


def scalar(values: list) -> Any:
    """The single value of a one-element feature list (bytes decoded as UTF-8 text, except image payloads)."""
    if len(values) != 1:
        return values
    v = values[0]
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v
