from alexnet import create_model


def test_receptive_fields_are_the_hand_computed_ones():
    """By hand from the layer tables, size grows by (k - 1) x stride so far, stride multiplies:
    paper (227 px): conv1 11/4, pool1 19/8, conv2 51/8, pool2 67/16, conv3 99, conv4 131,
    conv5 163, pool5 195/32; cifar-11pct: conv1 5/1, pool1 7/2, conv2 15/2, pool2 19/4,
    local3 27/4, local4 35/4; LeNet-5: C1 5, S2 6/2, C3 14/2, S4 16/4, and C5, fully connected
    to S4's 5x5 maps, the whole image, as every fully connected layer."""
    from alexnet.models.summary import summarize

    want = {"paper": {"features.conv1": (11, 4), "features.pool1": (19, 8), "features.conv2": (51, 8),
                      "features.pool2": (67, 16), "features.conv3": (99, 16), "features.conv4": (131, 16),
                      "features.conv5": (163, 16), "features.pool5": (195, 32), "classifier.fc6": (None, None)},
            "cifar-11pct": {"features.conv1": (5, 1), "features.pool1": (7, 2), "features.conv2": (15, 2),
                            "features.pool2": (19, 4), "features.local3": (27, 4), "features.local4": (35, 4),
                            "classifier.fc10": (None, None)},
            "lenet5": {"features.c1": (5, 1), "features.s2": (6, 2), "features.c3": (14, 2), "features.s4": (16, 4),
                       "classifier.c5": (None, None)},
            # cifar-18pct: its rnorm reads a 3x3 window of each map: pool1 7/2, rnorm1 11/2, conv2 19/2,
            # pool2 23/4, rnorm2 31/4, conv3 47/4
            "cifar-18pct": {"features.rnorm1": (11, 2), "features.conv2": (19, 2), "features.conv3": (47, 4)}}
    for variant, fields in want.items():
        rows = {r.name: (r.field, r.field_stride) for r in summarize(create_model(variant, num_classes=10))}
        assert {k: rows.get(k) for k in fields} == fields, variant
