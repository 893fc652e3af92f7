#!/usr/bin/env bash
# Issue 17's terrain teacher on a lent GPU machine, which reaches no package registry: MuJoCo, MuJoCo Warp and
# Warp travel in .wparts/ (Warp as an xz archive split in two, since one call carries at most 64 MiB; the first
# half is copied to /root/parts by an earlier call on the same machine), then:
#   1. the terrain task's physics on the GPU against the CPU backend (4 envs, 50 control steps, same actions);
#   2. bench/terrain_teacher.py on the warp backend (GPU physics, the numpy task, PPO on the CPU threads),
#      chunks trained and snapshotted only; the snapshots are judged afterwards with --eval-chunks on any machine.
# Device call: `bash bench/gpu_terrain_teacher.sh` with carry [".wparts/b"] (.wparts/a went first); results land in $OUT.
# Knobs: DEADLINE (s from the start when training is stopped, 570), MIN (training minutes, 6), CHUNK (1.5),
# ENVS (4096, per rank), THREADS (16, per rank), RANKS (1: data-parallel processes; e.g. RANKS=4 THREADS=4 spreads
# the numpy task, 72 % of each iteration in one process, over the cores), DEVICE (cuda:0), SITE (/tmp/site: where
# the packages go; a folder that already holds warp/ is used as it is, e.g. a venv's site-packages for a dry run).
set -uo pipefail
export OUT=${OUT:-/tmp/gpu_out} DEVICE=${DEVICE:-cuda:0}
mkdir -p "$OUT"
MIN=${MIN:-6} CHUNK=${CHUNK:-1.5} ENVS=${ENVS:-4096} THREADS=${THREADS:-16} RANKS=${RANKS:-1}
SITE=${SITE:-/tmp/site}
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
if [ ! -d "$SITE/warp" ]; then
  mkdir -p "$SITE"
  cat /root/parts/warp.tar.xz.aa .wparts/b/warp.tar.xz.ab | python3 -c "import lzma, sys, tarfile
tarfile.open(fileobj=lzma.open(sys.stdin.buffer), mode='r|').extractall('$SITE')" || exit 3
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .wparts/b/*.whl || exit 4
  mkdir -p "$SITE/s2r"
  for d in sim policies real calibration; do ln -sfn "$PWD/$d" "$SITE/s2r/$d"; done
fi
export PYTHONPATH=$SITE PYTHONUNBUFFERED=1
echo "setup $(( $(date +%s) - t0 )) s"
python3 -c "import warp, mujoco, mujoco_warp, torch; warp.init(); print('warp', warp.__version__, 'mujoco', mujoco.__version__, 'torch', torch.__version__, torch.cuda.is_available())" || exit 5
QUIET='solver iterations limit\|linesearch iterations limit\|To disable the print\|^Module '

# 1. Parity: the same terrain, spawn and actions on both backends (this also fills Warp's kernel cache).
timeout 240 python3 - <<'EOF' 2>&1 | grep -v "$QUIET" | tail -20
import json, os, time
import numpy as np
import s2r.sim as S
n, steps, res = 4, 50, {}
rng = np.random.default_rng(0)
acts = rng.normal(0, 0.3, (steps, n, 12)).astype(np.float32)
for be in ("cpu", "warp"):
    over = {"backend.name": be, **({"backend.device": os.environ["DEVICE"]} if be == "warp" else {})}
    t = time.time()
    env = S.make("Go1-Velocity-Terrain", n, cfg=S.task_config("Go1-Velocity-Terrain", over), seed=0)
    env.reset(seed=0)
    zs = []
    for k in range(steps):
        env.step(acts[k])
        zs.append(env.backend.qpos[:, :3].copy())
    res[be] = np.array(zs)
    res[be + "_s"] = time.time() - t
    env.close()
d = np.abs(res["cpu"] - res["warp"])
out = {"envs": n, "control_steps": steps, "max_abs_base_pos_diff_m": float(d.max()),
       "base_pos_diff_m_at_steps_10_25_50": [float(d[k - 1].max()) for k in (10, 25, 50)],
       "cpu_final_base_z": res["cpu"][-1, :, 2].tolist(), "warp_final_base_z": res["warp"][-1, :, 2].tolist(),
       "warp_first_call_s": round(res["warp_s"], 1)}
print(json.dumps(out))
open(os.path.join(os.environ["OUT"], "parity.json"), "w").write(json.dumps(out, indent=1))
EOF
echo "parity done $(( $(date +%s) - t0 )) s"

# 2. Training: chunks only (<out>.json is rewritten after each); stopped at DEADLINE s after the start, so the
#    device call's limit still leaves time to pack what the finished chunks left.
left=$(( ${DEADLINE:-570} - ($(date +%s) - t0) - 10 ))
echo "training for at most $left s"
timeout "$left" python3 bench/terrain_teacher.py --backend warp --device "$DEVICE" --threads "$THREADS" --ranks "$RANKS" \
  --num-envs "$ENVS" --minutes "$MIN" --chunk "$CHUNK" --no-eval --run-dir runs/gpu_teacher \
  --out "$OUT/terrain_teacher_gpu" 2>&1 | grep -v "$QUIET" > "$OUT/train.log"
echo "train rc ${PIPESTATUS[0]} at $(( $(date +%s) - t0 )) s"
tail -c 3000 "$OUT/train.log"
tar -czf "$OUT/gpu_teacher_run.tgz" -C runs gpu_teacher && ls -la "$OUT"
echo "total $(( $(date +%s) - t0 )) s"
