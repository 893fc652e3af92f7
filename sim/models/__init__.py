"""MJCF robot models written for s2r, and helpers to load them (optionally with terrain)."""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np

MODEL_DIR = Path(__file__).resolve().parent


def model_path(name: str) -> Path:
    """Path of a bundled model file; raises FileNotFoundError naming the available ones."""
    path = MODEL_DIR / name
    if not path.is_file():
        known = sorted(p.name for p in MODEL_DIR.glob("*.xml"))
        raise FileNotFoundError(f"no model '{name}' in {MODEL_DIR}; available: {', '.join(known)}")
    return path


def rough_heightfield(size_cells: int, amplitude: float, seed: int, smooth: int = 3) -> np.ndarray:
    """Smoothed random terrain heights in [0, 1] (MuJoCo scales by the hfield's z size).

    Args:
        size_cells: Grid cells per side.
        amplitude: Unused here except for a zero check; height scale lives in the MJCF.
        seed: Terrain seed.
        smooth: Box-filter passes; more gives rolling ground, fewer gives rubble.
    """
    rng = np.random.default_rng(seed)
    h = rng.uniform(0.0, 1.0, size=(size_cells, size_cells))
    for _ in range(smooth):
        h = (h + np.roll(h, 1, 0) + np.roll(h, -1, 0) + np.roll(h, 1, 1) + np.roll(h, -1, 1)) / 5.0
    h -= h.min()
    h /= max(h.max(), 1e-9)
    if amplitude <= 0:
        h[:] = 0.0
    # A flat pad in the middle where robots spawn keeps the first step honest.
    c = size_cells // 2
    h[c - 2 : c + 3, c - 2 : c + 3] = h[c - 2 : c + 3, c - 2 : c + 3].mean()
    return h


def load_model(name: str, terrain: str = "flat", terrain_size: float = 20.0, terrain_height: float = 0.06,
               terrain_seed: int = 0, terrain_cells: int = 200) -> mujoco.MjModel:
    """Load a bundled MJCF, optionally with a heightfield of rough ground.

    Args:
        name: Model file name in this folder.
        terrain: "flat" or "rough".
        terrain_size: Side of the square heightfield in metres.
        terrain_height: Peak height of the rough ground in metres.
        terrain_seed: Seed of the terrain shape.
        terrain_cells: Grid resolution per side.
    """
    xml = model_path(name).read_text()
    if terrain == "rough":
        half = terrain_size / 2
        xml = xml.replace(
            "<!--HFIELD_ASSET-->",
            f'<hfield name="terrain" nrow="{terrain_cells}" ncol="{terrain_cells}" '
            f'size="{half} {half} {terrain_height} 0.05"/>',
        )
        xml = xml.replace(
            "<!--HFIELD_GEOM-->",
            '<geom name="terrain" type="hfield" hfield="terrain" material="grid" contype="1" '
            'conaffinity="1" friction="1.0 0.02 0.01"/>',
        )
    elif terrain != "flat":
        raise ValueError(f"unknown terrain '{terrain}'; use 'flat' or 'rough'")
    model = mujoco.MjModel.from_xml_string(xml)
    if terrain == "rough":
        h = rough_heightfield(terrain_cells, terrain_height, terrain_seed)
        model.hfield_data[:] = h.ravel()
    return model


def terrain_height_at(model: mujoco.MjModel, xy: np.ndarray) -> np.ndarray:
    """Ground height under world points `xy` (n, 2); 0 for flat models. Nearest-cell lookup."""
    if model.nhfield == 0:
        return np.zeros(len(xy))
    nrow, ncol = int(model.hfield_nrow[0]), int(model.hfield_ncol[0])
    sx, sy, sz = model.hfield_size[0][:3]
    data = model.hfield_data[: nrow * ncol].reshape(nrow, ncol)
    col = np.clip(((xy[:, 0] + sx) / (2 * sx) * (ncol - 1)).round().astype(int), 0, ncol - 1)
    row = np.clip(((xy[:, 1] + sy) / (2 * sy) * (nrow - 1)).round().astype(int), 0, nrow - 1)
    return data[row, col] * sz


def load_crazyflie(num_vehicles: int = 1) -> mujoco.MjModel:
    """The Crazyflie 2.x model (`crazyflie.xml`), optionally with many vehicles in one world.

    Batched flights step many quadrotors with one `mj_step`: the vehicles never collide with each other
    (see the contype/conaffinity bits in the MJCF), so one world with N free bodies is N independent flights.

    Args:
        num_vehicles: Vehicles in the world. 1 returns the file as written (body "crazyflie", actuators
            "m1".."m4"); more gives copies named with a prefix "cf<i>/" (body "cf0/crazyflie", actuators
            "cf0/m1".. in vehicle order, four per vehicle), all starting at the same pose.
    """
    if num_vehicles < 1:
        raise ValueError(f"num_vehicles must be >= 1, got {num_vehicles}")
    xml = model_path("crazyflie.xml").read_text()
    if num_vehicles == 1:
        return mujoco.MjModel.from_xml_string(xml)
    spec = mujoco.MjSpec.from_string(xml)
    template = spec.body("crazyflie")
    pos = np.array(template.pos, dtype=np.float64)
    spec.delete(template)
    for i in range(num_vehicles):
        # attach_body moves the body out of its spec, so each copy comes from a fresh parse.
        child = mujoco.MjSpec.from_string(xml)
        frame = spec.worldbody.add_frame(pos=pos.tolist())
        body = child.body("crazyflie")
        body.pos = [0.0, 0.0, 0.0]
        frame.attach_body(body, prefix=f"cf{i}/")
    return spec.compile()


PANDA_OBJECTS = ("cube", "peg", "socket", "target", "flatbox", "ledge", "cabinet")


def load_panda(keep: tuple[str, ...]) -> mujoco.MjModel:
    """Load the Panda arm scene with only the task objects named in `keep`.

    `panda.xml` holds every manipulation object; a task that leaves the others in would pay for their
    contacts and degrees of freedom on every physics step, so the unused ones are deleted before compiling.

    Args:
        keep: Objects to keep, from `PANDA_OBJECTS` ("cube", "peg", "socket", "flatbox", "ledge" bodies, the
            "cabinet" body with its drawer, and the "target" site).

    Raises:
        ValueError: `keep` names an object the model does not have.
    """
    unknown = set(keep) - set(PANDA_OBJECTS)
    if unknown:
        raise ValueError(f"panda.xml has no object(s) {sorted(unknown)}; known: {', '.join(PANDA_OBJECTS)}")
    spec = mujoco.MjSpec.from_file(str(model_path("panda.xml")))
    for name in PANDA_OBJECTS:
        if name not in keep:
            spec.delete(spec.site(name) if name == "target" else spec.body(name))
    return spec.compile()
