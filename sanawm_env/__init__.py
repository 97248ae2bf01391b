"""sanawm_env: the Gymnasium environment around a streaming world (procedural oracle worlds or the world model).

The package registers these ids (entry point `SanaWMEnv`, vector entry point `SanaWMVectorEnv`):

| id | task | observation | reward |
|---|---|---|---|
| SanaWM/FreeRoam-v0 | drive around, record data | rgb | 0 |
| SanaWM/PointNav-v0 | reach a point given in the agent frame | rgb, pointgoal | habitat PointNav |
| SanaWM/ImageNav-v0 | reach the place of a goal image | rgb, goal_rgb | habitat PointNav |
| SanaWM/Explore-v0 | see as much floor as possible | rgb | new floor area (m^2) |

    import gymnasium as gym
    import sanawm_env  # noqa: F401
    env = gym.make("SanaWM/PointNav-v0", size=64)
    envs = gym.make_vec("SanaWM/PointNav-v0", num_envs=8, size=64)   # one batched SanaWMVectorEnv

The ids are registered on import when gymnasium is installed. Without it (the GPU image has none), the
package still imports, so `sanawm_env.scenes` (the procedural worlds, used by the model's data pipeline)
works anywhere; scenes itself imports neither gymnasium nor `model`.
"""

ENV_IDS = {
    "SanaWM/FreeRoam-v0": "freeroam",
    "SanaWM/PointNav-v0": "pointnav",
    "SanaWM/ImageNav-v0": "imagenav",
    "SanaWM/Explore-v0": "explore",
}
MAX_EPISODE_STEPS = 500  # habitat's PointNav benchmark limit; applied by gymnasium's TimeLimit / the vector env


def register_envs() -> None:
    """Register the SanaWM ids with gymnasium (idempotent)."""
    import gymnasium

    for env_id, task in ENV_IDS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(
                id=env_id,
                entry_point="sanawm_env.env:SanaWMEnv",
                vector_entry_point="sanawm_env.vector:SanaWMVectorEnv",
                max_episode_steps=MAX_EPISODE_STEPS,
                kwargs={"task": task},
            )


try:
    import gymnasium  # noqa: F401
except ImportError:  # the procedural worlds do not need it
    pass
else:
    register_envs()

__all__ = ["ENV_IDS", "MAX_EPISODE_STEPS", "register_envs"]
