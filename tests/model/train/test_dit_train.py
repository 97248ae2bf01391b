"""DiT trainer: every objective overfits a batch, the run writes a loadable release, resume is bit-identical,
the training rollout is the inference path, and a 2-process torchrun job keeps both ranks identical."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model.checkpoint import read_state_dict
from model.config import get_config
from model.generator import RecomputeGenerator, StreamingGenerator
from model.state import counter_normal
from model.train.common import Dist, load_state, read_csv, state_hash, step_generator
from model.train.dit_train import Args, Draws, make_optimizer, sample_batch, train, train_step
from model.train.evaluate import LatentBatch, sample_chunk
from model.train.latents import Args as LatentArgs
from model.train.latents import LatentCache, build_cache, camera_conditioning, save_vae
from model.transformer import build_model
from model.vae import CausalVAE, vae_config
from sanawm_env.scenes.export import ExportConfig, export_clips

REPO = Path(__file__).resolve().parents[3]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A latent cache (windows of 3 latents) of 4 exported clips, encoded by a seeded random micro VAE."""
    root = tmp_path_factory.mktemp("dit")
    index = export_clips(ExportConfig(out=str(root / "clips"), clips=4, frames=9, size=32, seed=5, png=True,
                                      compile=False, supersample=1), progress=False)
    torch.manual_seed(0)
    vae = CausalVAE(vae_config("micro"))
    vae_path = save_vae(vae, root / "vae.safetensors", "micro")
    cache = build_cache(LatentArgs(data=str(index), vae=str(vae_path), out=str(root / "lat"), window=3,
                                   device="cpu", progress=False))
    return cache, vae_path


def _args(data, out, **kw):
    cache, vae = data
    base = dict(latents=str(cache), out=str(out), preset="micro", steps=6, batch=2, seq_schedule="2:2,3:6",
                lr=3e-3, warmup=2, ckpt_every=100, log_every=1, eval_every=0, device="cpu", threads=1,
                progress=False, sf_every=2)
    base.update(kw)
    return Args(**base)


@pytest.mark.parametrize("objective,steps", [("flow", 25), ("x0", 25), ("self-forcing", 16)])
def test_each_objective_overfits_one_batch(data, objective, steps):
    cache = LatentCache.load(data[0])
    cfg = get_config("micro")
    b = sample_batch(cache, cfg, 3, 4, step_generator(0, 0), Dist(), CPU)
    torch.manual_seed(0)
    model = build_model(cfg)
    args = _args(data, "unused", objective=objective, teacher_forcing=0.5)
    opt = make_optimizer(model, args)
    losses = []
    for s in range(steps):
        rng = Draws(step_generator(0, 0, 0, 1), step_generator(0, 0, 0, 2))   # the same draws every step
        stats = train_step(model, opt, b, args, rng, s, Dist())
        losses.append(stats["loss"])
        assert stats["rollout"] == float(objective == "self-forcing" and s % 2 == 0)
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < 0.6 * losses[0], losses


def test_training_rollout_is_the_inference_path(data):
    """`sample_chunk` (self-forcing history, evaluation) equals RecomputeGenerator, which streaming equals."""
    cache = LatentCache.load(data[0])
    gen = StreamingGenerator.from_pretrained("micro", batch_size=2)
    rec = RecomputeGenerator(gen)
    frames = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    k = torch.tensor([16.0, 16.0, 15.5, 15.5])
    z0 = rec.reset(frames, k, seed=3)
    c2w = cache.c2w[:2, :9]                                            # relative poses; the recompute pose0 is I
    x1 = rec.step(c2w[:, 1:5])
    k_lat = gen._k_lat(k.expand(2, 4))
    cond, pl = camera_conditioning(gen.cfg, c2w, k_lat, 3)
    noise = counter_normal(rec.seed, torch.ones(2, dtype=torch.long), 0, (4, 1, 4, 4), torch.float32)
    with torch.no_grad():
        mine = sample_chunk(gen.model, z0, cond[:, :2], pl[:, :, :2], noise)
    torch.testing.assert_close(mine, x1, rtol=1e-5, atol=1e-5)


def test_run_writes_a_release_the_generator_loads(data, tmp_path):
    cache, vae = data
    out = train(_args(data, tmp_path / "run", objective="x0", val=str(cache), vae=str(vae), eval_every=3,
                      eval_count=2))
    rows = read_csv(out / "eval.csv")
    assert [r["step"] for r in rows] == [3, 6]
    assert {"val_flow", "fewstep_mse", "rollout_mse", "rollout_psnr", "rollout_ssim"} <= set(rows[-1])
    assert [int(r["seq"]) for r in read_csv(out / "train.csv")] == [2, 2, 3, 3, 3, 3]   # progressive sequence
    meta = json.loads((out / "dit.json").read_text())
    assert meta["objective"] == "x0" and meta["steps"] == 6
    state = load_state(out / "last.pt")
    assert state_hash(read_state_dict(out / "dit.safetensors")[0]) == state_hash(state["ema"])   # release = EMA
    assert state_hash(state["ema"]) != state_hash(state["model"])
    gen = StreamingGenerator.from_pretrained(out / "dit.safetensors")
    assert gen.render == {"supersample": 1, "fov": 90.0}   # how the training clips were rendered (the exporter)
    st = gen.reset(torch.zeros(1, 32, 32, 3, dtype=torch.uint8))
    assert gen.step(st, torch.eye(4, dtype=torch.float64).expand(1, 4, 4, 4)).shape == (1, 4, 32, 32, 3)


def test_resume_after_sigterm_is_bit_identical(data, tmp_path):
    full = load_state(train(_args(data, tmp_path / "full", objective="self-forcing")) / "last.pt")

    def stop_at_3(step):
        if step == 3:
            signal.raise_signal(signal.SIGTERM)

    part = train(_args(data, tmp_path / "part", objective="self-forcing"), on_step=stop_at_3)
    assert load_state(part / "last.pt")["step"] == 3
    got = load_state(train(_args(data, tmp_path / "part", objective="self-forcing", resume=True)) / "last.pt")
    assert got["step"] == full["step"] == 6
    assert state_hash(got["model"]) == state_hash(full["model"]) and state_hash(got["ema"]) == state_hash(full["ema"])
    with pytest.raises(ValueError, match="objective"):
        train(_args(data, tmp_path / "part", objective="flow", resume=True))


def test_ranks_draw_different_shards(data):
    cache = LatentCache.load(data[0])
    cfg = get_config("micro")
    shards = [sample_batch(cache, cfg, 2, 2, step_generator(0, 1), Dist(r, 2), CPU).latents for r in (0, 1)]
    both = sample_batch(cache, cfg, 2, 4, step_generator(0, 1), Dist(), CPU).latents
    assert torch.equal(torch.cat(shards), both)
    assert isinstance(LatentBatch.from_cache(cache, torch.tensor([0]), cfg, 2, CPU), LatentBatch)


def test_torchrun_two_processes_end_identical(data, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "model.train.dit_train", "--latents", str(data[0]), "--out", str(out), "--preset", "micro", "--steps", "3",
           "--batch", "1", "--seq-schedule", "3:3", "--objective", "x0", "--device", "cpu", "--threads", "1",
           "--ddp", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    hashes = [(out / f"rank{i}.sha256").read_text().strip() for i in (0, 1)]
    assert hashes[0] == hashes[1] and len(hashes[0]) == 64
    assert state_hash(load_state(out / "last.pt")["model"]) == hashes[0]
    assert (out / "dit.safetensors").exists()


def test_minutes_budget_shrinks_the_run_and_its_schedule(data, tmp_path):
    """A tiny budget: after the calibration steps the run is re-planned shorter, the schedule's boundaries scale
    with it, the release is still written, and budget.json records the plan."""
    out = tmp_path / "budget"
    train(_args(data, out, steps=100000, seq_schedule="2:50000,3:100000", minutes=0.02, calib_steps=3))
    plan = json.loads((out / "budget.json").read_text())
    assert 13 <= plan["steps"] < 100000 and plan["factor"] < 1.0
    (t0, u0, _), (t1, u1, _) = plan["schedule"]
    assert (t0, t1) == (2, 3) and u0 <= u1 == plan["steps"]
    assert (out / "dit.safetensors").exists()
    assert int(read_csv(out / "train.csv")[-1]["step"]) == plan["steps"]


def test_a_resumed_budget_run_keeps_its_plan(data, tmp_path):
    """Interrupted after its plan was made, a --minutes run resumes on that plan (same step count and LR curve)
    instead of re-planning from the original --steps."""
    out = tmp_path / "budget"

    def stop_at_14(step):
        if step == 14:
            signal.raise_signal(signal.SIGTERM)

    kw = dict(steps=100000, seq_schedule="2:50000,3:100000", minutes=0.02, calib_steps=3)
    train(_args(data, out, **kw), on_step=stop_at_14)
    plan = (out / "budget.json").read_text()
    train(_args(data, out, resume=True, **kw))
    assert (out / "budget.json").read_text() == plan
    assert load_state(out / "last.pt")["step"] == json.loads(plan)["steps"]


def test_caches_concatenate(data):
    one = LatentCache.load(data[0])
    both = LatentCache.load(f"{data[0]},{data[0]}")
    assert len(both) == 2 * len(one)
    assert torch.equal(both.latents[len(one):], one.latents)
    assert int(both.clip[len(one):].min()) > int(one.clip.max())


def test_pack_halves_the_release_and_it_still_loads(data, tmp_path):
    from model.checkpoint import load_checkpoint
    from model.train.pack import main as pack_main

    run = tmp_path / "dit_x0"
    train(_args(data, run, steps=2, seq_schedule="2:2"))
    pack_main([str(tmp_path / "out"), str(run), str(tmp_path / "missing")])
    packed = tmp_path / "out" / "dit_x0.safetensors"
    sd, _ = read_state_dict(packed)
    assert all(v.dtype == torch.float16 for v in sd.values() if v.is_floating_point())
    full = load_checkpoint(run / "dit.safetensors")
    half = load_checkpoint(packed)
    for (k, a), b in zip(full.state_dict().items(), half.state_dict().values()):
        assert b.dtype == a.dtype and torch.allclose(a, b, rtol=1e-3, atol=1e-4), k


def test_denoise_timesteps_train_and_ship_the_one_pass(data, tmp_path, monkeypatch):
    """--denoise-timesteps 1000,0: the x0 levels and the self-forcing rollout use that schedule, and the release
    says so; a resume with another schedule is refused."""
    import model.train.dit_train as dt
    import model.train.evaluate as ev
    from model.checkpoint import read_config
    from model.train.common import parse_args

    seen = {}
    real = ev.few_step_sigmas
    for mod in (dt, ev):   # the x0 levels (dit_train) and the rollout's sampler (evaluate)
        monkeypatch.setattr(mod, "few_step_sigmas",
                            lambda cfg, m=mod.__name__: seen.setdefault(m, set()).add(cfg.denoise_timesteps)
                            or real(cfg))
    cache, _ = data
    args = parse_args(Args, ["--latents", str(cache), "--denoise-timesteps", "1000,0"])
    assert args.denoise_timesteps == (1000, 0)
    out = tmp_path / "one"
    train(_args(data, out, steps=2, seq_schedule="3:2", objective="self-forcing", denoise_timesteps=(1000, 0)))
    assert seen == {dt.__name__: {(1000, 0)}, ev.__name__: {(1000, 0)}}
    assert read_config(out / "dit.safetensors").denoise_timesteps == (1000, 0)
    with pytest.raises(ValueError, match="denoise_timesteps"):
        train(_args(data, out, steps=3, seq_schedule="3:3", objective="self-forcing", resume=True))


def test_pack_config_from_hands_over_the_release_knobs_and_refuses_another_architecture(tmp_path):
    """A fine-tune is written with its preset's config; --config-from gives the packed copy the config of the
    model it replaces (here its denoising timesteps), and a reference whose weights would not fit is refused
    without leaving a file."""
    from model.checkpoint import read_config, save_checkpoint
    from model.train.pack import config_changes
    from model.train.pack import main as pack_main

    torch.manual_seed(0)
    run = tmp_path / "ft"
    trained = build_model(get_config("micro"))
    save_checkpoint(trained, run / "dit.safetensors")
    ref = save_checkpoint(build_model(get_config("micro", denoise_timesteps=(1000, 0))), tmp_path / "ref.safetensors",
                          metadata={"render": json.dumps({"supersample": 2})})
    assert config_changes(run / "dit.safetensors", ref) == {
        "denoise_timesteps": (list(get_config("micro").denoise_timesteps), [1000, 0])}

    pack_main([str(tmp_path / "out"), str(run), "--config-from", str(ref)])
    packed = tmp_path / "out" / "ft.safetensors"
    assert read_config(packed).denoise_timesteps == (1000, 0)
    sd, meta = read_state_dict(packed)
    assert json.loads(meta["render"]) == {"supersample": 2}
    for k, v in trained.state_dict().items():
        assert torch.equal(sd[k].float(), v.half().float()), k

    wide = save_checkpoint(build_model(get_config("micro", hidden_size=2 * get_config("micro").hidden_size)),
                           tmp_path / "wide.safetensors")
    with pytest.raises(ValueError, match="does not fit the weights"):
        pack_main([str(tmp_path / "out2"), str(run), "--config-from", str(wide)])
    assert not (tmp_path / "out2" / "ft.safetensors").exists()


def test_init_from_weights_without_the_warp_branch_starts_it_silent(tmp_path):
    """Weights trained before `warp_condition` load into a warp-conditioned model with the branch at zero, so the
    fine-tune starts from exactly the old model; a checkpoint that has the branch must still match it fully."""
    from model.checkpoint import CheckpointError, save_checkpoint
    from model.train.dit_train import load_init

    torch.manual_seed(0)
    for old_cfg in (dict(warp_condition=False, warp_sink=False, warp_skip=False),
                    dict(warp_sink=False, warp_skip=False), dict(warp_skip=False)):
        old = build_model(get_config("micro", **old_cfg))
        with torch.no_grad():
            for p in old.parameters():
                p.normal_()
        path = save_checkpoint(old, tmp_path / "old.safetensors")
        new = build_model(get_config("micro"))
        with torch.no_grad():
            new.warp_embedder.proj.weight.fill_(1.0)
            new.sink_embedder.proj.weight.fill_(1.0)
            new.warp_gate.fill_(1.0)
        load_init(new, str(path))
        assert torch.all(new.warp_gate == 0)
        assert torch.all(new.sink_embedder.proj.weight == 0) == (not old.cfg.warp_sink)
        assert torch.all(new.warp_embedder.proj.weight == 0) == (not old.cfg.warp_condition)
        sd = new.state_dict()
        assert all(torch.equal(sd[k], v) for k, v in old.state_dict().items())
    full = save_checkpoint(new, tmp_path / "new.safetensors")
    sd, _ = read_state_dict(full)
    del sd["warp_embedder.proj.bias"]
    torch.save({"model": sd}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="warp_embedder.proj.bias"):
        load_init(new, str(tmp_path / "partial.pt"))


def test_precomputed_pixel_warps_are_what_the_model_would_compute(data, tmp_path):
    """`model.train.warps` stores, per window, the pixel-space warp inputs of its ground-truth history; a batch
    (and any prefix of it) hands them to the losses, and the loss is the one computed through the VAE online."""
    import shutil

    from model.train.latents import load_vae
    from model.train.warps import Args as WarpArgs
    from model.train.warps import build_warps

    lat = tmp_path / "lat"
    shutil.copytree(Path(data[0]).parent, lat)
    build_warps(WarpArgs(latents=str(lat / "latents.json"), vae=str(data[1]), preset="micro", batch=3, device="cpu",
                         progress=False))
    cache = LatentCache.load(lat / "latents.json")
    cfg = get_config("micro", warp_space="pixel")
    vae = load_vae(data[1])
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    assert cache.warp.dtype == torch.float16 and cache.warp.shape[:3] == (len(cache), model.warp_channels, 3)
    idx = torch.tensor([3, 0, 2])
    for t in (2, 3):
        b = LatentBatch.from_cache(cache, idx, cfg, t, CPU)
        want = model.warp_of(b.latents, b.cond, [1] * t, vae)
        torch.testing.assert_close(b.warp, want, atol=2e-2, rtol=1e-2)
    assert LatentBatch.from_cache(cache, idx, get_config("micro"), 3, CPU).warp is None   # latent space: unused
    args = _args(data, "unused", objective="x0")
    rng = lambda: Draws(step_generator(0, 1, 0, 1), step_generator(0, 1, 0, 2))          # noqa: E731
    from model.train.dit_train import loss_x0
    with torch.no_grad():
        cached = float(loss_x0(model, b, args, rng()))
        online = float(loss_x0(model, LatentBatch(b.latents, b.cond, b.plucker), args, rng(), vae=vae))
    assert abs(cached - online) < 1e-2 * online
    loss_x0(model, LatentBatch(b.latents, b.cond, b.plucker), args, rng(), vae=vae).backward()
    assert model.warp_embedder.proj.weight.grad is not None                              # the warp is an input...
    assert model.warp_gate.grad.abs().sum() > 0                                          # ...and a skip to the output
    assert all(p.grad is None for p in vae.parameters())                                 # ...not a path to the VAE
    with pytest.raises(ValueError, match="pixel space"):
        loss_x0(model, LatentBatch(b.latents, b.cond, b.plucker), args, rng())
    both = LatentCache.load(f"{lat / 'latents.json'},{data[0]}")                         # one without warps
    assert both.warp is None and "warp" not in both.meta


def test_warp_gates_train_at_their_own_lr_scale(tmp_path):
    from model.train.common import set_lr
    from model.train.dit_train import make_optimizer

    model = build_model(get_config("micro"))
    opt = make_optimizer(model, _args((tmp_path, tmp_path), "unused", gate_lr_scale=30.0))
    set_lr(opt, 1e-4)
    gates = [g for g in opt.param_groups if any(p is model.warp_gate for p in g["params"])]
    assert len(gates) == 1 and len(gates[0]["params"]) == 1 and gates[0]["lr"] == pytest.approx(3e-3)
    assert all(g["lr"] == pytest.approx(1e-4) for g in opt.param_groups if g is not gates[0])
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert len(make_optimizer(build_model(get_config("micro", warp_skip=False)), _args((tmp_path, tmp_path),
                                                                                        "unused")).param_groups) == 2


def test_warp_inputs_are_made_and_checked_at_the_models_inverse_depth(data, tmp_path):
    """`--inverse-depth` warps move with the camera; the cache records the depth, and a model that warps at another
    one refuses the cache instead of training on inputs it will never see."""
    import json
    import shutil

    from model.train.dit_train import check_cache
    from model.train.latents import load_vae
    from model.train.warps import Args as WarpArgs
    from model.train.warps import build_warps

    caches = {}
    for inv in (0.0, 0.5):
        lat = tmp_path / f"lat{inv}"
        shutil.copytree(Path(data[0]).parent, lat)
        build_warps(WarpArgs(latents=str(lat / "latents.json"), vae=str(data[1]), preset="micro", batch=3,
                             device="cpu", progress=False, inverse_depth=inv, floor=inv and 1.5))
        assert json.loads((lat / "latents.json").read_text())["warp"] | {"files": 0} == {
            "space": "pixel", "sink": True, "chunk_frames": 1, "vae": str(Path(data[1]).resolve()), "files": 0,
            "inverse_depth": inv, "floor": inv and 1.5}
        caches[inv] = LatentCache.load(lat / "latents.json")
    assert (caches[0.0].warp.float() - caches[0.5].warp.float()).abs().max() > 0.1     # the walks translate
    cfg = get_config("micro", warp_space="pixel", warp_inverse_depth=0.5, warp_floor=1.5)
    b = LatentBatch.from_cache(caches[0.5], torch.tensor([1, 2]), cfg, 3, CPU)
    with torch.no_grad():
        want = build_model(cfg).warp_of(b.latents, b.cond, [1] * 3, load_vae(data[1]))
    torch.testing.assert_close(b.warp, want, atol=2e-2, rtol=1e-2)
    check_cache(caches[0.5], cfg, 3, "lat0.5")
    with pytest.raises(ValueError, match=r"\(inverse depth, floor\) \(0.0, 0.0\), the model warps at \(0.5, 1.5\)"):
        check_cache(caches[0.0], cfg, 3, "lat0.0")
