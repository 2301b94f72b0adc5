import json
import sys
from pathlib import Path

import pytest
import torch

from helpers import repro


def draw():
    return torch.rand(5), torch.randn(3, generator=repro.make_generator(7))


def test_seed_everything_gives_identical_tensors_twice():
    repro.seed_everything(2023)
    first = draw()
    repro.seed_everything(2023)
    second = draw()
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    repro.seed_everything(2024)
    assert not torch.equal(draw()[0], first[0])


def test_seed_everything_enables_deterministic_algorithms():
    repro.seed_everything(1)
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.benchmark


def test_resolve_device_auto_and_cpu():
    assert repro.resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else None
    if expected:
        assert repro.resolve_device("auto").type == "cuda"
    elif not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        assert repro.resolve_device("auto") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when CUDA is missing")
def test_resolve_device_explains_missing_cuda():
    with pytest.raises(ValueError, match="CUDA is not available.*DEVICE='auto'"):
        repro.resolve_device("cuda")


def test_resolve_device_rejects_nonsense():
    with pytest.raises(ValueError, match="not a device name"):
        repro.resolve_device("gpu0")


def test_environment_records_versions_device_and_commit():
    env = repro.environment(torch.device("cpu"))
    assert env["torch"] == torch.__version__
    assert env["device"] == "cpu" and env["cpu_model"] and env["device_name"].startswith(env["cpu_model"])
    assert env["git_commit"] and env["python"].count(".") == 2


def test_dataloader_workers_are_seeded_from_the_generator():
    import numpy as np
    from torch.utils.data import DataLoader, Dataset

    class NumpyNoise(Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return torch.tensor(np.random.rand())  # what an un-seeded worker would duplicate or vary

    def draw():
        loader = DataLoader(NumpyNoise(), batch_size=2, shuffle=True, num_workers=2,
                            worker_init_fn=repro.seed_worker, generator=repro.make_generator(3))
        return torch.cat(list(loader))

    first, second = draw(), draw()
    assert torch.equal(first, second)
    assert len(set(first.tolist())) == 8  # the two workers do not repeat each other's numbers


RSS_AFTER_FREE = """
import sys, torch
from helpers import repro
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
if sys.argv[1] == "keep":
    assert repro.keep_freed_memory()
before = rss_mb()
block = torch.ones(64 * 2**20 // 4)  # 64 MB: above glibc's default mmap threshold
del block
print(rss_mb() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_keeps_a_freed_block_for_reuse():
    import subprocess

    kept, returned = (float(subprocess.run([sys.executable, "-c", RSS_AFTER_FREE, mode], capture_output=True, text=True,
                                           check=True, cwd=repro.PROJECT_ROOT).stdout) for mode in ("keep", "default"))
    assert kept > 48, "with keep_freed_memory the freed 64 MB stay in the process for the next step"
    assert returned < 16, "by default glibc returns a freed 64 MB block to the kernel"


def test_drift_check_compares_stored_metrics_within_their_tolerance(tmp_path):
    from helpers import reproduce, results

    committed, rerun = tmp_path / "committed", tmp_path / "rerun"
    for k, acc in enumerate((0.90, 0.92, 0.94)):  # seed noise sd 0.02 -> tolerance 0.06 for this family
        results.write_json({"results": {"test": {"acc": acc, "loss": 0.5}, "train_seconds": 9.0}},
                           committed / f"03_bn_trial{k}.json")
    results.write_json({"results": {"test": {"acc": 0.95, "loss": 0.5}, "train_seconds": 1.0}},
                       rerun / "03_bn_trial0.json")  # +5 points: inside 3 sd of the seed noise
    results.write_json({"results": {"test_acc": [0.99, 0.97]}}, committed / "03_challenge.json")
    results.write_json({"results": {"test_acc": [0.99, 0.99]}}, rerun / "03_challenge.json")
    rows = {(name, path): row for name, path, *row in reproduce.drift(committed, rerun)}
    assert rows["03_bn_trial0", "test.acc"][2] == pytest.approx(0.06) and rows["03_bn_trial0", "test.acc"][3]
    assert rows["03_bn_trial0", "test.loss"][2] == pytest.approx(0.015)  # 3 % of the loss
    assert ("03_bn_trial0", "train_seconds") not in rows  # timings are not metrics
    assert rows["03_challenge", "test_acc[0]"][3] and not rows["03_challenge", "test_acc[1]"][3]  # 2 points > 1
    assert "DRIFT" in reproduce.format_drift(list((n, p, *r) for (n, p), r in rows.items()))


def test_drift_tolerance_knows_units_and_sampling_noise(tmp_path):
    from helpers import reproduce, results

    summary = {"mean": 0.75, "half_width": 0.02, "n": 20}
    committed = {"history": {"best_value": 3.09, "monitor": "val_loss"}, "test": {"bpc": 4.55},
                 "text": {"per_sample": {"spelling": [0.7, 0.8]}, "summary": {"spelling": summary}}}
    rerun = {"history": {"best_value": 3.11, "monitor": "val_loss"}, "test": {"bpc": 4.57},
             "text": {"per_sample": {"spelling": [0.9, 0.6]}, "summary": {"spelling": summary | {"mean": 0.73}}}}
    results.write_json({"results": committed}, tmp_path / "a" / "05_x.json")
    results.write_json({"results": rerun}, tmp_path / "b" / "05_x.json")
    rows = {path: row for _, path, *row in reproduce.drift(tmp_path / "a", tmp_path / "b")}
    assert not any("per_sample" in path or "half_width" in path for path in rows)  # one sample is no metric
    assert rows["history.best_value"][2] == pytest.approx(0.03 * 3.09) and rows["test.bpc"][3]  # losses: relative
    assert rows["text.summary.spelling.mean"][2] == pytest.approx(0.02 * 2 ** 0.5)  # both means carry the noise
    assert all(row[3] for row in rows.values())
    assert reproduce.tolerance("history.best_value.val_acc", 0.9) == 0.01


def test_drift_check_never_writes_to_the_project_root():
    from helpers import reproduce

    with pytest.raises(SystemExit, match="scratch folder"):
        reproduce.prepare_check(reproduce.PROJECT_ROOT)


def test_a_check_keeps_its_executed_notebooks_out_of_the_ones_the_bundle_ships(tmp_path):
    from helpers import reproduce

    args = reproduce.parse_args(["--check", "--output-dir", str(tmp_path)])
    assert reproduce.executed_dir_of(args) == tmp_path / "executed"
    assert reproduce.executed_dir_of(reproduce.parse_args([])) == reproduce.PROJECT_ROOT / "runs" / "fast"
    assert reproduce.executed_dir_of(reproduce.parse_args(["--check", "--executed-dir", "x"])) == Path("x")


@pytest.mark.parametrize("argv", [["--record-replay"], ["--no-train", "--record-replay", "--retrain", "x"],
                                  ["--no-train", "--record-replay", "--profile", "smoke"],
                                  ["--dry-run", "--no-train"], ["--dry-run", "--check"], ["--record-scratch"],
                                  ["--record-scratch", "--check", "--retrain", "x"],
                                  ["--record-scratch", "--check", "--jobs", "2"]])
def test_reproduce_refuses_measurements_that_would_mislead(argv, capsys):
    from helpers import reproduce

    with pytest.raises(SystemExit):
        reproduce.parse_args(argv)
    assert argv[0] in capsys.readouterr().err  # the message names the flag it refuses


def test_a_replay_record_is_kept_apart_from_the_run_records(tmp_path):
    from helpers import reproduce

    summary = tmp_path / "runs" / "replays" / "04_summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text('{"seconds": 17.0, "peak_memory_gb": 1.9, "train": false}')
    outcomes = [{"notebook": "04_unet.ipynb", "status": "ok", "metrics": {"dice": 0.97}},
                {"notebook": "05_lm.ipynb", "status": "ok", "metrics": {}}]  # no fresh summary: not recorded
    reproduce.record_costs(outcomes, tmp_path, tmp_path / "results" / "replays", replay=True)
    assert [p.name for p in (tmp_path / "results" / "replays").iterdir()] == ["04.json"]
    assert not list((tmp_path / "results").glob("*.json"))


def test_a_from_scratch_record_keeps_the_run_summary_and_what_it_started_from(tmp_path):
    from helpers import reproduce

    summary = tmp_path / "results" / "02_summary.json"  # a run that trained writes its summary to results/
    summary.parent.mkdir(parents=True)
    summary.write_text('{"seconds": 7000.0, "peak_memory_gb": 8.8, "train": true}')
    outcomes = [{"notebook": "02_transfer.ipynb", "status": "ok", "metrics": {"acc": 0.9}},
                {"notebook": "03_signs.ipynb", "status": "failed", "metrics": {}}]
    reproduce.record_costs(outcomes, tmp_path, tmp_path / "scratch", replay=False, decode_caches_at_start=0,
                           drift_free=True)
    record = json.loads((tmp_path / "scratch" / "02.json").read_text())
    assert record["peak_memory_gb"] == 8.8 and record["decode_caches_at_start"] == 0 and record["drift_free"]
    assert [p.name for p in (tmp_path / "scratch").iterdir()] == ["02.json"]
