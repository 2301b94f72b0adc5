"""helpers.transfer: backbones and their weights, partial fine-tuning, feature caching, LoRA, masked
fine-tuning, pruning and quantisation, each checked against its mathematics."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import data, transfer
from helpers.training import Classification, TrainConfig, fit
from helpers.transfer import LoRAConv2d, LoRALinear, TransferNet


def tiny(num_classes=5, seed=0):
    torch.manual_seed(seed)
    return TransferNet.pretrained("tiny", num_classes)


def images(n=32, size=32, classes=5, seed=0):
    return data.synthetic_images(n, classes, size=size, seed=seed)


def test_lora_with_zero_B_is_the_base_layer_and_merging_is_exact():
    torch.manual_seed(0)
    linear, conv = nn.Linear(12, 7), nn.Conv2d(6, 10, 3, stride=2, padding=1)
    x, z = torch.randn(4, 12), torch.randn(2, 6, 9, 11)
    lora_linear, lora_conv = LoRALinear(linear, rank=3, alpha=6), LoRAConv2d(conv, rank=2)
    assert torch.equal(lora_linear(x), linear(x)) and torch.equal(lora_conv(z), conv(z))
    with torch.no_grad():
        lora_linear.B.normal_(), lora_conv.B.normal_()
    assert not torch.allclose(lora_linear(x), linear(x))
    torch.testing.assert_close(lora_linear.merged()(x), lora_linear(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lora_conv.merged()(z), lora_conv(z), atol=1e-5, rtol=1e-5)
    assert lora_conv.merged()(z).shape == conv(z).shape
    # scale alpha / r = 2: the update is twice B A
    torch.testing.assert_close(lora_linear.merged().weight - linear.weight, 2 * lora_linear.B @ lora_linear.A)


def test_add_lora_trains_only_adapters_and_head_and_counts_them():
    model = tiny()
    frozen_before = {n: p.clone() for n, p in model.blocks.named_parameters()}
    assert transfer.add_lora(tiny(), rank=2, last_blocks=1) == 1
    adapted = transfer.add_lora(model, rank=2)
    assert adapted == 4  # the tiny backbone's four 3x3 convolutions
    widths = [(3, 8), (8, 16), (16, 32), (32, 64)]
    expected = sum(2 * (c_in * 9 + c_out) for c_in, c_out in widths) + 64 * 5 + 5
    assert transfer.trainable_parameters(model) == expected
    x = torch.randn(3, 3, 32, 32)
    model.eval()
    reference = model(x)
    merged = transfer.merge_lora(model)
    assert not any(isinstance(m, (LoRAConv2d, LoRALinear)) for m in merged.modules())
    torch.testing.assert_close(merged(x), reference)
    assert all(torch.equal(p, frozen_before[n]) for n, p in merged.blocks.named_parameters())


def test_lora_refuses_depthwise_convolutions():
    with pytest.raises(ValueError, match="depthwise"):
        LoRAConv2d(nn.Conv2d(8, 8, 3, groups=8), rank=2)


def test_configure_freezes_blocks_and_sets_batch_norm_modes():
    model = tiny().configure(trainable_blocks=2, bn="affine")
    trainable = {n.split(".")[0] for n, p in model.blocks.named_parameters() if p.requires_grad}
    assert trainable == {"2", "3"} and model.frozen_prefix == 2
    model.train()
    bns = [m for m in model.blocks.modules() if isinstance(m, nn.BatchNorm2d)]
    assert [bn.training for bn in bns] == [False] * 4  # frozen prefix and "affine": statistics kept
    assert all(p.requires_grad for bn in bns[2:] for p in bn.parameters())
    model.configure(2, bn="train").train()
    assert [bn.training for bn in bns] == [False, False, True, True]
    model.configure(2, bn="frozen")
    assert not any(p.requires_grad for bn in bns for p in bn.parameters())
    model.configure(4, bn="affine", bn_only=True)
    only = {n for n, p in model.blocks.named_parameters() if p.requires_grad}
    assert only and all(n.split(".")[1] == "1" for n in only)  # index 1 of each block is its BatchNorm
    with pytest.raises(ValueError, match="has 4 blocks"):
        model.configure(5)
    with pytest.raises(ValueError, match="bn="):
        model.configure(1, bn="sometimes")


def test_block_groups_give_discriminative_learning_rates():
    model = tiny().configure(trainable_blocks=2)
    groups = model.block_groups(lr=1.0, decay=0.5)
    assert [g["lr"] for g in groups] == [1.0, 0.5, 0.25]
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in model.parameters() if p.requires_grad)


def test_training_on_cached_features_equals_training_with_the_frozen_prefix():
    train = images(48)
    config = TrainConfig(epochs=2, optimizer="adam", lr=1e-2)
    results = []
    for cached in (False, True):
        model = tiny(seed=1).configure(trainable_blocks=1, bn="train")
        loader = data.TensorLoader(train, 16, shuffle=True, seed=7)
        if cached:
            features = transfer.cache_features(model, data.TensorLoader(train, 16))
            assert features.images.shape == (48, 32, 4, 4) and features.start == 3
            trainable = transfer.cache_features(tiny(seed=1), data.TensorLoader(train, 16), blocks=2)
            assert not trainable.images.requires_grad  # a cache holds values, never a graph into the backbone
            staged = transfer.cache_features(model, data.TensorLoader(transfer.cache_features(
                model, data.TensorLoader(train, 16), blocks=1), 16), blocks=3, start=1)
            torch.testing.assert_close(staged.images, features.images)
            loader = data.TensorLoader(features, 16, shuffle=True, seed=7)
            torch.manual_seed(3)
            fit(transfer.FromBlock(model, features.start), loader, None, config)
        else:
            torch.manual_seed(3)
            fit(model, loader, None, config)
        results.append(model.state_dict())
    for key in results[0]:
        torch.testing.assert_close(results[0][key], results[1][key], atol=1e-5, rtol=1e-4)


def test_masked_fine_tuning_moves_only_the_selected_weights():
    train = images(32)
    loader = data.TensorLoader(train, 16, shuffle=True)
    for criterion in ("gradient", "magnitude", "random"):
        model = tiny(seed=2)
        masks = transfer.select_weights(model, 0.05, criterion, loader, Classification())
        total = sum(p.numel() for p in model.blocks.parameters())
        assert sum(int(m.sum()) for m in masks.values()) == round(0.05 * total)
        before = {n: p.detach().clone() for n, p in model.blocks.named_parameters()}
        model.configure(len(model.blocks), bn="affine")  # statistics fixed, as in the notebook
        handles = transfer.restrict_updates(model, masks)
        fit(model, loader, None, TrainConfig(epochs=2, optimizer="adam", lr=1e-2))
        for n, p in model.blocks.named_parameters():
            assert torch.equal(p[~masks[n]], before[n][~masks[n]]), (criterion, n)
        assert any(not torch.equal(p, before[n]) for n, p in model.blocks.named_parameters())
        for h in handles:
            h.remove()
    magnitude = transfer.select_weights(tiny(seed=2), 0.05, "magnitude")
    kept = torch.cat([p.detach().abs()[magnitude[n]] for n, p in tiny(seed=2).blocks.named_parameters()])
    dropped = torch.cat([p.detach().abs()[~magnitude[n]] for n, p in tiny(seed=2).blocks.named_parameters()])
    assert kept.min() >= dropped.max()
    with pytest.raises(ValueError, match="needs a training loader"):
        transfer.select_weights(tiny(), 0.1, "gradient")


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9])
def test_layer_pruning_reaches_the_requested_sparsity_in_every_layer(sparsity):
    model = tiny()
    original = {n: m.weight.detach().clone() for n, m in transfer.prunable(model)}
    achieved = transfer.prune_magnitude(model, sparsity, scope="layer")
    for name, module in transfer.prunable(model):
        w, w0 = module.weight, original[name]
        assert int((w == 0).sum()) == round(sparsity * w.numel())
        if 0 < sparsity:  # the removed weights are the smallest ones
            assert w0[w == 0].abs().max() <= w0[w != 0].abs().min()
        assert torch.equal(w[w != 0], w0[w != 0])
    assert achieved == pytest.approx(sparsity, abs=0.01)


def test_global_pruning_and_sparse_size():
    model = tiny()
    total = sum(m.weight.numel() for _, m in transfer.prunable(model))
    dense = transfer.sparse_size_bytes(model)
    assert transfer.prune_magnitude(model, 0.75, scope="global") == pytest.approx(round(0.75 * total) / total)
    assert transfer.sparse_size_bytes(model) < dense
    with pytest.raises(ValueError, match="sparsity"):
        transfer.prune_magnitude(model, 1.0)


def test_gradual_pruning_fine_tunes_with_the_pruned_weights_held_at_zero():
    loader = data.TensorLoader(images(32), 16, shuffle=True)
    model = tiny(seed=3)
    model.configure(len(model.blocks), bn="affine")
    layers = transfer.prunable(model)
    seen = []

    def fine_tune(model, sparsity):
        zeros = {n: (m.weight == 0).clone() for n, m in layers}
        before = {n: m.weight.detach().clone() for n, m in layers}
        fit(model, loader, None, TrainConfig(epochs=1, optimizer="adamw", lr=1e-2, weight_decay=0.1))
        for n, m in layers:
            assert not m.weight[zeros[n]].any(), (sparsity, n)  # pruned weights stayed exactly zero
        seen.append(any(not torch.equal(m.weight, before[n]) for n, m in layers))  # the others trained
        return sparsity

    steps = transfer.prune_gradually(model, [0.8, 0.5], fine_tune)
    assert [result for _, result in steps] == [0.5, 0.8] and all(seen)
    assert [round(achieved, 2) for achieved, _ in steps] == [0.5, 0.8]
    assert transfer.weight_sparsity(model) == pytest.approx(0.8, abs=0.01)
    model.zero_grad()  # the hooks are gone: gradients reach the pruned weights again
    x, y = next(iter(loader))
    F.cross_entropy(model(x), y).backward()
    name, layer = layers[-1]
    assert layer.weight.grad[layer.weight == 0].abs().sum() > 0, name


def test_symmetric_quantisation_error_is_at_most_half_a_step():
    torch.manual_seed(0)
    weight = torch.randn(16, 8, 3, 3) * torch.logspace(-2, 1, 16).view(-1, 1, 1, 1)
    q, scale = transfer.quantize_symmetric(weight)
    assert q.dtype == torch.int8 and q.abs().max() <= 127 and q.shape == weight.shape
    error = (q.float() * scale.view(-1, 1, 1, 1) - weight).abs()
    assert (error <= scale.view(-1, 1, 1, 1) / 2 + 1e-7).all()
    assert (q.flatten(1).abs().amax(1) == 127).all()  # each channel uses its full range


def test_int8_model_is_smaller_and_close_to_the_float_model():
    model = tiny().eval()
    calibration = data.TensorLoader(images(64), 16)
    x = next(iter(calibration))[0]
    quantized = transfer.quantize_int8(model, calibration, x[:1])
    reference, output = model(x), quantized(x)
    assert output.shape == reference.shape
    assert (output.argmax(1) == reference.argmax(1)).float().mean() >= 0.8
    assert transfer.serialized_size_bytes(quantized) < 0.6 * transfer.serialized_size_bytes(model)
    assert transfer.latency_ms(quantized, x[:1], repeats=3) > 0


def test_missing_and_mismatched_weights_name_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv(transfer.WEIGHTS_ENV, raising=False)
    with pytest.raises(transfer.WeightsMissingError, match="DATA_ROOT/weights/resnet18_imagenet1k.pth"):
        transfer.load_pretrained("resnet18", data_root=tmp_path, download=False)
    wrong = tmp_path / "weights" / "mobilenet_v2_imagenet1k.pth"
    wrong.parent.mkdir()
    torch.save(transfer.build_backbone("resnet18").state_dict(), wrong)
    with pytest.raises(ValueError, match="does not hold mobilenet_v2 weights"):
        transfer.load_pretrained("mobilenet_v2", data_root=tmp_path, download=False)
    with pytest.raises(ValueError, match="unknown"):
        transfer.build_backbone("vgg11")


@pytest.mark.parametrize("name, blocks, width", [("resnet18", 9, 512), ("resnet50", 17, 2048),
                                                 ("mobilenet_v2", 19, 1280)])
def test_backbones_become_block_sequences(name, blocks, width):
    backbone = transfer.build_backbone(name).eval()
    parts, features = transfer.backbone_blocks(name, backbone)
    model = TransferNet(parts, features, 37).eval()
    assert len(model.blocks) == blocks and features == width
    x = torch.randn(1, 3, 64, 64)
    pooled = model.pool(model.prefix(x, blocks)).flatten(1)
    reference = backbone.avgpool(backbone.layer4(backbone.layer3(backbone.layer2(backbone.layer1(
        backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(x))))))))).flatten(1) \
        if name.startswith("resnet") else F.adaptive_avg_pool2d(backbone.features(x), 1).flatten(1)
    torch.testing.assert_close(pooled, reference, atol=2e-4, rtol=1e-3)  # channels-last kernels sum in another order
    assert model(x).shape == (1, 37)


def test_loader_oversamples_in_proportion_to_sample_weights_and_passes_features_through():
    labels = torch.tensor([0] * 90 + [1] * 10)
    feats = transfer.FeatureSet(torch.randn(100, 4), labels, start=0)
    weights = torch.where(labels == 1, 9.0, 1.0)
    loader = data.TensorLoader(feats, 100, sample_weights=weights, seed=1)
    drawn = torch.cat([y for _ in range(50) for _, y in loader])
    assert drawn.float().mean().item() == pytest.approx(0.5, abs=0.03)
    x, _ = next(iter(data.TensorLoader(feats, 100)))
    assert torch.equal(x, feats.images)
    with pytest.raises(ValueError, match="sample weights"):
        data.TensorLoader(feats, 10, sample_weights=torch.ones(3))


def test_weighted_cross_entropy_and_pseudo_labels_and_labelled_subsets():
    logits, targets = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, 0])
    weights = torch.tensor([1.0, 2.0, 5.0])
    assert Classification(class_weights=weights).loss(logits, targets).item() == \
        pytest.approx(F.cross_entropy(logits, targets, weight=weights).item())
    keep, labels = transfer.pseudo_labels(torch.tensor([[5.0, 0.0], [0.1, 0.0], [0.0, 4.0]]), threshold=0.9)
    assert keep.tolist() == [0, 2] and labels.tolist() == [0, 1]
    unsure = torch.tensor([[0.3, 0.0], [0.1, 0.0], [0.0, 0.2], [0.0, 0.4]])  # nothing reaches 0.9
    assert transfer.pseudo_labels(unsure, threshold=0.9)[0].numel() == 0
    keep, labels = transfer.pseudo_labels(unsure, threshold=0.9, per_class=1)  # the most confident of each class
    assert keep.tolist() == [0, 3] and labels.tolist() == [0, 1]
    classes = torch.arange(10).repeat_interleave(20)
    subset = transfer.labelled_subset(classes, 0.1, seed=3)
    assert torch.bincount(classes[subset]).tolist() == [2] * 10
    assert transfer.labelled_subset(classes, 0.01).numel() == 10  # at least one per class


def test_pruning_leaves_the_first_and_depthwise_convolutions_alone_and_counts_a_bitmap():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 16, 1), nn.Linear(16, 4))
    assert [n for n, _ in transfer.prunable(model)] == ["2", "3"]
    dense = transfer.sparse_size_bytes(model)
    assert dense == sum(p.numel() for p in model.parameters()) * 4 + 128 // 8 + 64 // 8  # values + bitmaps
    transfer.prune_magnitude(model, 0.5)
    assert int((model[0].weight == 0).sum()) == 0 and int((model[1].weight == 0).sum()) == 0
    assert transfer.sparse_size_bytes(model) == dense - (64 + 32) * 4


def test_feature_cache_computes_on_first_use_and_derives_deeper_blocks_exactly():
    train = images(12)
    calls = []

    def make_loaders():
        calls.append(1)
        return {"train": data.TensorLoader(train, 4)}

    model = tiny(seed=1)
    cache = transfer.FeatureCache(model, make_loaders, 1)
    assert not cache.computed and not calls  # a replay that trains nothing never runs the backbone
    pooled = cache.at(model, len(model.blocks))["train"]
    assert calls == [1] and cache.computed and cache.seconds > 0
    direct = transfer.cache_features(model, data.TensorLoader(train, 4), len(model.blocks))
    torch.testing.assert_close(pooled.images, direct.images, atol=1e-5, rtol=1e-5)
    assert cache.at(tiny(seed=1), len(model.blocks))["train"] is pooled  # kept for the next model alike
    deeper = cache.at(model, 2)["train"]
    assert cache.at(model, 3)["train"] is not deeper and cache.at(model, len(model.blocks))["train"] is pooled
    assert calls == [1]
    with pytest.raises(ValueError, match="lies before it"):
        cache.at(model, 0)
    with pytest.raises(ValueError, match="cache them from this model"):
        cache.at(tiny(seed=7), 2)  # another backbone's activations would be wrong for it


def test_cached_views_stack_augmented_passes_of_the_prefix():
    from helpers import augment as A

    model = tiny().configure(1)
    train = images(16)
    make = lambda view: data.TensorLoader(train, 8, augment=A.Flip(0.5) if view else None, seed=view)
    views = transfer.cache_views(model, make, 3)
    plain = transfer.cache_features(model, make(0))
    assert len(views) == 48 and views.start == plain.start == len(model.blocks) - 1
    assert torch.equal(views.images[:16], plain.images) and torch.equal(views.labels, train.labels.repeat(3))
    assert not torch.equal(views.images[16:32], plain.images)  # view 1 is flipped where view 0 is not
    with pytest.raises(ValueError, match="at least 1"):
        transfer.cache_views(model, make, 0)


def test_group_probabilities_sum_fine_classes_per_group():
    logits = torch.tensor([[2.0, 0.0, 1.0, -1.0], [0.0, 0.0, 0.0, 0.0]])
    groups = torch.tensor([0, 1, 1, 0])
    p = logits.softmax(1)
    coarse = transfer.group_probabilities(p, groups)
    assert torch.allclose(coarse, torch.stack([p[:, 0] + p[:, 3], p[:, 1] + p[:, 2]], 1))
    assert torch.allclose(coarse.sum(1), torch.ones(2)) and torch.allclose(coarse[1], torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="one id per class"):
        transfer.group_probabilities(p, groups[:3])


def test_a_head_trains_on_pooled_features_exactly_as_on_the_last_feature_map():
    """With no block left to train, the cache keeps the pooled vector (81x smaller at 288 px); training the
    head on it must equal training it on the last block's input with that block frozen."""
    train = images(48)
    config = TrainConfig(epochs=2, optimizer="adam", lr=1e-2)
    last = len(tiny().blocks)
    heads, logits = [], []
    for start in (last - 1, last):
        model = tiny(seed=1).configure(trainable_blocks=0)
        features = transfer.cache_features(model, data.TensorLoader(train, 16), blocks=start)
        assert features.start == start and features.images.shape[1:] == ((32, 4, 4) if start < last else (64, 1, 1))
        logits.append(transfer.FromBlock(model, start).eval()(features.images))
        torch.manual_seed(3)
        fit(transfer.FromBlock(model, start), data.TensorLoader(features, 16, shuffle=True, seed=7), None, config)
        heads.append(model.head.state_dict())
    torch.testing.assert_close(logits[0], logits[1])
    for key in heads[0]:
        torch.testing.assert_close(heads[0][key], heads[1][key], atol=1e-6, rtol=1e-5)


def test_a_checkpoint_of_training_from_another_block_is_not_resumed():
    from helpers.training import fingerprint

    model, config = tiny(), TrainConfig(epochs=1)
    loader = data.TensorLoader(images(16), 8)
    keys = {fingerprint(transfer.FromBlock(model, start), config, loader, None) for start in (2, 3, 3)}
    assert len(keys) == 2


def test_cpu_feature_passes_run_in_chunks_with_the_same_features(monkeypatch):
    """On the CPU the prefix runs over chunks of about CPU_CHUNK_VALUES input values (faster: the activations
    stay in the caches); the features must be those of whole batches, and an accelerator gets whole batches."""
    batch = torch.zeros(256, 3, 160, 160)
    assert transfer.chunk_size(batch, "cpu") == 8 and transfer.chunk_size(batch[:5], "cpu") == 5
    assert transfer.chunk_size(torch.zeros(64, 3, 288, 288), "cpu") == 2
    assert transfer.chunk_size(torch.zeros(4, 3, 2000, 2000), "cpu") == 1
    assert transfer.chunk_size(batch, "cuda") == transfer.chunk_size(batch, torch.device("cuda:1")) == 256
    model, train = tiny().configure(1), images(40)
    whole = transfer.cache_features(model, data.TensorLoader(train, 40))
    seen = []
    prefix = model.prefix
    monkeypatch.setattr(model, "prefix", lambda x, *a: seen.append(len(x)) or prefix(x, *a))
    monkeypatch.setattr(transfer, "CPU_CHUNK_VALUES", 3 * 32 * 32 * 6)  # 6 images of 32 px
    chunked = transfer.cache_features(model, data.TensorLoader(train, 40))
    assert seen == [6] * 6 + [4]
    torch.testing.assert_close(chunked.images, whole.images, rtol=1e-6, atol=1e-7)
    assert torch.equal(chunked.labels, whole.labels)


def test_unfolding_a_folded_batch_norm_keeps_the_function_and_gives_it_the_data_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2))
    with torch.no_grad():
        model[1].bias.normal_()  # folded: identity statistics and scale, a bias left
        model[4].running_var.fill_(2.0)  # not folded: must be left alone
    images = torch.randn(64, 3, 8, 8) * 3 + 1
    batches = [(images[i:i + 16], None) for i in range(0, 64, 16)]
    model.eval()
    before = model(images)
    assert transfer.is_folded(model[1]) and not transfer.is_folded(model[4])
    assert transfer.unfold_batch_norm(model, batches) == 1
    assert torch.allclose(model(images), before, atol=1e-6)  # the same function in eval mode
    conv_out = model[0](images)
    assert torch.allclose(model[1].running_mean, conv_out.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(model[1].running_var, conv_out.var((0, 2, 3), unbiased=False), atol=1e-4)
    assert model[4].running_var.eq(2.0).all() and not transfer.is_folded(model[1])
    model.train()
    assert not torch.allclose(model(images[:8]), before[:8], atol=1e-3)  # batch statistics act in train mode


def test_recalibrating_batch_norm_re_estimates_its_statistics_and_leaves_weights_and_modes_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Dropout(0.5))
    images = torch.randn(16, 3, 5, 5) * 3 + 1
    with pytest.raises(ValueError, match="folded.*unfold them first with unfold_batch_norm"):
        transfer.recalibrate_batch_norm(model, [(images, None)])  # identity statistics: still folded
    bn = model[1]
    bn.running_mean.fill_(5.0)
    bn.running_var.fill_(9.0)
    weights = [p.detach().clone() for p in model.parameters()]
    model.train()
    assert transfer.recalibrate_batch_norm(model, [(images, None)]) == 1
    conv_out = model[0](images)
    assert torch.allclose(bn.running_mean, conv_out.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, conv_out.var((0, 2, 3)), rtol=1e-4)  # the batch's (unbiased) variance
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))
    assert bn.momentum == 0.1 and model.training and bn.training and model[2].training
