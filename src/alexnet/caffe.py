"""Import Caffe's ``bvlc_alexnet.caffemodel`` (and its mean file) into the ``paper`` network.

A caffemodel is a protobuf ``NetParameter``; this module reads the few fields it
needs straight from the protobuf wire format (no Caffe, no generated code):

    NetParameter      layer = 100 (LayerParameter), layers = 2 (V1LayerParameter, old files)
    LayerParameter    name = 1, blobs = 7
    V1LayerParameter  name = 4, blobs = 6
    BlobProto         num/channels/height/width = 1-4, data = 5 (float), shape = 7, double_data = 8
    BlobShape         dim = 1 (int64)

What changes on the way in:
- Caffe feeds BGR images; conv1's input channels are reversed to take RGB.
- Caffe subtracts a 256x256 BGR mean image on the 0-255 scale; it becomes the
  network's mean-image normaliser (RGB, std 1/255), cropped at the same place.
- Caffe's LRN has k = 1 (the paper's k = 2 is cuda-convnet's); the imported
  network keeps Caffe's k so that it computes what Caffe computed.
- Caffe's input is 227x227, as the ``paper`` network's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .training.checkpoint import load_state, metadata_record, save_weights
from .classes import class_names
from .data.transforms import Normalizer
from .errors import AlexNetError
from .models.alexnet import PaperAlexNet
from .models.registry import create_model

LAYERS = {path.split(".")[1]: path for path in PaperAlexNet.LAYERS}  # Caffe's layer name -> module path
# Caffe's ilsvrc_2012_mean averaged over pixels (B, G, R), for when no mean file is given.
CAFFE_PIXEL_MEAN_BGR = (104.0069879317889, 116.66876761696767, 122.6789143406786)


class WireError(AlexNetError):
    pass


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise WireError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError("varint too long")


def fields(buf: memoryview):
    """Yield (field number, wire type, value) of one message; value is an int for
    varints and 32/64-bit fields (raw bytes for those), a memoryview for length-delimited."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise WireError("truncated field")
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise WireError(f"unsupported wire type {wire}")
        yield number, wire, value


def parse_blob(buf: memoryview) -> np.ndarray:
    legacy = {1: 0, 2: 0, 3: 0, 4: 0}
    shape: list[int] = []
    chunks: list[np.ndarray] = []
    for number, wire, value in fields(buf):
        if number in legacy and wire == 0:
            legacy[number] = value
        elif number == 5:  # float data: packed (wire 2) or one by one (wire 5)
            chunks.append(np.frombuffer(value, dtype="<f4"))
        elif number == 8:
            chunks.append(np.frombuffer(value, dtype="<f8").astype(np.float32))
        elif number == 7:
            for n, w, v in fields(value):
                if n == 1 and w == 2:  # packed int64 dims
                    p = 0
                    while p < len(v):
                        d, p = _varint(v, p)
                        shape.append(d)
                elif n == 1:
                    shape.append(v)
    data = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if not shape:
        shape = [d for d in (legacy[1], legacy[2], legacy[3], legacy[4])]
    if int(np.prod(shape)) != data.size:
        raise WireError(f"blob data has {data.size} values, its shape {shape} needs {int(np.prod(shape))}")
    return data.reshape(shape)


def read_caffemodel(path: str | Path) -> dict[str, list[np.ndarray]]:
    """Layer name -> its blobs, for every layer that has blobs."""
    path = Path(path)
    if not path.is_file():
        raise AlexNetError(f"caffemodel {path} not found")
    buf = memoryview(path.read_bytes())
    layers: dict[str, list[np.ndarray]] = {}
    try:
        for number, wire, value in fields(buf):
            if wire != 2 or number not in (100, 2):
                continue
            name_field, blob_field = (1, 7) if number == 100 else (4, 6)
            name, blobs = None, []
            for n, w, v in fields(value):
                if n == name_field and w == 2:
                    name = bytes(v).decode()
                elif n == blob_field and w == 2:
                    blobs.append(parse_blob(v))
            if name and blobs:
                layers[name] = blobs
    except WireError as e:
        raise AlexNetError(f"{path} is not a readable caffemodel ({e})") from None
    return layers


def read_mean(path: str | Path) -> np.ndarray:
    """A Caffe mean ``.binaryproto``: (3, H, W) BGR on the 0-255 scale."""
    path = Path(path)
    if not path.is_file():
        raise AlexNetError(f"mean file {path} not found")
    try:
        blob = parse_blob(memoryview(path.read_bytes()))
    except WireError as e:
        raise AlexNetError(f"{path} is not a Caffe mean binaryproto ({e})") from None
    blob = blob.reshape(blob.shape[-3:]) if blob.ndim >= 3 else blob
    if blob.ndim != 3 or blob.shape[0] != 3:
        raise AlexNetError(f"{path}: expected a 3-channel mean image, got shape {blob.shape}")
    return blob


def import_caffe(model_path: str | Path, out: str | Path, mean_path: str | Path | None = None,
                 resize: int = 256) -> dict:
    """Convert bvlc_alexnet to a ``paper`` weights file (Caffe's LRN k=1, RGB input)."""

    layers = read_caffemodel(model_path)
    missing = [name for name in LAYERS if name not in layers]
    if missing:
        raise AlexNetError(f"{model_path} lacks layer(s) {', '.join(missing)}: not an AlexNet caffemodel")
    num_classes = int(np.prod(layers["fc8"][0].shape)) // 4096
    model = create_model("paper", num_classes=num_classes, lrn_k=1.0)
    target = model.state_dict()
    state = {}
    for caffe_name, ours in LAYERS.items():
        blobs = layers[caffe_name]
        if len(blobs) != 2:
            raise AlexNetError(f"{model_path}: layer {caffe_name} has {len(blobs)} blobs, expected weight and bias")
        for blob, suffix in zip(blobs, ("weight", "bias")):
            key = f"{ours}.{suffix}"
            if blob.size != target[key].numel():
                raise AlexNetError(f"{model_path}: {caffe_name} {suffix} has {blob.size} values, "
                                   f"the paper network needs {tuple(target[key].shape)}")
            state[key] = torch.from_numpy(blob.copy()).reshape(target[key].shape)
    state["features.conv1.weight"] = state["features.conv1.weight"].flip(1)  # BGR -> RGB input channels
    load_state(model, state, str(model_path))

    if mean_path is not None:
        mean_bgr = read_mean(mean_path)
        if mean_bgr.shape[1:] != (resize, resize):
            raise AlexNetError(f"mean image is {mean_bgr.shape[1]}x{mean_bgr.shape[2]}, expected {resize}x{resize}")
        mean = torch.from_numpy(mean_bgr[::-1].copy()) / 255
    else:
        mean = torch.tensor(CAFFE_PIXEL_MEAN_BGR[::-1]).view(3, 1, 1) / 255
    normalizer = Normalizer(mean, torch.full((3, 1, 1), 1 / 255))
    meta = metadata_record(model, "paper", class_names(num_classes), crop=227, resize=resize, source=str(model_path),
                           published_accuracy={"top1": 0.571, "top5": 0.802, "protocol": "center",
                                               "split": "ILSVRC-2012 val", "by": "Caffe (not measured here)"})
    save_weights(out, model, normalizer, meta)
    return meta
