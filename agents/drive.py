"""`sanawm drive`: drive a world with the keyboard in a pygame window; record replayable sessions.

    sanawm drive                                         # indoor world, oracle backend, 128x128 shown 4x
    sanawm drive --task pointnav --scene outdoor --seed 3 --scale 6
    sanawm drive --backend model --model micro --size 32 # the world model (tiny once it ships)
    sanawm drive --keymap sana-wm --bind fork=f --bindings my_keys.json

Keys (--keymap ours): W/S forward/back, A/D strafe, arrows yaw (left/right) and pitch (up/down), Space/C up/down,
Q/E roll, Shift half speed; Enter new episode, P pause, N one step while paused, B fork the world (snapshot), M go
back to the fork, V start/stop recording, H HUD, Esc quit. `--keymap sana-wm` moves with the published SANA-WM
keys instead (W/S forward/back, A/D yaw, I/K pitch, J/L strafe). Every binding can be changed: `--bind
control=key` (repeatable) or `--bindings file.json` ({"forward": "w", "fork": "b", ...}); the map is printed on
start.

- Generation runs on a worker thread: the UI thread only reads keys and shows frames, so the window never freezes.
  One step is in flight at a time, with the keys held when it was sent; the K frames of each step play at the
  video frame rate (16 fps), and the next step is sent while they play.
- The HUD shows display and generation fps, step latency, the pose, and the goal's distance and bearing on
  PointNav / ImageNav.
- V writes `<out>/drive_<time>.mp4`, `_poses.npy` (every recorded frame's c2w) and a JSON log when recording
  stops (or on quit). The log holds the env
  arguments, the seed and the whole session since the first reset: every action with its step-end pose, and the
  events (reset, fork, goto-fork, record-start, record-stop) at their step index. `sanawm rollout --replay
  log.json` re-runs that timeline and reproduces the recorded frames exactly.
- `--script` replaces the keyboard (for tests and demos, e.g. under SDL_VIDEODRIVER=dummy): comma-separated
  tokens, `key*N` holds a key (or `w+d*N` several) for N steps, `_*N` waits N steps with no key, and a bare key
  presses it once (`b`, `m`, `v`, `return`, `p`, `n`, `h`). Key events go through the same handler as real ones.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sanawm_env.env import VIDEO_FPS

from .common import (
    CONTROLS,
    KEYMAPS,
    EnvArgs,
    add_dataclass_args,
    arg,
    from_namespace,
    make_env,
    make_parser,
    write_media,
)

LOG_FORMAT = "sanawm-drive-log/1"
COMMANDS = {"reset": "return", "pause": "p", "step": "n", "fork": "b", "back": "m", "record": "v", "hud": "h",
            "quit": "escape"}


# ---------------------------------------------------------------------- the world side (no pygame)


class DriveSession:
    """The world of a driving session: the env, the fork slot, the timeline log and the recording.

    Every change goes through `reset`, `step`, `fork`, `goto_fork`, `record_start` and `record_stop`; each returns
    the frames it produced (what the window shows next). `sanawm drive` calls them from its worker thread,
    `replay_log` from a log, so both run the same code.
    """

    def __init__(self, env_kwargs: dict[str, Any], out: str | Path | None = None, fps: int = VIDEO_FPS,
                 save_frames: bool = False):
        self.env_kwargs = dict(env_kwargs)
        self.env = make_env(**self.env_kwargs)
        self.k = self.env.unwrapped.frames_per_step
        self.out = Path(out) if out is not None else None
        self.fps = fps
        self.save_frames = save_frames
        self.seed: int | None = None
        self.actions: list[list[float]] = []
        self.poses: list[list[float]] = []
        self.events: list[dict[str, Any]] = []
        self.obs: dict[str, np.ndarray] | None = None
        self.info: dict[str, Any] = {}
        self.last_frame: np.ndarray | None = None
        self.last_pose = np.eye(4, dtype=np.float32)
        self.fork_state = None
        self.fork_step: int | None = None
        self.recording: list[np.ndarray] | None = None
        self.recording_poses: list[np.ndarray] = []
        self._record_event = -1
        self.recordings = 0
        self.written: list[dict[str, str]] = []

    @property
    def step_index(self) -> int:
        """Actions taken so far in the session (events are stamped with it)."""
        return len(self.actions)

    def _event(self, kind: str, **extra) -> None:
        self.events.append({"type": kind, "step": self.step_index, **extra})

    def _show(self, frames: list[np.ndarray], poses) -> list[np.ndarray]:
        """Frames (and their c2w poses) that the window shows next; recorded while recording."""
        poses = np.asarray(poses, np.float32).reshape(-1, 4, 4)
        if frames:
            self.last_frame, self.last_pose = frames[-1], poses[-1]
            if self.recording is not None:
                self.recording.extend(frames)
                self.recording_poses.extend(poses)
        return frames

    def reset(self, seed: int | None = None, auto: bool = False) -> list[np.ndarray]:
        """A new episode (the first one with `seed`; later ones continue the env's generator)."""
        if self.seed is None and seed is not None:
            self.seed = int(seed)
        self.obs, self.info = self.env.reset(seed=seed)
        self._event("reset", **({"seed": int(seed)} if seed is not None else {}), **({"auto": True} if auto else {}))
        return self._show([self.obs["rgb"]], self.info["pose"])

    def step(self, action, auto_reset: bool = True) -> list[np.ndarray]:
        """One env step; when the episode ends and `auto_reset`, a new one starts (logged as a reset)."""
        a = np.asarray(action, dtype=np.float32).reshape(6)
        self.obs, reward, terminated, truncated, info = self.env.step(a)
        self.info = info
        self.actions.append([float(x) for x in a])
        self.poses.append([float(x) for x in np.asarray(info["pose"], np.float32).ravel()])
        frames = self._show(list(info["frames"]), info["poses"])
        if (terminated or truncated) and auto_reset:
            frames = frames + self.reset(auto=True)
        return frames

    def fork(self) -> list[np.ndarray]:
        """Snapshot the world (`get_state`); `goto_fork` comes back to it."""
        self.fork_state = self.env.unwrapped.get_state()
        self.fork_step = self.step_index
        self._event("fork")
        return []

    def goto_fork(self) -> list[np.ndarray]:
        """Restore the fork snapshot (`set_state`); nothing happens without one."""
        if self.fork_state is None:
            return []
        self.env.unwrapped.set_state(self.fork_state)
        self.obs = {k: v.copy() for k, v in self.fork_state.obs.items()}
        self._event("goto-fork")
        return self._show([self.obs["rgb"]], self.fork_state.pose)

    def record_start(self) -> list[np.ndarray]:
        if self.recording is None:
            self._event("record-start")
            self._record_event = len(self.events) - 1
            self.recording = [] if self.last_frame is None else [self.last_frame]
            self.recording_poses = [] if self.last_frame is None else [self.last_pose]
        return []

    def record_stop(self, write: bool = True) -> dict[str, Any]:
        """Stop recording; with `write` (and an out folder) save the mp4 and the log. Returns the log (with paths)."""
        if self.recording is None:
            return {}
        self._event("record-stop")
        frames, poses = np.stack(self.recording), np.stack(self.recording_poses)
        self.recording = None
        log = self.log(self._record_event, len(self.events) - 1)
        log["frames"] = len(frames)
        if write and self.out is not None:
            self.recordings += 1
            stem = f"drive_{time.strftime('%Y%m%d-%H%M%S')}_{self.recordings:02d}"
            paths = write_media(self.out, stem, frames, fps=self.fps)
            log["video"] = Path(paths["video"]).name
            np.save(self.out / f"{stem}_poses.npy", poses)
            if self.save_frames:
                np.save(self.out / f"{stem}_frames.npy", frames)
            log_path = self.out / f"{stem}.json"
            log_path.write_text(json.dumps(log))
            paths["log"] = str(log_path)
            self.written.append(paths)
            log["paths"] = paths
        log["frames_array"], log["poses_array"] = frames, poses
        return log

    def log(self, start_event: int, stop_event: int) -> dict[str, Any]:
        """The replayable log of one recording: the session's timeline up to its end, with only its own
        record events (earlier recordings' markers do not change the world)."""
        events = [e for i, e in enumerate(self.events[:stop_event + 1])
                  if not e["type"].startswith("record") or i in (start_event, stop_event)]
        t = self.events[stop_event]["step"]
        return {"format": LOG_FORMAT, "env_kwargs": self.env_kwargs, "seed": self.seed, "frames_per_step": self.k,
                "fps": self.fps, "actions": self.actions[:t], "poses": self.poses[:t], "events": events}

    def hud(self) -> dict[str, Any]:
        """What the HUD shows about the world now."""
        info, obs = self.info, self.obs or {}
        out = {"step": self.step_index, "step_ms": float(info.get("step_ms", 0.0)),
               "pose": np.asarray(info.get("pose", np.eye(4)), np.float64)}
        for key in ("distance_to_goal", "success", "spl", "coverage"):
            if key in info:
                out[key] = float(info[key])
        if "pointgoal" in obs:
            out["pointgoal"] = np.asarray(obs["pointgoal"], np.float64)
        return out

    def close(self) -> None:
        self.env.close()


def load_log(path: str | Path) -> dict[str, Any]:
    """Read a drive log; raises ValueError naming what is missing."""
    log = json.loads(Path(path).read_text())
    missing = [k for k in ("env_kwargs", "actions", "events") if k not in log]
    if log.get("format") != LOG_FORMAT or missing:
        raise ValueError(f"{path} is not a sanawm drive log (format {LOG_FORMAT!r} with env_kwargs, actions, events); "
                         f"missing {missing or ['format']}")
    return log


def replay_log(log: dict[str, Any], progress: bool = True) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Re-run a drive log's timeline; returns (the recorded frames (F, H, W, 3), their c2w poses (F, 4, 4),
    {"poses_match": bool (every step-end pose equals the logged one), "steps": T})."""
    from tqdm import tqdm

    session = DriveSession(log["env_kwargs"])
    actions = np.asarray(log["actions"], dtype=np.float32).reshape(-1, 6)
    at: dict[int, list[dict]] = {}
    for e in log["events"]:
        at.setdefault(int(e["step"]), []).append(e)
    frames = frame_poses = None
    try:
        for i in tqdm(range(len(actions) + 1), desc="replay", disable=not progress, leave=False):
            for e in at.get(i, []):
                kind = e["type"]
                if kind == "reset":
                    session.reset(seed=e.get("seed"), auto=e.get("auto", False))
                elif kind == "fork":
                    session.fork()
                elif kind == "goto-fork":
                    session.goto_fork()
                elif kind == "record-start":
                    session.record_start()
                elif kind == "record-stop":
                    rec = session.record_stop(write=False)
                    frames, frame_poses = rec["frames_array"], rec["poses_array"]
                else:
                    raise ValueError(f"unknown event {kind!r} in the drive log")
            if i < len(actions):
                session.step(actions[i], auto_reset=False)
    finally:
        session.close()
    poses = np.asarray(session.poses, np.float32).reshape(-1, 4, 4)
    logged = np.asarray(log.get("poses", []), np.float32).reshape(-1, 4, 4)
    if frames is None:
        raise ValueError("the drive log holds no record-start / record-stop pair")
    return frames, frame_poses, {"poses_match": bool(np.array_equal(poses, logged)), "steps": len(actions)}


# ---------------------------------------------------------------------- the worker thread


class Worker(threading.Thread):
    """Runs DriveSession calls off the UI thread: (method, args) in, (method, frames, hud, ms) out."""

    def __init__(self, session: DriveSession):
        super().__init__(name="sanawm-drive-worker", daemon=True)
        self.session = session
        self.inbox: queue.Queue = queue.Queue()
        self.outbox: queue.Queue = queue.Queue()
        self.pending = 0  # commands sent and not yet answered (UI thread only)

    def send(self, method: str, *args) -> None:
        self.pending += 1
        self.inbox.put((method, args))

    def run(self) -> None:
        while True:
            item = self.inbox.get()
            if item is None:
                return
            method, args = item
            t0 = time.perf_counter()
            try:
                result = getattr(self.session, method)(*args)
            except Exception as e:  # handed to the UI thread, which raises it
                self.outbox.put(("error", e, None, 0.0))
                continue
            ms = (time.perf_counter() - t0) * 1e3
            self.outbox.put((method, result, self.session.hud(), ms))

    def stop(self) -> None:
        self.inbox.put(None)
        self.join(timeout=60)


# ---------------------------------------------------------------------- the UI


@dataclass
class DriveArgs(EnvArgs):
    """`sanawm drive`: the env arguments plus the window, keys, recording and scripting."""

    size: int = arg(128, "frame size in pixels (square); the model backend needs the model's size")
    scale: int = arg(4, "window pixels per frame pixel")
    fps: int = arg(VIDEO_FPS, "video frame rate the frames play at (and of recordings)")
    keymap: str = arg("ours", "driving keys: ours or sana-wm", choices=tuple(KEYMAPS))
    bindings: str = arg("", "JSON file {control: key} overriding bindings (controls: " + ", ".join([*CONTROLS,
                        *COMMANDS]) + ")", metavar="JSON")
    bind: list[str] = arg([], "override one binding, control=key (repeatable), e.g. --bind fork=f", metavar="C=KEY",
                          append=True)
    hud: bool = arg(True, "show the HUD at start (H toggles it)")
    out: str = arg("runs/drive", "folder for recordings (mp4 + JSON log)")
    record: bool = arg(False, "start recording right away")
    frames_npy: bool = arg(False, "also save recordings' raw frames as <stem>_frames.npy")
    script: str = arg("", "scripted key events instead of the keyboard, e.g. 'v,w*10,b,d*5,m,w*5,v'",
                      metavar="TOKENS")
    max_frames: int = arg(0, "quit after showing this many frames (0: no limit)")
    realtime: bool | None = arg(None, "play frames at --fps; --no-realtime shows them as fast as they come (the "
                                      "default with --script)")


def resolve_bindings(keymap: str, path: str = "", overrides: list[str] | None = None) -> tuple[dict, dict]:
    """(key -> (axis, sign), key -> command) for a keymap plus JSON-file and control=key overrides."""
    if keymap not in KEYMAPS:
        raise ValueError(f"keymap must be one of {sorted(KEYMAPS)}, got {keymap!r}")
    by_control = {c: k for k, c in KEYMAPS[keymap].items()}
    by_command = dict(COMMANDS)
    extra: dict[str, str] = json.loads(Path(path).read_text()) if path else {}
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"--bind takes control=key, got {item!r}")
        c, k = item.split("=", 1)
        extra[c.strip()] = k.strip().lower()
    for c, k in extra.items():
        if c in CONTROLS:
            by_control[c] = k
        elif c in COMMANDS:
            by_command[c] = k
        else:
            raise ValueError(f"unknown control {c!r}; controls are {sorted([*CONTROLS, *COMMANDS])}")
    keys = list(by_control.values()) + list(by_command.values())
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ValueError(f"keys bound twice: {dup}; rebind one of them with --bind control=key")
    return {k: CONTROLS[c] for c, k in by_control.items()}, {k: c for c, k in by_command.items()}


def parse_script(text: str) -> list[tuple[tuple[str, ...], int]]:
    """Script tokens -> [(keys, steps)]: steps > 0 holds the keys that many steps; steps == 0 presses them once."""
    out = []
    for tok in (t.strip() for t in text.split(",")):
        if not tok:
            continue
        keys, _, n = tok.partition("*")
        names = () if keys in ("_", "wait") else tuple(k.strip().lower() for k in keys.split("+"))
        names = tuple("return" if k == "enter" else "escape" if k == "esc" else k for k in names)
        if n and not n.isdigit():
            raise ValueError(f"bad script token {tok!r}: expected key, key*N, a+b*N or _*N")
        out.append((names, int(n) if n else 0))
    return out


def _hud_lines(h: dict[str, Any], display_fps: float, gen_ms: float, k: int, state: dict[str, Any]) -> list[str]:
    p = h["pose"]
    yaw = np.round(np.degrees(np.arctan2(p[0, 2], p[2, 2]))) + 0.0
    pitch = np.round(np.degrees(np.arcsin(np.clip(-p[1, 2], -1, 1)))) + 0.0  # + 0.0: no "-0"
    gen_fps = 1e3 * k / gen_ms if gen_ms > 0 else 0.0
    lines = [f"{display_fps:4.1f} fps shown  {gen_fps:5.1f} fps generated  step {h['step_ms']:.0f} ms",
             f"step {h['step']}  pos ({p[0, 3]:.2f}, {-p[1, 3]:.2f}, {p[2, 3]:.2f}) m  yaw {yaw:.0f}  "
             f"pitch {pitch:.0f}"]
    if "pointgoal" in h:
        d, a = h["pointgoal"]
        lines.append(f"goal {d:.2f} m at {np.degrees(a):+.0f} deg  geodesic {h.get('distance_to_goal', 0):.2f} m")
    if "success" in h:
        lines.append(f"success {h['success']:.0f}  SPL {h.get('spl', 0):.2f}")
    flags = [f for f, on in (("REC", state["recording"]), ("PAUSED", state["paused"])) if on]
    if state["fork"] is not None:
        flags.append(f"fork @ step {state['fork']}")
    if flags:
        lines.append("  ".join(flags))
    return lines


def drive(args: DriveArgs) -> dict[str, Any]:
    """Run the window until Esc, window close, the end of --script or --max-frames; returns a summary."""
    from sanawm_env.viewer import Viewer, ViewerConfig, import_pygame

    pg = import_pygame()
    moves, commands = resolve_bindings(args.keymap, args.bindings, args.bind)
    script = deque(parse_script(args.script)) if args.script else None
    realtime = (script is None) if args.realtime is None else args.realtime
    print("sanawm drive keys: " + ", ".join(f"{k}={CONTROLS_NAME[v]}" for k, v in moves.items()) + "; " +
          ", ".join(f"{k}={c}" for k, c in commands.items()))
    session = DriveSession(args.env_kwargs(), out=args.out, fps=args.fps, save_frames=args.frames_npy)
    worker = Worker(session)
    worker.start()
    viewer = Viewer(title=f"sanawm drive: {args.task} ({args.backend})", cfg=ViewerConfig(scale=args.scale,
                                                                                         hud=args.hud))
    pg.display.init()
    held: set[str] = set()
    display: deque = deque()
    state = {"paused": False, "recording": False, "fork": None}
    hud_info = session_hud = None
    shown, budget, release, quit_now = 0, 0, (), False
    frame_dt = 1.0 / max(1, args.fps)
    next_frame = time.perf_counter()
    last_show = 0.0
    gen_ms, fps_avg, t_prev = 0.0, 0.0, None
    last_frame = None

    worker.send("reset", args.seed)
    if args.record:
        worker.send("record_start")
        state["recording"] = True

    def action() -> np.ndarray:
        a = np.zeros(6, dtype=np.float32)
        for k in held:
            if k in moves:
                axis, sign = moves[k]
                a[axis] += sign
        a = np.clip(a, -1.0, 1.0)
        return a * (0.5 if held & {"left shift", "right shift"} else 1.0)

    def handle(event) -> None:
        nonlocal quit_now
        if event.type == pg.QUIT:
            quit_now = True
        elif event.type == getattr(pg, "WINDOWFOCUSLOST", -1):
            held.clear()
        elif event.type == pg.KEYUP:
            held.discard(pg.key.name(event.key))
        elif event.type == pg.KEYDOWN:
            name = pg.key.name(event.key)
            held.add(name)
            cmd = commands.get(name)
            if cmd == "quit":
                quit_now = True
            elif cmd == "reset":
                worker.send("reset")
            elif cmd == "pause":
                state["paused"] = not state["paused"]
            elif cmd == "step" and state["paused"]:
                worker.send("step", action())
            elif cmd == "fork":
                worker.send("fork")
                state["fork"] = "?"
            elif cmd == "back":
                worker.send("goto_fork")
            elif cmd == "record":
                worker.send("record_stop" if state["recording"] else "record_start")
                state["recording"] = not state["recording"]
            elif cmd == "hud":
                viewer.hud_on = not viewer.hud_on

    def post(keys, kind) -> None:
        for k in keys:
            pg.event.post(pg.event.Event(kind, key=pg.key.key_code(k), mod=0, unicode="", scancode=0))

    try:
        while True:
            for event in viewer.events() if viewer.is_open else pg.event.get():
                handle(event)
            if viewer.quit_requested:
                quit_now = True
            # results from the worker (wait a little for one when there is nothing to show: no busy loop)
            wait = 0.0 if display else (0.005 if realtime else 0.05) if worker.pending else 0.0
            while True:
                try:
                    method, result, h, ms = worker.outbox.get(timeout=wait) if wait else worker.outbox.get_nowait()
                except queue.Empty:
                    break
                wait = 0.0
                worker.pending -= 1
                if method == "error":
                    raise result
                if method == "step":
                    gen_ms = ms
                if method == "fork":
                    state["fork"] = h["step"]
                if isinstance(result, list):
                    display.extend(result)
                session_hud = h
            # send the next step: keyboard mode free-runs (unless paused), script mode spends its budget
            idle = worker.pending == 0
            if idle and not quit_now and len(display) <= session.k:
                if script is None and not state["paused"]:
                    worker.send("step", action())
                elif script is not None and budget > 0:
                    worker.send("step", action())
                    budget -= 1
            # show the next frame
            now = time.perf_counter()
            if display and (not realtime or now >= next_frame):
                last_frame = display.popleft()
                if t_prev is not None:
                    dt = now - t_prev
                    fps_avg = 1.0 / dt if fps_avg == 0 else 0.9 * fps_avg + 0.1 / max(dt, 1e-6)
                t_prev = now
                next_frame = max(next_frame + frame_dt, now - frame_dt) if realtime else now
                hud_info = _hud_lines(session_hud, fps_avg, gen_ms, session.k, state) if session_hud else None
                viewer.show(last_frame, hud_info)
                last_show = now
                shown += 1
                if args.max_frames and shown >= args.max_frames:
                    quit_now = True
            elif last_frame is not None and now - last_show > 0.1:  # keep the window and HUD alive when idle
                hud_info = _hud_lines(session_hud, fps_avg, gen_ms, session.k, state) if session_hud else None
                viewer.show(last_frame, hud_info)
                last_show = now
            if quit_now and worker.pending == 0:
                break
            # the script: next token once the world is idle and its frames are shown
            if script is not None and worker.pending == 0 and budget == 0 and not display and viewer.is_open:
                if release:
                    post(release, pg.KEYUP)
                    release = ()
                elif script:
                    keys, n = script.popleft()
                    post(keys, pg.KEYDOWN)
                    if n > 0:
                        budget, release = n, keys
                    else:
                        post(keys, pg.KEYUP)
                else:
                    quit_now = True
            if realtime:
                time.sleep(0.002)
        if state["recording"]:
            worker.send("record_stop")
            state["recording"] = False
        while worker.pending:
            method, result, h, ms = worker.outbox.get()
            worker.pending -= 1
            if method == "error":
                raise result
    finally:
        worker.stop()
        viewer.close()
        session.close()
    for p in session.written:
        print(f"recorded {p['video']} and {p['log']}")
    return {"frames_shown": shown, "steps": session.step_index, "recordings": session.written}


CONTROLS_NAME = {v: k for k, v in CONTROLS.items()}


def build_parser(parser=None):
    parser = parser or make_parser("sanawm drive", __doc__, "sanawm drive --task pointnav --scene indoor --seed 0 "
                                                            "--scale 4")
    add_dataclass_args(parser, DriveArgs)
    return parser


def main(argv=None) -> dict[str, Any]:
    return drive(from_namespace(DriveArgs, build_parser().parse_args(argv)))


if __name__ == "__main__":
    main()
