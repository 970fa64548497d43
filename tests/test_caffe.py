import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alexnet.training.checkpoint import load_model
from alexnet.cli import main
from alexnet.data.folder import load_image
from alexnet.data.transforms import EvalCrops
from conftest import explains_a_photo


def caffe_messages():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fd = descriptor_pb2.FileDescriptorProto(name="caffe_subset.proto", package="caffe", syntax="proto2")
    F_ = descriptor_pb2.FieldDescriptorProto

    def message(name, fields):
        m = fd.message_type.add(name=name)
        for fname, number, ftype, label, type_name, packed in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name
            if packed:
                f.options.packed = True

    opt, rep = F_.LABEL_OPTIONAL, F_.LABEL_REPEATED
    message("BlobShape", [("dim", 1, F_.TYPE_INT64, rep, None, True)])
    message("BlobProto", [("num", 1, F_.TYPE_INT32, opt, None, False), ("channels", 2, F_.TYPE_INT32, opt, None, False),
                          ("height", 3, F_.TYPE_INT32, opt, None, False), ("width", 4, F_.TYPE_INT32, opt, None, False),
                          ("data", 5, F_.TYPE_FLOAT, rep, None, True),
                          ("shape", 7, F_.TYPE_MESSAGE, opt, ".caffe.BlobShape", False)])
    message("LayerParameter", [("name", 1, F_.TYPE_STRING, opt, None, False),
                               ("type", 2, F_.TYPE_STRING, opt, None, False),
                               ("blobs", 7, F_.TYPE_MESSAGE, rep, ".caffe.BlobProto", False)])
    message("V1LayerParameter", [("name", 4, F_.TYPE_STRING, opt, None, False),
                                 ("type", 5, F_.TYPE_INT32, opt, None, False),
                                 ("blobs", 6, F_.TYPE_MESSAGE, rep, ".caffe.BlobProto", False)])
    message("NetParameter", [("name", 1, F_.TYPE_STRING, opt, None, False),
                             ("layers", 2, F_.TYPE_MESSAGE, rep, ".caffe.V1LayerParameter", False),
                             ("layer", 100, F_.TYPE_MESSAGE, rep, ".caffe.LayerParameter", False)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{n}"))
            for n in ("BlobProto", "NetParameter")}


CAFFE_SHAPES = {
    "conv1": [(96, 3, 11, 11), (96,)], "conv2": [(256, 48, 5, 5), (256,)], "conv3": [(384, 256, 3, 3), (384,)],
    "conv4": [(384, 192, 3, 3), (384,)], "conv5": [(256, 192, 3, 3), (256,)],
    "fc6": [(4096, 9216), (4096,)], "fc7": [(4096, 4096), (4096,)], "fc8": [(1000, 4096), (1000,)],
}


def caffe_reference(blobs, bgr):
    """Caffe's AlexNet deploy net on a (B, 3, 227, 227) BGR, mean-subtracted, 0-255 input."""
    def lrn(x):  # Caffe LRN: local_size 5, alpha 1e-4, beta 0.75, k 1 (alpha divided by local_size)
        return F.local_response_norm(x, 5, alpha=1e-4, beta=0.75, k=1.0)

    w = {k: [torch.from_numpy(b) for b in v] for k, v in blobs.items()}
    x = F.max_pool2d(lrn(F.relu(F.conv2d(bgr, *w["conv1"], stride=4))), 3, 2, ceil_mode=True)
    x = F.max_pool2d(lrn(F.relu(F.conv2d(x, *w["conv2"], padding=2, groups=2))), 3, 2, ceil_mode=True)
    x = F.relu(F.conv2d(x, *w["conv3"], padding=1))
    x = F.relu(F.conv2d(x, *w["conv4"], padding=1, groups=2))
    x = F.max_pool2d(F.relu(F.conv2d(x, *w["conv5"], padding=1, groups=2)), 3, 2, ceil_mode=True)
    x = F.relu(F.linear(x.flatten(1), *w["fc6"]))
    x = F.relu(F.linear(x, *w["fc7"]))
    return F.linear(x, *w["fc8"])


@pytest.mark.parametrize("style", ["V1 layers", "layer"])
def test_import_caffe_bvlc_alexnet(tmp_path, style):
    from PIL import Image
    from skimage import data

    msgs = caffe_messages()
    rng = np.random.default_rng(0)
    blobs = {}
    net = msgs["NetParameter"](name="CaffeNet")
    for name, (wshape, bshape) in CAFFE_SHAPES.items():
        fan_in = int(np.prod(wshape[1:]))
        blobs[name] = [(rng.standard_normal(wshape) * np.sqrt(2 / fan_in)).astype(np.float32),
                       (rng.standard_normal(bshape) * 0.1).astype(np.float32)]
        layer = net.layers.add(name=name, type=4) if style == "V1 layers" else net.layer.add(name=name, type="Convolution")
        for b in blobs[name]:
            blob = layer.blobs.add()
            if style == "V1 layers" and b.ndim == 2:  # old files store fc weights as 1x1xOxI
                blob.num, blob.channels, blob.height, blob.width = 1, 1, *b.shape
            else:
                blob.shape.dim.extend(b.shape)
            blob.data.extend(b.ravel().tolist())
    (tmp_path / "bvlc_alexnet.caffemodel").write_bytes(net.SerializeToString())
    mean_bgr = (rng.uniform(90, 130, (3, 256, 256))).astype(np.float32)
    mean = msgs["BlobProto"](num=1, channels=3, height=256, width=256)
    mean.data.extend(mean_bgr.ravel().tolist())
    (tmp_path / "mean.binaryproto").write_bytes(mean.SerializeToString())

    assert main(["import-weights", "caffe", str(tmp_path / "bvlc_alexnet.caffemodel"), "--mean",
                 str(tmp_path / "mean.binaryproto"), "--out", str(tmp_path / "caffe.safetensors")]) == 0
    model, normalizer, meta = load_model(tmp_path / "caffe.safetensors", variant="paper")
    assert meta["input_size"] == 227 and meta["model_kwargs"]["lrn_k"] == 1.0
    assert model.features.norm1.k == 1.0

    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
    rgb = load_image(str(tmp_path / "astronaut.png"), 256)  # uint8 (3, 256, 256)
    with torch.no_grad():
        ours = model(EvalCrops(normalizer, 227)(rgb[None])[:, 0])
        bgr = rgb.flip(0).float() - torch.from_numpy(mean_bgr)  # Caffe: BGR, 0-255, minus the mean image
        theirs = caffe_reference(blobs, bgr[None, :, 14:241, 14:241])
    torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-3 * theirs.abs().max().item())
    assert ours.argmax() == theirs.argmax()
    # the comparison can tell a wrong conversion apart: feeding RGB where Caffe wants BGR differs
    with torch.no_grad():
        wrong = caffe_reference(blobs, (rgb.float() - torch.from_numpy(mean_bgr))[None, :, 14:241, 14:241])
    assert (wrong - theirs).abs().max() > 10 * (ours - theirs).abs().max()
    if style == "layer":  # once: the imported network explains a photograph like a trained one
        explains_a_photo(tmp_path / "caffe.safetensors", tmp_path, stages=5)
