import pytest
import torch
from torch import nn

from helpers import augment as A
from helpers import data, training
from helpers.training import TrainConfig


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Dropout(0.2), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(32, 4))


def loaders(seed=0):
    train = data.synthetic_images(96, 4, size=12, seed=1)
    val = data.synthetic_images(48, 4, size=12, seed=2)
    return (data.TensorLoader(train, 16, shuffle=True, augment=A.Flip(), seed=seed),
            data.TensorLoader(val, 48))


CONFIG = TrainConfig(epochs=4, optimizer="sgd", lr=0.05, scheduler="warmup_cosine", warmup_epochs=1)


def test_fit_learns_and_records_history():
    model = tiny_model()
    train, val = loaders()
    history = training.fit(model, train, val, TrainConfig(epochs=6, optimizer="adam", lr=0.01))
    assert len(history.epochs) == 6 and len(history.iterations) == 6 * len(train)
    assert history.epochs[-1]["train_loss"] < history.epochs[0]["train_loss"]
    assert history.best_value == max(history.column("val_acc")) and history.best_value > 0.5
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"} <= set(history.epochs[0])


def test_best_validation_weights_are_restored():
    model = tiny_model()
    train, val = loaders()
    history = training.fit(model, train, val, CONFIG)
    assert training.evaluate(model, val)["acc"] == pytest.approx(history.best_value)


LOOKAHEAD = TrainConfig(**(CONFIG.as_dict() | {"lookahead_every": 4, "lookahead_alpha": 0.5}))  # 6 steps/epoch


@pytest.mark.parametrize("config", [CONFIG, LOOKAHEAD], ids=["plain", "lookahead"])
def test_resume_after_kill_equals_uninterrupted_run(tmp_path, config):
    reference = tiny_model()
    train, val = loaders()
    training.fit(reference, train, val, config)

    class Killed(Exception):
        pass

    class DiesInEpochThree:
        """The same loader, but the process 'dies' during the third epoch."""

        def __init__(self, inner):
            self.inner, self.epoch, self.batch_size, self.augment = inner, 0, inner.batch_size, inner.augment

        def __len__(self):
            return len(self.inner)

        def __iter__(self):
            self.epoch += 1
            for i, batch in enumerate(self.inner):
                if self.epoch == 3 and i == 2:
                    raise Killed
                yield batch

        def state_dict(self):
            return self.inner.state_dict()

        def load_state_dict(self, state):
            self.inner.load_state_dict(state)

    checkpoint = tmp_path / "run.ckpt"
    train, val = loaders()
    with pytest.raises(Killed):
        training.fit(tiny_model(), DiesInEpochThree(train), val, config, checkpoint=checkpoint)
    torch.manual_seed(12345)  # a restarted process has other global random state
    resumed = tiny_model()
    train, val = loaders()
    history = training.fit(resumed, train, val, config, checkpoint=checkpoint)
    assert len(history.epochs) == 4
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_lookahead_moves_the_slow_weights_part_way_and_restarts_from_them():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    lookahead = training.Lookahead(model, every=2, alpha=0.25)
    for target in (3.0, 5.0):  # two "optimiser steps" that set the weight
        with torch.no_grad():
            model.weight.fill_(target)
        lookahead.step()
    # after step 1 nothing is synchronised; after step 2 the slow copy is 1 + 0.25 * (5 - 1) = 2
    assert torch.equal(model.weight, torch.full((1, 2), 2.0)) and torch.equal(lookahead.slow["weight"], model.weight)


def test_ramped_lookahead_starts_as_plain_training_and_ends_at_its_alpha():
    model = nn.Linear(2, 1, bias=False)
    lookahead = training.Lookahead(model, every=1, alpha=0.2, ramp=3, total_steps=10)
    alphas = []
    for _ in range(12):
        alphas.append(lookahead.current_alpha())
        lookahead.step()
    assert alphas[0] == 1.0 and alphas[5] == pytest.approx(1 - 0.8 * 0.5 ** 3) and alphas[10] == pytest.approx(0.2)
    assert alphas[11] == pytest.approx(0.2) and all(a >= b for a, b in zip(alphas, alphas[1:]))
    with pytest.raises(ValueError, match="total_steps"):
        training.Lookahead(model, every=1, alpha=0.2, ramp=3)
    with pytest.raises(ValueError, match="lookahead_ramp=3 needs lookahead_every"):
        TrainConfig(epochs=1, lookahead_ramp=3)


def test_lookahead_with_alpha_one_is_plain_training():
    def trained(config):
        model = tiny_model()  # seeds the global stream, which dropout draws from
        training.fit(model, *loaders(), config)
        return model

    plain = trained(CONFIG)
    full_step = trained(TrainConfig(**(CONFIG.as_dict() | {"lookahead_every": 2, "lookahead_alpha": 1.0})))
    half_step = trained(TrainConfig(**(CONFIG.as_dict() | {"lookahead_every": 2, "lookahead_alpha": 0.5})))
    for a, b, c in zip(plain.state_dict().values(), full_step.state_dict().values(), half_step.state_dict().values()):
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_finished_checkpoint_is_loaded_not_retrained_and_other_settings_start_afresh(tmp_path, capsys):
    checkpoint = tmp_path / "run.ckpt"
    train, val = loaders()
    first = training.fit(tiny_model(), train, val, CONFIG, checkpoint=checkpoint)
    again = training.fit(tiny_model(), *loaders(), CONFIG, checkpoint=checkpoint)
    assert again.epochs == first.epochs
    other = TrainConfig(epochs=2, optimizer="adam")
    training.fit(tiny_model(), *loaders(), other, checkpoint=checkpoint)
    assert "belongs to other settings" in capsys.readouterr().out
    assert len(list(tmp_path.glob("run.stale-*.ckpt"))) == 1  # the old run is kept, not lost


def test_a_checkpoint_of_other_trainable_weights_or_groups_is_set_aside(tmp_path, capsys):
    config = TrainConfig(epochs=2, optimizer="adam", scheduler="cosine")

    def fit(model, path, groups=None):
        return training.fit(model, *loaders(), config, checkpoint=tmp_path / path, param_groups=groups)

    def two_groups(model, head_lr):
        return [{"params": model[0].parameters()}, {"params": model[5].parameters(), "lr": head_lr}]

    fit(tiny_model(), "a.ckpt")
    frozen = tiny_model()
    frozen[0].requires_grad_(False)  # same architecture and config, other weights train
    assert len(fit(frozen, "a.ckpt").epochs) == 2
    assert torch.equal(frozen[0].weight, tiny_model()[0].weight)  # trained afresh: not the old run's weights
    fit(tiny_model(), "b.ckpt")
    model = tiny_model()
    fit(model, "b.ckpt", two_groups(model, 0.01))  # other number of groups: loading would fail half-way
    model = tiny_model()
    fit(model, "b.ckpt", two_groups(model, 0.1))  # the same groups at another rate for the head
    assert capsys.readouterr().out.count("belongs to other settings") == 3
    assert len(list(tmp_path.glob("*.stale-*.ckpt"))) == 3  # each set-aside run kept, none overwritten


def test_plateau_rule_counts_epochs_since_a_gain_above_min_delta():
    assert training.epochs_without_gain([1.0, 0.9, 0.895, 0.89, 0.886], "min", 0.02) == 3  # creeping is a plateau
    assert training.epochs_without_gain([1.0, 0.9, 0.85], "min", 0.02) == 0
    assert training.epochs_without_gain([0.5, 0.7, 0.69, 0.7], "max", 0.0) == 2  # equal is no gain


def test_fit_stops_on_a_plateau_and_a_resumed_plateau_stays_stopped(tmp_path):
    checkpoint = tmp_path / "run.ckpt"
    frozen = TrainConfig(epochs=9, optimizer="sgd", lr=1e-12, patience=2)  # nothing moves: a plateau at once
    history = training.fit(tiny_model(), *loaders(), frozen, checkpoint=checkpoint)
    assert len(history.epochs) == 3  # the first epoch sets the reference, two more without a gain
    again = training.fit(tiny_model(), *loaders(), frozen, checkpoint=checkpoint)
    assert again.epochs == history.epochs
    learning = training.fit(tiny_model(), *loaders(), TrainConfig(epochs=5, optimizer="adam", lr=0.01, patience=5))
    assert len(learning.epochs) == 5
    with pytest.raises(ValueError, match="patience=0"):
        TrainConfig(epochs=3, patience=0)


def test_fit_stops_once_the_target_is_reached_and_old_checkpoints_keep_their_key(tmp_path, monkeypatch):
    checkpoint = tmp_path / "run.ckpt"
    reached = TrainConfig(epochs=6, optimizer="adam", lr=0.01, stop_at=0.0)  # any accuracy reaches 0
    history = training.fit(tiny_model(), *loaders(), reached, checkpoint=checkpoint)
    assert len(history.epochs) == 1
    assert training.fit(tiny_model(), *loaders(), reached, checkpoint=checkpoint).epochs == history.epochs
    assert len(training.fit(tiny_model(), *loaders(), TrainConfig(epochs=3, stop_at=1.01)).epochs) == 3
    with pytest.raises(ValueError, match="give fit a val_loader"):
        training.fit(tiny_model(), loaders()[0], None, reached)
    plain, train = TrainConfig(epochs=2), loaders()[0]
    now = training.fingerprint(tiny_model(), plain, train, None)
    assert now != training.fingerprint(tiny_model(), TrainConfig(epochs=2, stop_at=0.9), train, None)
    before_the_field = {k: v for k, v in plain.as_dict().items() if k != "stop_at"}
    monkeypatch.setattr(TrainConfig, "as_dict", lambda self: before_the_field)  # the key the old code computed
    assert training.fingerprint(tiny_model(), plain, train, None) == now  # so an old checkpoint still resumes


def test_steps_per_epoch_caps_the_work():
    train, val = loaders()
    history = training.fit(tiny_model(), train, val, TrainConfig(epochs=2, steps_per_epoch=2))
    assert len(history.iterations) == 4


def test_bad_config_names_the_choices():
    with pytest.raises(ValueError, match="choose one of sgd, nesterov, adam, adamw"):
        TrainConfig(epochs=1, optimizer="adagrad")
    with pytest.raises(ValueError, match="scheduler='cosnie' is unknown"):
        TrainConfig(epochs=1, scheduler="cosnie")
    with pytest.raises(TypeError, match="learning_rate"):
        TrainConfig(epochs=1, learning_rate=0.1)
    with pytest.raises(ValueError, match="lookahead_alpha=0 in"):
        TrainConfig(epochs=1, lookahead_every=5, lookahead_alpha=0)


def test_diverging_loss_is_reported_with_a_fix():
    train, val = loaders()
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        training.fit(tiny_model(), train, val, TrainConfig(epochs=1, optimizer="sgd", lr=1e30))


def scheduled_lrs(config, steps, steps_per_epoch=5):
    """The learning rate of each of `steps` optimiser steps under config's schedule."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=config.lr)
    scheduler = training.make_scheduler(optimizer, config, steps_per_epoch=steps_per_epoch)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize("name", ["cosine", "warmup_cosine", "step", "cosine_restarts", "onecycle"])
def test_schedules_start_and_end_where_they_should(name):
    lrs = scheduled_lrs(TrainConfig(epochs=10, lr=1.0, scheduler=name, step_every=3, restart_every=2,
                                    warmup_epochs=2 if name == "warmup_cosine" else 0), 50)
    assert max(lrs) <= 1.0 + 1e-9
    if name == "warmup_cosine":
        assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0) and lrs[-1] < 0.01
    if name == "step":
        assert lrs[14] == pytest.approx(1.0) and lrs[15] == pytest.approx(0.1) and lrs[30] == pytest.approx(0.01)
    if name == "cosine_restarts":
        assert lrs[10] == pytest.approx(1.0) and lrs[9] < 0.1  # restart after the first 2-epoch cycle


def test_triangle_schedule_rises_from_start_to_peak_then_falls_to_end():
    lrs = scheduled_lrs(TrainConfig(epochs=10, lr=2.0, scheduler="triangle", warmup_epochs=2), 51)
    start, end = training.TRIANGLE
    assert lrs[0] == pytest.approx(2 * start) and lrs[10] == pytest.approx(2.0) and lrs[50] == pytest.approx(2 * end)
    assert lrs[5] == pytest.approx(2 * (start + 1) / 2) and max(lrs) == pytest.approx(2.0)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11])) and all(a > b for a, b in zip(lrs[10:50], lrs[11:51]))


def test_autocast_settings_per_device():
    assert training.autocast_settings(torch.device("cpu"), "auto") == (False, torch.float32, False)
    assert training.autocast_settings(torch.device("cuda"), "auto") == (True, torch.float16, True)
    assert training.autocast_settings(torch.device("cuda"), False) == (False, torch.float32, False)
    assert training.autocast_settings(torch.device("cpu"), True) == (True, torch.bfloat16, False)


def test_classification_task_accepts_soft_targets():
    task = training.Classification(label_smoothing=0.1)
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    soft = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    assert task.metrics(logits, soft)["acc"].tolist() == [1.0, 1.0]
    assert task.loss(logits, torch.tensor([0, 1])) > torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1]))


def test_predict_averages_tta_views():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    loader = [(torch.randn(4, 3, 2, 2), torch.zeros(4, dtype=torch.long))]
    plain, _ = training.predict(model, loader)
    doubled, _ = training.predict(model, loader, tta=lambda x: [x])
    assert torch.allclose(plain, doubled)


def test_per_class_accuracy_keeps_class_indices_and_marks_absent_classes():
    targets = torch.tensor([0, 0, 2, 2, 2])
    predicted = torch.tensor([0, 1, 2, 2, 0])
    accuracy = training.per_class_accuracy(predicted, targets, 4)
    assert accuracy[0] == 0.5 and accuracy[2] == pytest.approx(2 / 3)
    assert torch.isnan(accuracy[1]) and torch.isnan(accuracy[3])
