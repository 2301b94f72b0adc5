"""helpers.transfer_study: notebook 02's drivers on the tiny stand-in backbone. The target model's
cross-validation must predict every trainval image once, by a model that never saw it, break ties towards
the simpler candidate and retrain the chosen one on all images."""
from types import SimpleNamespace

import pytest
import torch

from helpers import augment as A, data, runner, transfer, transfer_study as study
from helpers.training import History, TrainConfig
from helpers.transfer import FeatureSet

GOOD = {"SEED": 2023, "PROFILE": "smoke", "DATA_ROOT": None, "DEVICE": "cpu", "OUTPUT_DIR": None, "TRAIN": True,
        "RETRAIN": None}


def start(tmp_path, **params):
    return runner.start(dict(GOOD, OUTPUT_DIR=str(tmp_path), **params), "02")


def spy_on_training(monkeypatch) -> dict:
    """{run name: (the training loader's inputs, the validation loader, the outcome)} of every run_experiment."""
    seen, real = {}, study.run_experiment

    def spy(run, name, build_model, config, train, val, test, **options):
        outcome = real(run, name, build_model, config, train, val, test, **options)
        seen[name] = (train.images.clone(), val, outcome)
        return outcome
    monkeypatch.setattr(study, "run_experiment", spy)
    return seen


def test_loaders_normalise_images_but_pass_cached_activations_through():
    images = data.synthetic_images(10, 3, size=8, seed=0)
    features = FeatureSet(torch.randn(10, 4, 1, 1), images.labels, start=4)
    loaders = study.Loaders("cpu", batch_size=4, eval_batch_size=6, seed=1)
    x, _ = next(iter(loaders.make(images)))
    mean, std = (torch.tensor(s).view(1, 3, 1, 1) for s in (transfer.IMAGENET_MEAN, transfer.IMAGENET_STD))
    torch.testing.assert_close(x, (images.images[:6].float() / 255 - mean) / std)
    assert torch.equal(next(iter(loaders.make(features)))[0], features.images[:6])
    train, val, test = loaders.triple({"train": features, "val": features})
    assert test is None and len(train) == 3 and len(val) == 2  # no batch dropped: 10 samples in batches of 4
    assert sorted(torch.cat([y for _, y in train]).tolist()) == sorted(features.labels.tolist())
    assert not torch.equal(torch.cat([x for x, _ in train]), features.images)  # shuffled


def test_relabel_maps_labels_and_keeps_what_records_need():
    images = data.synthetic_images(6, 4, size=8, seed=0)
    features = FeatureSet(torch.randn(6, 2), images.labels, start=3, meta={"input_size": 8, "synthetic": True})
    mapping = torch.tensor([False, False, True, True])
    relabelled = study.relabel({"images": images, "features": features}, mapping)
    for split in relabelled.values():
        assert torch.equal(split.labels, mapping[images.labels].long())
    assert relabelled["images"].meta == images.meta and relabelled["features"].meta == features.meta
    assert relabelled["features"].start == 3 and relabelled["images"].images is images.images


def test_fine_tuner_trains_on_cached_activations_or_on_augmented_images(tmp_path, monkeypatch):
    run, seen = start(tmp_path), spy_on_training(monkeypatch)
    images = data.synthetic_images(24, 37, size=32, seed=0)
    splits = {"train": images.subset(range(16)), "val": images.subset(range(16, 24))}
    model = study.Backbone("tiny", tmp_path, seed=0)().configure(1)
    loaders = study.Loaders("cpu", 8, 8)
    cache = loaders.cache(model, splits, 2)
    assert cache.sets["val"].images.shape == (8, 16, 8, 8) and cache.sets["val"].meta["input_size"] == 32
    fine_tune = study.FineTuner(run, loaders, splits, cache, study.Optimiser(1e-2))
    cached = fine_tune("cached", model, 1, decay=0.5, weight_decay=0.1)
    assert seen["cached"][0].shape == (16, 32, 4, 4)  # the activations entering the last block, not images
    assert cached.record["config"]["weight_decay"] == 0.1 and cached.record["config"]["optimizer"] == "adamw"
    augmented = fine_tune("augmented", model, 1, augment=A.Flip(0.5))
    assert seen["augmented"][0].dtype == torch.uint8 and augmented.record["data"]["input_size"] == 32
    with pytest.raises(ValueError, match="augmentation changes images"):
        fine_tune("wrong", model, 1, cache.at(model), augment=A.Flip(0.5))
    runs = fine_tune.variants("lr", lambda: model, 1, {"constant": dict(scheduler=None), "cosine": {}})
    assert [o.name for o in runs.values()] == ["lr_constant", "lr_cosine"]
    assert runs["constant"].record["config"]["scheduler"] is None


def test_a_replayed_fine_tune_computes_no_activations(tmp_path):
    images = data.synthetic_images(24, 37, size=32, seed=0)
    splits = {"train": images.subset(range(16)), "val": images.subset(range(16, 24))}
    new_model = study.Backbone("tiny", tmp_path, seed=0)
    loaders = study.Loaders("cpu", 8, 8)
    trained = study.FineTuner(start(tmp_path), loaders, splits, loaders.cache(new_model(), splits, 2),
                              study.Optimiser(1e-2))("head", new_model().configure(1), 1)
    cache = loaders.cache(new_model(), splits, 2)
    replay = study.FineTuner(start(tmp_path, TRAIN=False), loaders, splits, cache, study.Optimiser(1e-2))
    replayed = replay("head", new_model().configure(1), 1, lambda: pytest.fail("a replay built its inputs"))
    assert replayed.history.best_value == trained.history.best_value and not cache.computed
    again = study.FineTuner(start(tmp_path, TRAIN=False, RETRAIN=["head"]), loaders, splits, cache,
                            study.Optimiser(1e-2))
    retrained = again("head", new_model().configure(1), 1, lambda: cache.at(new_model().configure(1)))
    assert cache.computed and retrained.history.epochs == trained.history.epochs  # RETRAIN computes, deterministically


def test_a_cache_of_splits_given_as_a_function_loads_no_image_until_used(tmp_path):
    images = data.synthetic_images(12, 37, size=32, seed=0)
    asked = []
    splits = lambda: asked.append(1) or {"train": images.subset(range(8)), "val": images.subset(range(8, 12))}
    model = study.Backbone("tiny", tmp_path, seed=0)()
    cache = study.Loaders("cpu", 4, 4).cache(model, splits, len(model.blocks))
    assert not asked and not cache.computed
    assert cache.sets["val"].images.shape[0] == 4 and asked == [1]
    assert cache.sets["train"].start == len(model.blocks) and asked == [1]  # loaded once


def test_the_size_probe_trains_both_heads_on_one_feature_pass_and_a_replay_loads_no_image(tmp_path, monkeypatch):
    pets = study.PetImages(tmp_path, synthetic=True, train_limit=24, test_limit=8)
    holdout = {"train": torch.arange(16), "val": torch.arange(16, 24)}
    splits = pets.splits(32, holdout, test=True, flipped=("val",))
    assert sorted(splits) == ["test", "train", "val", "val_flip"] and len(splits["test"]) == 8
    assert torch.equal(splits["val_flip"].images, splits["val"].images.flip(-1))
    passes = []
    real_cache = transfer.cache_features
    monkeypatch.setattr(transfer, "cache_features", lambda *a, **k: passes.append(1) or real_cache(*a, **k))
    new_model, loaders = study.Backbone("tiny", tmp_path, seed=0), study.Loaders("cpu", 8, 8)
    is_dog = torch.arange(37) >= 12
    row = study.SizeProbe(start(tmp_path), pets, loaders, new_model, holdout, is_dog, 2, 1e-2)(32)
    assert len(passes) == 2 and row["size"] == 32 and row["cache_s"] > 0  # train and val, once for both heads
    assert [o.name for o in row["runs"]] == ["probe_32px", "probe_32px_binary"]
    assert row["runs"][1].record["model"]["parameters"] < row["runs"][0].record["model"]["parameters"]  # 2 vs 37
    monkeypatch.setattr(pets.__class__, "load", lambda *a: pytest.fail("a replay loaded images"))
    replayed = study.SizeProbe(start(tmp_path, TRAIN=False), pets, loaders, new_model, holdout, is_dog, 2, 1e-2)(32)
    assert {k: v for k, v in replayed.items() if k != "runs"} == {k: v for k, v in row.items() if k != "runs"}
    rows = [{"size": 32, "val": 0.80}, {"size": 64, "val": 0.805}, {"size": 96, "val": 0.81}]
    assert study.smallest_within(rows, "val", 0.006) == 64 and study.smallest_within(rows, "val", 0.0) == 96


def test_flip_tta_is_chosen_on_validation_and_its_test_accuracy_reported():
    labels = torch.tensor([0, 1, 0, 1])
    # the "model" reads the logits off its input: the plain views are wrong on the last image, the mirrors right
    plain, mirror = torch.tensor([[2., 0], [0, 2], [2, 0], [2, 0]]), torch.tensor([[2., 0], [0, 2], [2, 0], [0, 9]])
    sets = {f"{s}{v}": FeatureSet(x, labels, start=1) for s in ("val", "test") for v, x in (("", plain),
                                                                                          ("_flip", mirror))}
    scores = study.flip_tta(torch.nn.Identity(), sets, study.Loaders("cpu", 2, 2))
    assert scores["val_plain"] == 0.75 and scores["val_flip"] == 1.0 and scores["flip"]
    assert scores["test_acc"] == scores["test_flip"] == 1.0
    sets["val_flip"] = sets["val"]  # a tie on validation keeps the plain prediction
    assert study.flip_tta(torch.nn.Identity(), sets, study.Loaders("cpu", 2, 2))["test_acc"] == 0.75


def test_masked_fine_tuning_stores_its_selection_and_a_replay_computes_no_gradients(tmp_path, monkeypatch):
    images = data.synthetic_images(24, 37, size=32, seed=0)
    splits = {"train": images.subset(range(16)), "val": images.subset(range(16, 24))}
    new_model, loaders = study.Backbone("tiny", tmp_path, seed=0), study.Loaders("cpu", 8, 8)
    tuner = study.FineTuner(start(tmp_path), loaders, splits, loaders.cache(new_model(), splits, 2),
                            study.Optimiser(1e-2))
    model = new_model().configure(1, bn="frozen")
    before = {n: p.detach().clone() for n, p in model.blocks.named_parameters()}
    outcome, selected = study.masked_fine_tune(tuner, model, 0.1, "magnitude", 1, seed=0)
    changed = sum(int((p.detach() != before[n]).sum()) for n, p in model.blocks.named_parameters())
    assert 0 < changed <= selected == tuner.run.stored("masked_magnitude_selection")["backbone_weights"]
    monkeypatch.setattr(transfer, "select_weights", lambda *a, **k: pytest.fail("a replay selected weights"))
    cache = loaders.cache(new_model(), splits, 2)
    replay = study.FineTuner(start(tmp_path, TRAIN=False), loaders, splits, cache, study.Optimiser(1e-2))
    replayed, again = study.masked_fine_tune(replay, new_model().configure(1, bn="frozen"), 0.1, "magnitude", 1, 0)
    assert again == selected and replayed.test == outcome.test and not cache.computed


def test_depth_search_stops_when_gains_vanish_twice_in_a_row():
    values = {0: 0.50, 1: 0.60, 2: 0.605, 3: 0.61, 4: 0.90}
    trained = []
    train = lambda l: trained.append(l) or SimpleNamespace(history=SimpleNamespace(best_value=values[l]))
    runs = study.depth_search(values, train, min_gain=0.02)
    assert list(runs) == trained == [0, 1, 2, 3]  # 2 and 3 gain less than 0.02 over 0.60: l = 4 never trains
    assert list(study.depth_search(values, train, min_gain=0.001)) == [0, 1, 2, 3, 4]


def test_candidates_are_every_ensemble_simplest_first_and_ties_go_to_the_first():
    names = list(study.candidates(["head", "blocks", "whole"]))
    assert names == ["head", "blocks", "whole", "head + blocks", "head + whole", "blocks + whole",
                     "head + blocks + whole"]
    tied = {("head", False): 0.8, ("head", True): 0.9, ("head + whole", False): 0.9, ("head + whole", True): 0.9}
    assert study.choose(tied) == ("head", True)
    assert study.choose(tied | {("head + whole", True): 0.91}) == ("head + whole", True)


def image_ids(features: FeatureSet, images: int) -> dict:
    """Each cached row (a view of one trainval image) -> the image it shows: view v of image i is row v * n + i."""
    return {features.images[row].numpy().tobytes(): row % images for row in range(len(features))}


def shown(rows: torch.Tensor, ids: dict) -> list:
    return [ids[row.numpy().tobytes()] for row in rows]


@pytest.fixture()
def target_search(tmp_path):
    """A TargetSearch over 18 synthetic images: head and last block on 2 crop views, head on 1 whole view."""
    run = start(tmp_path)
    pets = study.PetImages(tmp_path, synthetic=True, train_limit=18, test_limit=10, seed=1)
    new_model, loaders = study.Backbone("tiny", tmp_path, seed=0), study.Loaders("cpu", 8, 16, seed=0)
    config = TrainConfig(epochs=2, optimizer="adamw", lr=1e-2)
    plan = study.TargetPlan(kinds={"head": ("crop", 0), "blocks": ("crop", 1), "whole": ("whole", 0)},
                            views={"crop": 2, "whole": 1}, configs={"crop": config, "whole": config}, blocks=4)
    features = study.cache_target_sets(plan, pets, new_model, loaders, A.Flip(0.5), size=32)
    folds = data.kfold_split(features.trainval_images, 3, seed=0)
    return study.TargetSearch(run, plan, features, loaders, new_model, folds, lr=1e-2), pets


def test_out_of_fold_predictions_come_once_from_a_model_that_never_saw_the_image(target_search, monkeypatch):
    search, _ = target_search
    seen, predicted, real = spy_on_training(monkeypatch), {}, search.probabilities
    n = search.features.trainval_images

    def recording(outcomes, split, flip, index=None):
        (kind, outcome), = outcomes.items()
        p = real(outcomes, split, flip, index)
        predicted.setdefault((kind, flip), []).append((outcome.name, index.clone(), p))
        return p
    monkeypatch.setattr(search, "probabilities", recording)
    oof, _ = search.out_of_fold()
    for (kind, flip), predictions in predicted.items():
        framing_views = search.plan.views[search.plan.kinds[kind][0]]
        ids = image_ids(search.features.sets[kind]["trainval"], n)
        assert torch.cat([index for _, index, _ in predictions]).sort().values.tolist() == list(range(n))
        for name, index, p in predictions:
            trained_on = shown(seen[name][0], ids)
            assert not set(trained_on) & set(index.tolist()), f"{name} saw images it predicts"
            assert sorted(trained_on) == sorted(list(set(range(n)) - set(index.tolist())) * framing_views)
            assert seen[name][1].labels.shape == index.shape  # validated on the held-out fold, plain view
            assert torch.equal(oof[kind, flip][index], p)
        assert torch.allclose(oof[kind, flip].sum(1), torch.ones(n))


def test_the_chosen_candidate_is_retrained_on_all_images_and_tested(target_search, monkeypatch):
    search, pets = target_search
    seen = spy_on_training(monkeypatch)
    result = search.results(pets.is_dog())
    scores = {(name, flip): result["candidates"][name]["flip" if flip else "plain"]
              for name in search.candidates for flip in (False, True)}
    assert (result["choice"], result["flip_tta"]) == study.choose(scores)  # the first best, in candidate order
    chosen = search.candidates[result["choice"]]
    assert sorted(n for n in seen if n.startswith("target_final")) == sorted(f"target_final_{k}" for k in chosen)
    for kind in chosen:
        views = search.plan.views[search.plan.kinds[kind][0]]
        trained_on = shown(seen[f"target_final_{kind}"][0], image_ids(search.features.sets[kind]["trainval"], 18))
        assert sorted(trained_on) == sorted(list(range(18)) * views) and seen[f"target_final_{kind}"][1] is None
    assert len(result["fold_acc"]) == 3 and len(result["predicted"]) == 10 and result["train_images"] == 18
    assert 0 <= result["test_acc"] <= 1 and 0 <= result["cat_dog_test_acc"] <= 1


def test_the_final_models_stand_alone_with_their_own_test_accuracy(target_search):
    from helpers import load_model, results

    search, pets = target_search
    result = search.results(pets.is_dog())
    weights = search.run.path("weights")
    manifest = results.read_manifest(weights)
    chosen = search.candidates[result["choice"]]
    assert sorted(manifest) == sorted(f"02_target_final_{kind}" for kind in chosen)
    for kind in chosen:
        model, preprocess = load_model(f"02_target_final_{kind}", weights)  # the whole network, from the image
        assert preprocess.resize == study.FRAMING_RESIZE[search.plan.kinds[kind][0]] and preprocess.input_size == 32
        assert len(preprocess.classes) == study.BREEDS
        test = pets.load(32, resize=preprocess.resize)[1]
        with torch.no_grad():
            acc = (model(preprocess(test.images)).argmax(1) == test.labels).float().mean().item()
        assert acc == pytest.approx(manifest[f"02_target_final_{kind}"]["metric"]["test_acc"])


def test_a_cat_vs_dog_search_trains_two_way_heads_under_its_own_prefix(target_search, monkeypatch):
    search, pets = target_search
    seen = spy_on_training(monkeypatch)
    is_dog = pets.is_dog()
    features = search.features.relabelled(is_dog)
    assert torch.equal(features.sets["head"]["test"].labels, is_dog[search.features.sets["head"]["test"].labels].long())
    binary = study.TargetSearch(search.run, search.plan, features, search.loaders, lambda: search.new_model(2),
                                search.folds, lr=1e-2, prefix="binary_target", keep_weights=False)
    result = binary.results(torch.tensor([False, True]))  # class 1 is "dog": the species is the prediction
    assert sorted(seen) == sorted(study.search_runs("binary_target", result["choice"], 3, search.plan.kinds))
    assert all(o.model.model.head[-1].out_features == 2 for _, _, o in seen.values())
    assert result["cat_dog_test_acc"] == pytest.approx(result["test_acc"])
    assert set(result["predicted"]) <= {0, 1}
    assert not list(search.run.path("weights").glob("*binary_target*"))  # its final models keep no weights


def test_target_sets_hold_views_and_mirrored_images_at_each_kinds_boundary(target_search):
    search, _ = target_search
    sets = search.features.sets
    assert sets["head"]["trainval"].images.shape == (36, 64, 1, 1)  # 2 views, pooled
    assert sets["blocks"]["trainval"].images.shape == (36, 32, 4, 4)  # the last block's input
    assert sets["whole"]["trainval"].images.shape == (18, 64, 1, 1) and len(sets["whole"]["test_flipped"]) == 10
    assert torch.equal(sets["head"]["trainval"].labels, sets["whole"]["trainval"].labels.repeat(2))
    assert sets["head"]["test"].meta["input_size"] == 32
    assert torch.equal(search.features.in_views(torch.tensor([1, 4]), 2), torch.tensor([1, 4, 19, 22]))


def test_pseudo_labels_join_the_labelled_samples_and_rare_classes_are_cut():
    train = FeatureSet(torch.arange(10.0).view(10, 1), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2]), start=4,
                       meta={"input_size": 32})
    labelled = torch.tensor([0, 4, 8])
    unlabelled = study.complement(labelled, 10)
    assert unlabelled.tolist() == [1, 2, 3, 5, 6, 7, 9]
    combined = study.with_pseudo_labels(train, labelled, unlabelled, {"keep": [0, 6], "labels": [2, 1]})
    assert combined.images.flatten().tolist() == [0, 4, 8, 1, 9] and combined.labels.tolist() == [0, 1, 2, 2, 1]
    assert combined.meta == train.meta and combined.start == 4
    cut = study.with_train(lambda: {"train": train, "val": train},
                           lambda t: t.subset(study.cut_index(t.labels, torch.tensor([True, False, False]), 0.5, 0)))()
    assert cut["val"] is train
    cut = cut["train"]
    assert torch.bincount(cut.labels).tolist() == [2, 4, 2]
    assert cut.images.flatten().tolist() == sorted(cut.images.flatten().tolist())  # original order kept


def test_pseudo_label_keeps_only_confident_predictions():
    head = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[10.0, 0.0], [0.0, 10.0]]))
    unlabelled = FeatureSet(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]), torch.tensor([0, 0, 1]), start=0)
    chosen = study.pseudo_label(head, unlabelled, 0.9, study.Loaders("cpu", 2, 2))
    assert chosen == {"keep": [0, 1], "labels": [0, 1], "correct": 0.5}


def test_measured_from_refuses_models_a_replay_did_not_train(tmp_path):
    outcome = runner.Outcome("ssl_0.5_labelled", None, History(), {}, {})
    assert study.measured_from(start(tmp_path), "ssl_0.5_pseudo_labels", [outcome], lambda: {"n": 1}) == {"n": 1}
    replay = start(tmp_path, TRAIN=False, RETRAIN=["ssl_0.5_pseudo"])  # the family holds the labels, not the model
    with pytest.raises(ValueError, match="ssl_0.5_labelled"):
        study.measured_from(replay, "ssl_0.5_pseudo_labels", [outcome], lambda: {"n": 2})
    assert study.measured_from(start(tmp_path, TRAIN=False), "ssl_0.5_pseudo_labels", [outcome],
                               lambda: {"n": 3}) == {"n": 1}  # replayed
    stale = start(tmp_path, TRAIN=False, RETRAIN=["ssl_0.5_labelled"])  # the model re-trains, its record would not
    with pytest.raises(ValueError, match="ssl_0.5_pseudo_labels was computed from ssl_0.5_labelled.*RETRAIN too"):
        study.measured_from(stale, "ssl_0.5_pseudo_labels", [outcome], lambda: {"n": 4})


def test_compression_rows_cover_float_pruned_and_int8_models():
    model = study.Backbone("tiny", None, seed=0)(5).eval()
    images = data.synthetic_images(16, 5, size=32, seed=0)
    loader = study.Loaders("cpu", 8, 8).make(images)
    rows = study.compression_rows(model, loader, loader, next(iter(loader))[0], sparsities=(0.5,))
    assert [r["model"] for r in rows] == ["float32", "pruned 50%", "int8 (static PTQ)"]
    assert rows[1]["size"] < rows[0]["size"] and rows[2]["size"] < rows[0]["size"]
    assert all(0 <= r["test"] <= 1 and r["latency_ms"] > 0 for r in rows)


def test_trials_run_one_configuration_on_consecutive_seeds(tmp_path, monkeypatch):
    run, seen, real = start(tmp_path), {}, study.run_experiment
    monkeypatch.setattr(study, "run_experiment", lambda run, name, build, config, train, *rest, **options: seen.update(
        {name: (train.images.shape, train.generator.initial_seed())}) or real(run, name, build, config, train,
                                                                                     *rest, **options))
    images = data.synthetic_images(24, 37, size=32, seed=0)
    splits = {"train": images.subset(range(16)), "val": images.subset(range(16, 24))}
    new_model = study.Backbone("tiny", tmp_path, seed=2023)
    loaders = study.Loaders("cpu", 8, 8, seed=2023)
    fine_tune = study.FineTuner(run, loaders, splits, loaders.cache(new_model(), splits, 2), study.Optimiser(1e-2))
    runs = fine_tune.trials("ref", lambda seed: new_model(seed=seed).configure(1), 1, 3)
    assert [o.name for o in runs] == ["ref", "ref_trial1", "ref_trial2"]
    assert fine_tune.trials("ref", pytest.fail, 1, 1, first=runs[0]) == runs[:1]  # run by an earlier section
    assert [o.record["seed"] for o in runs] == [2023, 2024, 2025]
    assert [seen[o.name] for o in runs] == [((16, 32, 4, 4), s) for s in (2023, 2024, 2025)]  # own data order
    heads = [new_model(seed=s).head[1].weight for s in (2023, 2024)]
    assert not torch.equal(*heads) and torch.equal(new_model().head[1].weight, heads[0])
    plain = study.FineTuner(start(tmp_path / "plain"), loaders, splits, loaders.cache(new_model(), splits, 2),
                            study.Optimiser(1e-2))("ref", new_model().configure(1), 1)
    first = [{k: v for k, v in e.items() if k != "seconds"} for e in runs[0].history.epochs]
    assert [{k: v for k, v in e.items() if k != "seconds"} for e in plain.history.epochs] == first  # the study's run


def test_unfold_statistics_changes_only_the_batch_norms_a_cached_run_trains(tmp_path):
    images = data.synthetic_images(24, 37, size=32, seed=0)
    splits = {"train": images.subset(range(16)), "val": images.subset(range(16, 24))}
    model = study.Backbone("tiny", tmp_path, seed=0)().configure(1, bn="train")
    loaders = study.Loaders("cpu", 8, 8)
    features = loaders.cache(model, splits, 3).at(model)["train"]
    bns = [[m for m in block.modules() if isinstance(m, torch.nn.BatchNorm2d)] for block in model.blocks]
    batch = next(iter(loaders.make(splits["train"])))[0]
    before = model.eval()(batch)
    study.unfold_statistics(loaders)(model, features)
    assert all(transfer.is_folded(bn) for block in bns[:3] for bn in block)  # the frozen prefix: left alone
    assert bns[3] and not any(transfer.is_folded(bn) for bn in bns[3])
    torch.testing.assert_close(model.eval()(batch), before, rtol=1e-4, atol=1e-5)  # eval mode computes what it did


def test_pseudo_label_per_class_keeps_the_most_confident_of_each_predicted_class():
    head = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2))
    unlabelled = FeatureSet(torch.tensor([[0.2, 0.0], [0.1, 0.0], [0.0, 0.3], [0.0, 5.0]]), torch.tensor([0, 1, 1, 1]),
                            start=0)
    chosen = study.pseudo_label(head, unlabelled, 0.9, study.Loaders("cpu", 4, 4), per_class=1)
    assert chosen == {"keep": [0, 3], "labels": [0, 1], "correct": 1.0}  # sample 3 by threshold and rank alike


def test_study_rows_average_a_configurations_seeds_and_show_their_spread():
    def outcome(val, test, seconds):
        history = History()
        history.best_value = val
        return runner.Outcome("r", None, history, {"acc": test}, {"train_seconds": seconds})
    rows = study.study_rows({"one": outcome(0.5, 0.6, 10), "three": [outcome(0.7, t, 20) for t in (0.80, 0.82, 0.84)]})
    assert rows[0] == {"name": "one", "val": 0.5, "test": 0.6, "minutes": 10 / 60, "seconds": 10}
    assert rows[1]["name"] == "three (3 seeds)" and rows[1]["test"] == pytest.approx(0.82)
    assert rows[1]["test_sd"] == pytest.approx(0.02) and rows[1]["seconds"] == 20
    assert study.SEEDS_COLUMNS["test_sd"][1](rows[0].get("test_sd", "")) == "--"
    shown = study.histories({"one": outcome(0.5, 0.6, 10), "three": [outcome(0.7, 0.8, 20)] * 3})
    assert [len(v) for v in shown.values()] == [1, 3] and isinstance(shown["one"][0], History)


def test_pruning_curve_retrains_with_the_pruned_weights_held_at_zero():
    model = study.Backbone("tiny", None, seed=0)(5).eval()
    images = data.synthetic_images(32, 5, size=32, seed=0)
    loaders = study.Loaders("cpu", 8, 8)
    config = TrainConfig(epochs=1, optimizer="adamw", lr=1e-2, scheduler=None)
    original = [p.detach().clone() for p in model.parameters()]
    rows = study.pruning_curve(model, loaders.triple({"train": images})[0], {"test": loaders.make(images)}, (0.8, 0.5),
                               config, "cpu")
    assert [r["sparsity"] for r in rows] == [0.5, 0.8] and rows[1]["achieved"] == pytest.approx(0.8, abs=0.01)
    assert rows[0]["size"] > rows[1]["size"] and all(0 <= r[k] <= 1 for r in rows for k in ("pruned_test", "test"))
    assert all(torch.equal(a, b) for a, b in zip(original, model.parameters()))  # a copy is pruned


def test_pruning_curve_with_calibration_unfolds_and_re_estimates_batch_norms_after_every_step(monkeypatch):
    model = study.Backbone("tiny", None, seed=0)(5).eval()
    images = data.synthetic_images(32, 5, size=32, seed=0)
    loaders = study.Loaders("cpu", 8, 8)
    config = TrainConfig(epochs=1, optimizer="adamw", lr=1e-2, scheduler=None)
    folded = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert folded and all(transfer.is_folded(m) for m in folded)
    calls = []
    recalibrate = transfer.recalibrate_batch_norm
    monkeypatch.setattr(transfer, "recalibrate_batch_norm", lambda m, *a: calls.append(m) or recalibrate(m, *a))
    rows = study.pruning_curve(model, loaders.triple({"train": images})[0],
                               {"val": loaders.make(images), "test": loaders.make(images)}, (0.5, 0.8), config, "cpu",
                               calibrate=loaders.make(images))
    assert len(calls) == 2 and calls[0] is calls[1] is not model  # after each step, on the pruned copy
    assert not any(transfer.is_folded(m) for m in calls[0].modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert calls[0].bn_mode == "train" and all(transfer.is_folded(m) for m in folded)  # the original is untouched
    assert {"pruned_val", "pruned_test", "val", "test", "seconds", "size", "achieved"} <= set(rows[0])
    table = study.pruning_rows({"recalibrated": rows})
    curves = {name: [{"val": v} for v in values] for name, values in (("a", (0.7, 0.0)), ("b", (0.2, 0.6)),
                                                                      ("c", (0.4, 0.4)))}
    assert study.chosen_on_validation(curves) == "b"  # the best mean over sparsities, the first of a tie
    assert [r["recipe"] for r in table] == [study.PRUNING_RECIPES["recalibrated"][2]] * 2


def test_group_accuracy_row_averages_each_group_over_seeds_and_keeps_every_seed(monkeypatch):
    per_class = {"a": torch.tensor([1.0, 0.5, 0.0]), "b": torch.tensor([0.5, 0.5, 1.0])}
    monkeypatch.setattr(study, "per_class_test_accuracy", lambda model, *_: per_class[model])
    outcomes = [runner.Outcome("r", key, History(), {"acc": acc}, {}) for key, acc in (("a", 0.6), ("b", 0.8))]
    row = study.group_accuracy_row("plain", outcomes, None, None, torch.tensor([False, True, True]))
    assert row["cats_seeds"] == [1.0, 0.5] and row["cats"] == pytest.approx(0.75)
    assert row["dogs_seeds"] == [0.25, 0.75] and row["dogs"] == pytest.approx(0.5)
    assert row["test_seeds"] == [0.6, 0.8] and row["loss"] == "plain"


def test_accuracy_with_head_reads_changed_blocks_through_another_networks_head(tmp_path):
    images = data.synthetic_images(24, 2, size=32, seed=0)
    loaders = study.Loaders("cpu", 8, 8)
    before, changed = (study.Backbone("tiny", tmp_path, seed=s)(2) for s in (0, 1))
    pooled = loaders.cache(changed, {"test": images}, len(changed.blocks)).sets["test"]
    own = changed.head[1].weight.detach().clone()
    with torch.no_grad():  # the changed blocks read by the other head, on the first 8 images
        changed.head.load_state_dict(before.head.state_dict())
        logits = changed.eval()(next(iter(loaders.make(images)))[0])
        changed.head[1].weight.copy_(own)
    hits = (logits.argmax(1) == images.labels[:8]).float().mean().item()
    wanted = study.accuracy_with_head(changed, before.head, pooled.subset(range(8)), loaders)
    assert wanted == pytest.approx(hits) and torch.equal(changed.head[1].weight, own)


def test_the_forgetting_task_is_the_profiles_not_whatever_the_network_allows(tmp_path, monkeypatch):
    """Each profile names its other task: the fast profile's committed numbers must come back on a machine that
    could download Flowers-102, so nothing switches task on what happens to be reachable."""
    from helpers.profiles import budget

    assert budget("02", "fast").forget_task == "cifar10" and budget("02", "full").forget_task == "flowers102"
    name, images = study.other_task(tmp_path, "flowers102", 16, synthetic=True, images=4, seed=0)
    assert name == "synthetic stand-in" and images.images.shape == (4, 3, 16, 16)
    asked = []
    monkeypatch.setattr(data, "load_flowers102", lambda *a, **k: asked.append(k) or "flowers")
    assert study.other_task(tmp_path, "flowers102", 16, synthetic=False, images=None, seed=0)[1] == "flowers"
    assert asked == [{"size": 16, "download": True}]
    with pytest.raises(ValueError, match="choose 'flowers102' or 'cifar10'"):
        study.other_task(tmp_path, "imagenet", 16, synthetic=False, images=None, seed=0)
