"""alexnet.data.loader: the epoch order, the mean image's pass, repeated splits."""


import torch

from alexnet.data import fashion_mnist
from alexnet.data.loader import Request, build, epoch_order, resize_batch, split_indices
from alexnet.training.train import mean_image


def test_epoch_order_is_seeded_and_sharded():
    a, b = epoch_order(100, True, 0, 3), epoch_order(100, True, 0, 3)
    assert torch.equal(a, b) and not torch.equal(a, epoch_order(100, True, 0, 4))
    shards = [epoch_order(101, True, 0, 3, rank, 2) for rank in range(2)]
    assert len(shards[0]) == len(shards[1]) == 50
    assert len(set(shards[0].tolist()) | set(shards[1].tolist())) == 100  # disjoint, one image dropped


def test_mean_image_is_the_exact_mean_of_its_sample(fmnist_dir):
    """The mean image is the mean of exactly ``samples`` training images, taken in the fixed
    order the estimate uses (epoch -1 of the training order)."""
    req = Request(batch_size=256, fashion_mnist_dir=fmnist_dir)
    splits = build("fashion-mnist", 32, torch.device("cpu"), req)
    mean = mean_image(splits.train, 1000)  # not a multiple of the batch: the last batch is cut
    x, _ = fashion_mnist.load("train", fmnist_dir)
    train_idx, _ = split_indices(len(x), -1)
    chosen = train_idx[epoch_order(len(train_idx), True, 0, -1)[:1000]]
    exact = resize_batch(x[chosen], 32).double().mean(0) / 255
    assert mean.shape == (3, 32, 32)
    torch.testing.assert_close(mean, exact.expand(3, -1, -1).float(), rtol=0, atol=1e-6)
    assert mean[:, 16, 16].mean() > mean[:, 0, 0].mean() + 0.2  # garments in the middle, background at edges


def test_the_mean_image_pass_reads_every_image_and_leaves_the_training_passes_alone():
    """The mean image reads its own fixed order, every image (no batch dropped), even when the
    split sits inside an epoch; the next training pass is the one it would have been."""
    from alexnet.data.loader import TensorBatches, image_sum

    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 8, 8).contiguous()
    batches = TensorBatches(images, torch.arange(10), 8, batch_size=4, shuffle=True, drop_last=True,
                            device=torch.device("cpu"))
    batches.set_epoch(3, start=1)
    expected = [b.labels.tolist() for b in batches]
    total, count = image_sum(batches, 100)
    assert count == 10 and total[0, 0, 0].item() == sum(range(10))
    assert [b.labels.tolist() for b in batches] == expected and len(expected) == 1


def test_a_repeated_split_shows_every_image_as_often_in_one_long_shuffled_epoch():
    """Batches.repeat (the benchmarks' loader rows over a small packed set): each epoch holds
    every image `times` times, the copies shuffled together rather than passed one after another."""
    from alexnet.data.loader import TensorBatches

    images = torch.zeros(10, 3, 8, 8, dtype=torch.uint8)
    batches = TensorBatches(images, torch.arange(10), 8, batch_size=5, shuffle=True, drop_last=True,
                            device=torch.device("cpu"), indices=torch.tensor([1, 3, 5, 7, 9]))
    batches.repeat(4)
    seen = [label for b in batches for label in b.labels.tolist()]
    assert len(batches) == 4 and sorted(seen) == sorted([1, 3, 5, 7, 9] * 4)
    assert any(len(set(seen[i:i + 5])) < 5 for i in range(0, 20, 5))  # copies mixed, not five passes in turn


def test_an_epoch_of_fewer_steps_is_the_first_batches_of_its_whole_epoch_a_fresh_part_each_epoch():
    """--epoch-steps: the epoch's first steps of its own shuffled order (so a resumed epoch and
    every process agree), a different part of the images each epoch; the mean image's pass
    still reads every image."""
    from alexnet.data.loader import TensorBatches, image_sum

    images = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1).expand(40, 3, 8, 8).contiguous()
    batches = TensorBatches(images, torch.arange(40), 8, batch_size=4, shuffle=True, drop_last=True,
                            device=torch.device("cpu"))
    whole = {}
    for epoch in (0, 1):
        batches.set_epoch(epoch)
        whole[epoch] = [b.labels.tolist() for b in batches]
    batches.max_batches = 3
    parts = {}
    for epoch in (0, 1):
        batches.set_epoch(epoch)
        parts[epoch] = [b.labels.tolist() for b in batches]
        assert len(batches) == 3 and parts[epoch] == whole[epoch][:3]
    assert sorted(sum(parts[0], [])) != sorted(sum(parts[1], []))
    batches.set_epoch(1, start=1)  # resumed after its first step
    assert [b.labels.tolist() for b in batches] == parts[1][1:]
    total, count = image_sum(batches, 100)
    assert count == 40 and batches.max_batches == 3
