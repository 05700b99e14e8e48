"""lm_runs.checkpoints: checkpoints and model folders appear complete or not at all; the latest complete
checkpoint is picked; a run stopped mid-save resumes bit for bit."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("datasets")

from safetensors.torch import load_file  # noqa: E402

from lm_runs import checkpoints  # noqa: E402
from lm_runs.checkpoints import latest_checkpoint, remove_partial_saves, save_model_atomically  # noqa: E402
from lm_runs.tiny import build_tiny_lm  # noqa: E402

COMMON = ["--report_to", "none", "--use_cpu", "true", "--disable_tqdm", "true", "--logging_steps", "1000",
          "--seed", "0", "--dataloader_num_workers", "0", "--per_device_train_batch_size", "4",
          "--learning_rate", "1e-3", "--warmup_steps", "0"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    model = build_tiny_lm(root / "lm")
    data = root / "sft.jsonl"
    words = "the cat dog sleeps runs red blue big small".split()
    data.write_text("".join(json.dumps({"prompt": f"tell me about the {words[i % 9]} {i}",
                                        "completion": f" the {words[(i * 3) % 9]} sleeps"}) + "\n" for i in range(24)))
    return {"model": str(model), "data": str(data)}


def sft_trainer(tiny, output_dir, *flags):
    from lm_runs import sft
    from lm_runs.cli import parse_config

    (config,) = parse_config([sft.SFTConfig], ["--model_name_or_path", tiny["model"], "--dataset", tiny["data"],
                                               "--output_dir", str(output_dir), *COMMON, *flags])
    return sft.build_trainer(config)


def weights(trainer):
    return {name: p.detach().clone() for name, p in trainer.model.named_parameters()}


def visible(folder):
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


# ------------------------------------------------------------------------------------ model folders


class FakeModel:
    """save_pretrained writes the given files; ``fail_after`` files in, it raises (a kill mid-save)."""

    def __init__(self, files, fail_after=None):
        self.files, self.fail_after = files, fail_after

    def save_pretrained(self, folder):
        os.makedirs(folder, exist_ok=True)
        for index, (name, content) in enumerate(self.files.items()):
            if index == self.fail_after:
                raise OSError(28, "No space left on device", os.path.join(folder, name))
            with open(os.path.join(folder, name), "w") as handle:
                handle.write(content)


def test_model_folder_new_failed_and_replaced(tmp_path):
    target = tmp_path / "epochs" / "epoch-1"
    with pytest.raises(OSError):
        save_model_atomically(FakeModel({"model.safetensors": "w1", "config.json": "{}"}, fail_after=1), target)
    assert not target.exists()  # a failed first save leaves no folder at all (today: a 0-byte config.json)
    save_model_atomically(FakeModel({"model-00001-of-00002.safetensors": "a", "model-00002-of-00002.safetensors": "b",
                                     "config.json": "{\"v\": 1}"}), target)
    assert visible(target) == ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    with pytest.raises(OSError):
        save_model_atomically(FakeModel({"model.safetensors": "w2", "config.json": "{}"}, fail_after=1), target)
    assert (target / "config.json").read_text() == "{\"v\": 1}"  # the old model is untouched
    save_model_atomically(FakeModel({"model.safetensors": "w2", "config.json": "{\"v\": 2}"}), target)
    assert visible(target) == ["config.json", "model.safetensors"]  # replaced whole: no stale shards
    assert (target / "model.safetensors").read_text() == "w2"
    remove_partial_saves(tmp_path)
    remove_partial_saves(target.parent, subfolders=())
    assert sorted(p.name for p in target.parent.iterdir()) == ["epoch-1"]


def test_final_model_into_a_run_folder_moves_markers_last(tmp_path, monkeypatch):
    run = tmp_path / "run"
    (run / "checkpoint-2").mkdir(parents=True)
    (run / "notes.txt").write_text("mine")
    (run / "model-00001-of-00002.safetensors").write_text("old shard")
    (run / "config.json").write_text("old")
    moved = []
    real_replace = os.replace
    monkeypatch.setattr(checkpoints.os, "replace", lambda a, b: (moved.append(os.path.basename(b)), real_replace(a, b)))
    save_model_atomically(FakeModel({"config.json": "new", "model.safetensors": "w", "tokenizer.json": "t"}), run)
    assert moved[-1] == "config.json" and set(moved) == {"config.json", "model.safetensors", "tokenizer.json"}
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-2", "config.json", "model.safetensors", "notes.txt",
                                                     "tokenizer.json"]
    assert (run / "config.json").read_text() == "new"
    monkeypatch.setattr(checkpoints.os, "replace", real_replace)
    # A full disk mid-save into a run folder: one error naming the folder, the old model untouched, the
    # staging folder removed (its space freed).
    with pytest.raises(checkpoints.SaveError, match=f"^could not save {run}: no space left on the device; "):
        save_model_atomically(FakeModel({"model.safetensors": "w3", "config.json": "x"}, fail_after=1), run)
    assert (run / "config.json").read_text() == "new" and (run / "model.safetensors").read_text() == "w"
    assert not (run / ".partial-model").exists()
    (run / ".partial-model").mkdir()  # what a kill mid-save leaves: removed when the next run starts
    assert remove_partial_saves(run) == [run / ".partial-model"]


# -------------------------------------------------------------------------------------- checkpoints


def test_checkpoints_are_published_whole_and_rotated(tiny, tmp_path):
    out = tmp_path / "out"
    trainer = sft_trainer(tiny, out, "--max_steps", "4", "--save_steps", "1", "--save_total_limit", "2")
    trainer.train()
    assert visible(out) == ["checkpoint-3", "checkpoint-4"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"):
        assert (out / "checkpoint-4" / name).is_file(), name
    assert json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())["global_step"] == 4
    assert latest_checkpoint(out) == str(out / "checkpoint-4")


def test_a_save_that_fails_leaves_no_checkpoint_and_resume_is_exact(tiny, tmp_path, monkeypatch):
    """A failure inside the Trainer's own save of checkpoint-3 (after the model and optimizer are written,
    before the trainer state): no checkpoint-3 appears, the latest is checkpoint-2, and resuming from it
    ends bit for bit where the uninterrupted run ends."""
    from transformers import Trainer

    reference = sft_trainer(tiny, tmp_path / "straight", "--max_steps", "5", "--save_steps", "1")
    reference.train()
    expected = weights(reference)

    out = tmp_path / "crashed"
    trainer = sft_trainer(tiny, out, "--max_steps", "5", "--save_steps", "1")
    real = Trainer._save_rng_state

    def crash_at_3(self, output_dir):
        if self.state.global_step == 3:
            raise KeyboardInterrupt  # as a kill would, mid-save
        return real(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_rng_state", crash_at_3)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    monkeypatch.setattr(Trainer, "_save_rng_state", real)
    assert visible(out) == ["checkpoint-1", "checkpoint-2"]
    partial = out / ".partial-checkpoint-3" / "checkpoint-3"
    assert (partial / "model.safetensors").is_file() and not (partial / "trainer_state.json").exists()
    assert latest_checkpoint(out) == str(out / "checkpoint-2")

    resumed = sft_trainer(tiny, out, "--max_steps", "5", "--save_steps", "1")
    resumed.train(resume_from_checkpoint=True)
    assert not (out / ".partial-checkpoint-3").exists()  # the leftover was removed when the run started
    assert visible(out) == [f"checkpoint-{i}" for i in range(1, 6)]
    got = weights(resumed)
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), name
    final = load_file(str(out / "checkpoint-5" / "model.safetensors"))
    straight = load_file(str(tmp_path / "straight" / "checkpoint-5" / "model.safetensors"))
    assert all(torch.equal(final[k], straight[k]) for k in straight)


def test_resume_true_without_checkpoint_is_one_line(tiny, tmp_path):
    trainer = sft_trainer(tiny, tmp_path / "empty", "--max_steps", "1", "--save_strategy", "no")
    with pytest.raises(ValueError, match="--resume_from_checkpoint true: no complete checkpoint in"):
        trainer.train(resume_from_checkpoint=True)


def test_best_checkpoint_is_recorded_under_its_published_name(tiny, tmp_path):
    """With evaluation and --load_best_model_at_end, the Trainer records the best checkpoint while it is
    still being written: the record (in memory and in trainer_state.json) names the published folder."""
    from lm_runs import sft
    from lm_runs.cli import parse_config

    out = tmp_path / "best"
    first = sft_trainer(tiny, out, "--max_steps", "4", "--save_steps", "1")
    (config,) = parse_config([sft.SFTConfig], [
        "--model_name_or_path", tiny["model"], "--dataset", tiny["data"], "--output_dir", str(out), *COMMON,
        "--max_steps", "4", "--save_steps", "1", "--eval_strategy", "steps", "--eval_steps", "1",
        "--load_best_model_at_end", "true", "--save_total_limit", "1"])
    trainer = sft.SFTTrainer(model=first.model, args=config, train_dataset=first.train_dataset,
                             eval_dataset=first.train_dataset, data_collator=first.data_collator,
                             processing_class=first.processing_class)
    trainer.train()
    best = trainer.state.best_model_checkpoint
    assert best is not None and Path(best).parent == out and (Path(best) / "trainer_state.json").is_file()
    for folder in out.glob("checkpoint-*"):
        recorded = json.loads((folder / "trainer_state.json").read_text())["best_model_checkpoint"]
        assert recorded is None or Path(recorded).parent == out, recorded


# ------------------------------------------------------------------------------- a full disk, for real

ROOT = Path(__file__).resolve().parents[1]


def run_limited(argv, max_file_bytes):
    """``python -m argv…`` in a subprocess that may write no file beyond ``max_file_bytes`` (RLIMIT_FSIZE,
    SIGXFSZ ignored): every write past it fails with EFBIG inside torch.save, safetensors or open(), as a
    full disk fails them with ENOSPC."""
    import resource
    import signal
    import subprocess
    import sys

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, env=env, preexec_fn=limit, capture_output=True,
                          text=True, timeout=600)


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error:")]


EFBIG_CAUSE = "a file grew past the file-size limit (ulimit -f) or the file system's largest file"


@pytest.mark.skipif(os.name != "posix", reason="RLIMIT_FSIZE")
def test_disk_full_while_saving_a_checkpoint_is_one_line_and_the_earlier_one_resumes(tiny, tmp_path):
    """checkpoint-2's optimizer.pt (1.1 MB) cannot be written (torch.save fails with a RuntimeError that
    names no errno; the model's 0.55 MB safetensors fit): one error line naming the folder and the cause,
    exit status 2, no checkpoint-2 and no hidden leftover; checkpoint-1 and the earlier final model stay
    complete, and a resume from checkpoint-1 ends the run."""
    from lm_runs import sft

    out = tmp_path / "out"
    argv = ["--model_name_or_path", tiny["model"], "--dataset", tiny["data"], "--output_dir", str(out), *COMMON,
            "--save_steps", "1"]
    sft.main([*argv, "--max_steps", "1"])
    final_before = (out / "model.safetensors").read_bytes()
    assert (out / "checkpoint-1" / "optimizer.pt").stat().st_size > 800_000 > (out / "model.safetensors").stat().st_size

    done = run_limited(["lm_runs.sft", *argv, "--max_steps", "2", "--resume_from_checkpoint", "true"], 800_000)
    assert done.returncode == 2, done.stderr[-3000:]
    assert error_lines(done.stderr) == [
        f"error: could not save {out / 'checkpoint-2'}: {EFBIG_CAUSE}; the checkpoints saved before it are complete: "
        "make room and resume with --resume_from_checkpoint true"]
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["checkpoint-1"]  # no .partial-checkpoint-2
    assert latest_checkpoint(out) == str(out / "checkpoint-1")
    assert (out / "model.safetensors").read_bytes() == final_before

    sft.main([*argv, "--max_steps", "2", "--resume_from_checkpoint", "true"])
    assert latest_checkpoint(out) == str(out / "checkpoint-2")
    assert json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["global_step"] == 2


@pytest.mark.slow  # make test runs the checkpoint case above, which reaches the same SaveError through torch.save
@pytest.mark.skipif(os.name != "posix", reason="RLIMIT_FSIZE")
def test_disk_full_while_saving_the_final_model_is_one_line_and_leaves_no_model(tiny, tmp_path):
    """The final model.safetensors (0.55 MB) cannot be written (safetensors' own SafetensorError, os error
    27): one error line naming the output folder, exit status 2, no model file and no hidden leftover."""
    out = tmp_path / "out"
    done = run_limited(["lm_runs.sft", "--model_name_or_path", tiny["model"], "--dataset", tiny["data"],
                        "--output_dir", str(out), *COMMON, "--max_steps", "1", "--save_strategy", "no"], 200_000)
    assert done.returncode == 2, done.stderr[-3000:]
    assert error_lines(done.stderr) == [
        f"error: could not save {out}: {EFBIG_CAUSE}; nothing half-written is left under that name"]
    assert "Traceback" not in done.stderr
    left = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    assert not [name for name in left if checkpoints.is_model_file(name) or name.startswith(".")], left
    assert not (tmp_path / ".partial-out").exists()


def _tmpfs_allowed(folder):
    """Whether this machine lets an unprivileged user namespace mount a tmpfs (``unshare -Urm``)."""
    import shutil
    import subprocess

    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-Urm", "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                           capture_output=True, timeout=60)
    return probe.returncode == 0


DRIVER = """
import json, os, shutil, subprocess, sys
mount, report, size = sys.argv[1], sys.argv[2], sys.argv[3]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", mount], check=True)
out = os.path.join(mount, "out")
done = subprocess.run([sys.executable, "-m", "lm_runs.sft", *sys.argv[4:], "--output_dir", out], capture_output=True,
                      text=True)
usage = shutil.disk_usage(mount)
json.dump({"status": done.returncode, "stderr": done.stderr, "entries": sorted(os.listdir(out)),
           "free": usage.free, "total": usage.total}, open(report, "w"))
"""


@pytest.mark.slow  # the file-size-limit checkpoint case above runs in make test
@pytest.mark.skipif(os.name != "posix", reason="tmpfs")
def test_a_really_full_disk_while_saving_a_checkpoint_is_one_line_and_frees_the_space(tiny, tmp_path):
    """The run folder on a 1.2 MB tmpfs (mounted in a user namespace, no root needed): checkpoint-1's
    model (0.55 MB) fits, its optimizer.pt (1.1 MB) hits ENOSPC inside torch.save, which reports no errno.
    One error line says "no space left on the device" and names checkpoint-1, exit status 2, and the
    half-written staging folder is removed: the tmpfs is empty again."""
    import subprocess
    import sys

    mount = tmp_path / "mount"
    mount.mkdir()
    if not _tmpfs_allowed(mount):
        pytest.skip("no unprivileged tmpfs mounts here (unshare -Urm)")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    report = tmp_path / "report.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    subprocess.run(["unshare", "-Urm", sys.executable, str(driver), str(mount), str(report), "1200k",
                    "--model_name_or_path", tiny["model"], "--dataset", tiny["data"], *COMMON, "--max_steps", "1",
                    "--save_steps", "1"], cwd=ROOT, env=env, check=True, timeout=600)
    got = json.loads(report.read_text())
    out = mount / "out"
    assert got["status"] == 2, got["stderr"][-3000:]
    assert error_lines(got["stderr"]) == [
        f"error: could not save {out / 'checkpoint-1'}: no space left on the device; the checkpoints saved before it "
        "are complete: make room and resume with --resume_from_checkpoint true"]
    assert "Traceback" not in got["stderr"]
    assert got["entries"] == []  # no checkpoint-1, no .partial-checkpoint-1
    assert got["total"] - got["free"] <= 64 * 1024  # the 0.55 MB already written were freed
