import pytest

from helpers import results, runner
from helpers.profiles import budget

GOOD = {"SEED": 2023, "PROFILE": "smoke", "DATA_ROOT": None, "DEVICE": "cpu", "OUTPUT_DIR": None, "TRAIN": True,
        "RETRAIN": None}


def test_check_parameters_accepts_the_contract():
    assert runner.check_parameters(dict(GOOD, torch=object(), A=object()), runner.COMMON_PARAMETERS) == GOOD


@pytest.mark.parametrize("change, message", [
    ({"EPOCHS": 3}, "unknown parameter.*EPOCHS.*takes SEED, PROFILE"),
    ({"SEED": "2023"}, "SEED='2023' should be int"),
    ({"TRAIN": 1}, "TRAIN=1 should be bool"),
    ({"SEED": True}, "SEED=True should be int"),
    ({"PROFILE": "quick"}, "PROFILE='quick' is unknown; choose one of smoke, fast, full"),
    ({"DATA_ROOT": 3}, "DATA_ROOT=3 should be str or None"),
])
def test_bad_parameters_fail_before_any_work(change, message):
    with pytest.raises(runner.ParameterError, match=message):
        runner.check_parameters(dict(GOOD, **change), runner.COMMON_PARAMETERS)


def test_missing_parameter_is_named():
    params = dict(GOOD)
    del params["TRAIN"]
    with pytest.raises(runner.ParameterError, match="lacks TRAIN"):
        runner.check_parameters(params, runner.COMMON_PARAMETERS)


def test_start_seeds_and_routes_outputs(tmp_path):
    run = runner.start(dict(GOOD, OUTPUT_DIR=str(tmp_path)), "03")
    assert run.device.type == "cpu" and run.budget.synthetic
    assert run.checkpoint("x") == tmp_path / "checkpoints" / "smoke" / "03_x.ckpt"
    assert run.path("tables") == tmp_path / "report" / "generated"
    assert "Profile smoke, recipe tiny: synthetic stand-in data, device" in run.profile_note()
    with pytest.raises(ValueError, match="unknown output kind"):
        run.path("logs")


def test_checkpoint_dir_moves_only_the_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setenv(runner.CHECKPOINT_ENV, str(tmp_path / "drive"))
    run = runner.start(dict(GOOD, OUTPUT_DIR=str(tmp_path / "out")), "03")
    assert run.checkpoint("x") == tmp_path / "drive" / "smoke" / "03_x.ckpt"
    assert run.path("results") == tmp_path / "out" / "results"


@pytest.mark.parametrize("reuse", [False, True])
def test_freed_memory_is_kept_only_when_a_notebook_asks(tmp_path, monkeypatch, reuse):
    calls = []
    monkeypatch.setattr(runner, "keep_freed_memory", lambda: calls.append(1) or True)
    runner.start(dict(GOOD, OUTPUT_DIR=str(tmp_path)), "01", reuse_freed_memory=reuse)
    assert len(calls) == int(reuse)


def test_retrain_computes_only_the_named_results_while_the_rest_replays(tmp_path):
    import torch
    from helpers import data
    from helpers.training import TrainConfig

    trained = runner.start(dict(GOOD, OUTPUT_DIR=str(tmp_path)), "02")
    assert trained.trains("anything")
    loader = data.TensorLoader(data.synthetic_images(16, 3, size=8, seed=0), 8)
    build = lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
    for name in ("probe", "target_fold0_head"):
        runner.run_experiment(trained, name, build, TrainConfig(epochs=1), loader, loader, loader)
    stored = {name: (tmp_path / "results" / f"02_{name}.json").read_text() for name in ("probe", "target_fold0_head")}
    params = dict(GOOD, OUTPUT_DIR=str(tmp_path), TRAIN=False, RETRAIN=["target"])
    replay = runner.start(params, "02")
    assert replay.trains("target") and replay.trains("target_fold0_head") and replay.trains("target_final_whole")
    assert not replay.trains("targets") and not replay.trains("probe")
    for name in ("probe", "target_fold0_head"):
        runner.run_experiment(replay, name, build, TrainConfig(epochs=2), loader, loader, loader)
    assert (tmp_path / "results" / "02_probe.json").read_text() == stored["probe"]  # replayed, not rewritten
    retrained = runner.results.read_json(tmp_path / "results" / "02_target_fold0_head.json")
    assert retrained["results"]["config"]["epochs"] == 2 and retrained["params"]["RETRAIN"] == ["target"]


def test_measured_computes_once_and_replays_the_stored_value(tmp_path):
    calls = []
    compute = lambda: calls.append(1) or {"acc": 0.5, "pair": (1, 2)}
    trained = runner.start(dict(GOOD, OUTPUT_DIR=str(tmp_path)), "05")
    first = trained.measured("section", compute)
    assert first == {"acc": 0.5, "pair": [1, 2]} and len(calls) == 1  # returned as stored: a tuple comes back a list
    replay = runner.start(dict(GOOD, OUTPUT_DIR=str(tmp_path), TRAIN=False), "05")
    assert replay.measured("section", compute) == first and len(calls) == 1
    again = runner.start(dict(GOOD, OUTPUT_DIR=str(tmp_path), TRAIN=False, RETRAIN=["section"]), "05")
    assert again.measured("section", compute) == first and len(calls) == 2
    with pytest.raises(FileNotFoundError, match="05_other.json.*name it in RETRAIN"):
        replay.measured("other", compute)
    assert replay.measured("other", compute, missing_ok=True) is None and len(calls) == 2


def test_table_captions_come_from_the_rows_records(tmp_path):
    import torch
    from helpers import data
    from helpers.training import TrainConfig

    run = runner.start(dict(GOOD, OUTPUT_DIR=str(tmp_path)), "01")
    images = data.synthetic_images(24, 3, size=8, seed=0)
    build = lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
    outcomes = [runner.run_experiment(run, f"row{seed}", build, TrainConfig(epochs=epochs),
                                      *data.loader_triple(images, images, images, 8, 8, seed=seed), seed=seed)
                for seed, epochs in ((2023, 1), (2024, 2))]
    assert outcomes[0].record["data"] == {"samples": 24, "input_size": 8, "synthetic": True}
    path = run.write_table("rows", [runner.result_row(o.name, o) for o in outcomes], runner.RESULT_COLUMNS,
                           "Two rows.", records=outcomes)
    text = path.read_text()
    assert text.startswith("% rows from results: 01_row2023, 01_row2024\n")
    assert "(Profile smoke, recipe tiny: synthetic stand-in data, 24 training samples, 8 px images, 1–2 epochs, " \
           "seeds 2023–2024, device" in text
    with pytest.raises(ValueError, match="name the results its rows come from"):
        run.write_table("rows", [], runner.RESULT_COLUMNS, "No rows.", records=[])


def test_recipes_are_named_and_kept_apart_from_budgets():
    from helpers.profiles import _BUDGETS, _RECIPES, PROFILES, recipe

    for notebook in _BUDGETS:
        for profile in PROFILES:
            chosen = recipe(notebook, profile)
            assert chosen.name == budget(notebook, profile).recipe
            assert not set(chosen) - {"name"} & set(budget(notebook, profile)), "a key is both budget and recipe"
        assert {recipe(notebook, p).name for p in PROFILES} <= set(_RECIPES[notebook])
    same = lambda r: {k: v for k, v in r.items() if k not in ("name", "amp")}
    assert same(recipe("03", "fast")) == same(recipe("03", "full"))  # the hand-out's, with bfloat16 on the CPU
    assert recipe("03", "fast").amp is True and recipe("03", "full").amp == "auto"
    assert recipe("01", "fast").strong["amp"] is True and recipe("01", "full").strong["amp"] == "auto"


def test_smoke_outputs_never_land_on_the_committed_ones():
    assert runner.default_output_dir("smoke").parts[-3:] == ("runs", "smoke", "outputs")
    assert runner.default_output_dir("fast") == runner.PROJECT_ROOT


def test_budgets_are_read_only_and_named():
    b = budget("03", "fast")
    assert b.epochs >= 1 and not b.synthetic
    with pytest.raises(TypeError, match="profiles.py"):
        b["epochs"] = 1
    with pytest.raises(ValueError, match="PROFILE='gpu'"):
        budget("03", "gpu")
    with pytest.raises(AttributeError, match="budget has no 'epoch'"):
        b.epoch


def test_macros_carry_the_profile_and_weights_are_kept_then_reloaded(tmp_path):
    import torch

    run = runner.start(dict(GOOD, OUTPUT_DIR=str(tmp_path)), "04")
    text = run.write_macros("trials", {"best_dice": "0.9700"}).read_text()
    assert "\\newcommand{\\RNbZeroFourProfile}{smoke}" in text
    assert "\\newcommand{\\RNbZeroFourData}{synthetic stand-in data}" in text
    assert "\\RNbZeroFourDevice}" in text and "\\newcommand{\\RNbZeroFourBestDice}{0.9700}" in text
    torch.manual_seed(0)
    trained = torch.nn.Linear(3, 2)
    run.keep_weights(trained, "best")
    replay = runner.start(dict(GOOD, OUTPUT_DIR=str(tmp_path), TRAIN=False), "04")
    fresh = torch.nn.Linear(3, 2)
    replay.keep_weights(fresh, "best")
    assert torch.equal(fresh.weight, trained.weight)
    torch.manual_seed(1)
    retrained = torch.nn.Linear(3, 2)
    rechosen = runner.start(dict(GOOD, OUTPUT_DIR=str(tmp_path), TRAIN=False, RETRAIN=["best"]), "04")
    rechosen.keep_weights(retrained, "best")  # RETRAIN names it: stored anew, not loaded
    replay.keep_weights(fresh, "best")
    assert torch.equal(fresh.weight, retrained.weight) and not torch.equal(fresh.weight, trained.weight)


def test_the_device_macro_names_where_the_results_were_made_not_the_replaying_machine(tmp_path):
    run = runner.start(dict(GOOD, OUTPUT_DIR=str(tmp_path)), "04")
    run.environment["device_name"] = "Trainer CPU, 2 threads"
    run.save_results("nearest_trial0", {"test": {"dice": 0.97}})
    assert "\\newcommand{\\RNbZeroFourDevice}{Trainer CPU, 2 threads}" in run.write_macros("trials", {}).read_text()
    replay = runner.start(dict(GOOD, OUTPUT_DIR=str(tmp_path), TRAIN=False), "04")
    replay.environment["device_name"] = "Grader laptop, 8 threads"
    assert replay.write_macros("trials", {}).read_text().count("Grader") == 1  # nothing read yet: its own device
    replay.stored("nearest_trial0")
    assert "{Trainer CPU, 2 threads}" in replay.write_macros("trials", {}).read_text()


def test_require_trained_names_what_retrain_must_add(tmp_path):
    replay = runner.start(dict(GOOD, OUTPUT_DIR=str(tmp_path), TRAIN=False, RETRAIN=["strong"]), "01")
    runner.require_trained(replay, ["strong", "strong_se"], "strong_tta")  # the family retrains both
    only_tta = runner.start(dict(GOOD, OUTPUT_DIR=str(tmp_path), TRAIN=False, RETRAIN=["strong_tta"]), "01")
    with pytest.raises(ValueError, match="computed from strong_c100, whose weights are not kept.*RETRAIN"):
        runner.require_trained(only_tta, ["strong_c100"], "strong_tta")


def test_recipe_name_comes_from_the_record_or_else_its_profile():
    assert runner.recipe_name("01", {"recipe": {"name": "handout"}, "budget": {"profile": "fast"}}) == "handout"
    assert runner.recipe_name("01", {"budget": {"profile": "fast"}}) == "cpu"  # written before recipes were stored
    assert runner.recipe_name("03", {"budget": {"profile": "fast"}}) == "cpu"


def test_figure_note_says_what_the_drawn_records_say(tmp_path):
    import matplotlib.pyplot as plt

    run = runner.start(dict(GOOD, OUTPUT_DIR=str(tmp_path)), "03")
    for name, epochs in (("a", 3), ("b", 5)):
        run.save_results(name, {"name": name, "seed": 7, "config": {"epochs": epochs}})
    fig = plt.figure()
    paths = run.save_figure(fig, "curves", records=["a", "b"])
    note = fig.texts[-1].get_text()
    plt.close(fig)
    assert paths["png"].exists() and "recipe tiny: synthetic stand-in data, 3–5 epochs, seed 7" in note
    with pytest.raises(FileNotFoundError, match="RETRAIN"):
        run.save_figure(plt.figure(), "curves", records=["never_stored"])


def test_summary_records_wall_time_peak_memory_and_what_was_computed(tmp_path):
    import torch

    run = runner.start(dict(GOOD, OUTPUT_DIR=str(tmp_path), TRAIN=False, RETRAIN=["x"]), "03")
    before = runner.peak_memory_bytes()
    block = torch.ones(64 * 2**20, dtype=torch.uint8) + 1  # 64 MB more than anything held so far at least once
    summary = results.read_json(run.summary({"acc": 0.9}))
    assert summary["peak_memory_gb"] >= before / 1e9 - 0.01 and summary["peak_memory_gb"] >= 0.064
    assert summary["train"] is False and summary["retrain"] == ["x"] and summary["seconds"] >= 0
    del block


def test_descriptions_of_code_carry_no_profile_and_say_so(tmp_path):
    run = runner.start(dict(GOOD, OUTPUT_DIR=str(tmp_path)), "03")
    table = run.write_description("layers", [{"layer": "Linear 512→43", "params": 22_059}],
                                  {"layer": "layer", "params": "parameters"}, caption="The model.").read_text()
    assert table.startswith(runner.DESCRIPTION_HEADER) and "Profile" not in table and "22{,}059" in table
    snippet = run.write_verbatim("change", "- adam\n+ adamw\n").read_text()
    assert snippet.endswith("\\begin{verbatim}\n- adam\n+ adamw\n\\end{verbatim}\n")


def test_a_pure_replay_never_overwrites_the_summary_of_the_run_that_trained(tmp_path):
    trained = runner.start(dict(GOOD, OUTPUT_DIR=str(tmp_path)), "04").summary({"dice": 0.97})
    replayed = runner.start(dict(GOOD, OUTPUT_DIR=str(tmp_path), TRAIN=False), "04").summary({"dice": 0.97})
    assert trained == tmp_path / "results" / "04_summary.json" and results.read_json(trained)["train"] is True
    assert replayed == tmp_path / "runs" / "replays" / "04_summary.json"
    partial = runner.start(dict(GOOD, OUTPUT_DIR=str(tmp_path), TRAIN=False, RETRAIN=["elu"]), "04").summary({})
    assert partial == trained and results.read_json(partial)["retrain"] == ["elu"]


def test_a_dry_run_keeps_the_recipe_and_cuts_loops_and_data():
    from helpers.profiles import budget, dry_run, dry_run_recipe, recipe

    full, cut = budget("05", "full"), dry_run(budget("05", "full"), "05")
    assert cut.synthetic and cut.dry_run and cut.profile == "full" and cut.recipe == full.recipe == "handout"
    assert cut.epochs == cut.depth_epochs == cut.steps_per_epoch == 1
    assert cut.best == {"epochs": 1, "steps_per_epoch": 1}
    assert cut.sweep == full.sweep and cut.synthetic_chars == 60_000 and recipe("05", "full").batch_size == 64
    assert cut.seeds == full.seeds and dry_run(budget("04", "full"), "04").trials == 2
    two = dry_run(budget("02", "full"), "02")
    assert two.gradual == budget("02", "full").gradual  # the recipe's stages; the inputs shrink to 32-48 px
    assert two.sizes == (32, 48) and two.study_size == 32 and max(two.sizes) < min(budget("02", "full").sizes)
    unet, kept = recipe("04", "full"), dry_run_recipe(recipe("04", "full"), "04")
    assert kept.size == 128 < unet.size and {k: v for k, v in kept.items() if k != "size"} == \
        {k: v for k, v in unet.items() if k != "size"}  # widths, batch size, amp, learning rate kept
    assert dry_run_recipe(recipe("02", "full"), "02") == recipe("02", "full")
    assert two.train_limit >= recipe("02", "full").batch_size  # at least one full batch of the recipe
    assert two.target_folds == 2 and cut.prompts == 2 and cut.sample_length < full.sample_length
    three = dry_run(budget("03", "fast"), "03")
    assert three.challenge_epochs == (1, 2) == tuple(range(1, len(budget("03", "fast").challenge_epochs) + 1))
