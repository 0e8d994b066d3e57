#!/usr/bin/env bash
# Train on a multi-host Cloud TPU slice: the same command on every worker (docs/training.md).
# jax.distributed.initialize() detects the TPU pod by itself; no coordinator flags are needed.
#
#   TPU_NAME=my-v5p-64 ZONE=us-east5-a CONFIG=configs/train/3b_stage3.yaml \
#   WORKDIR=/mnt/shared/runs/3b_s3 launch/tpu_pod.sh --set num_steps=100
#
# WORKDIR must be shared by all workers (Filestore/NFS or a gcsfuse mount): every host writes its
# checkpoint shards there and reads them back on resume. Re-running the script resumes.
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME}"
: "${ZONE:?set ZONE}"
: "${CONFIG:?set CONFIG (e.g. configs/train/3b_stage3.yaml)}"
: "${WORKDIR:?set WORKDIR (shared by all workers)}"
PROJECT_FLAG=${PROJECT:+--project=${PROJECT}}
REPO_DIR=${REPO_DIR:-~/hourllava_jax}   # the checkout on each worker (same path everywhere)
PYTHON=${PYTHON:-.venv/bin/python}

# Quote the extra --set arguments for the remote shell.
EXTRA=""
for a in "$@"; do EXTRA+=" $(printf '%q' "$a")"; done

gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --zone="${ZONE}" ${PROJECT_FLAG} --worker=all --command="
  cd ${REPO_DIR} && \
  HOURLLAVA_JAX_CACHE=\${HOME}/.cache/hourllava_jax_xla \
  ${PYTHON} launch/train.py --config ${CONFIG} --workdir ${WORKDIR} ${EXTRA} \
  2>&1 | tee -a \${HOME}/train_\$(hostname).log
"
