# A GPU worker for `benchlib run --cluster`: benchlib on a CUDA base image, running one
# Dask worker that advertises the instance type it runs on.
#
# Not built or run on the development machine (it has no Docker engine and no GPU).
# On a GPU host with the NVIDIA container toolkit:
#   docker build -t benchlib-worker .
#   docker run --gpus all --network host \
#     -e SCHEDULER=tcp://10.0.0.5:8786 -e INSTANCE=g5.4xlarge benchlib-worker
# torch 2.14.1's wheels carry their own CUDA 13 libraries; the base image brings the
# matching runtime layout, and the host needs a driver new enough for CUDA 13.
FROM nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip git make \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/benchlib
COPY . .
RUN python3 -m venv .venv \
 && .venv/bin/pip install -e . \
 && .venv/bin/python -m ipykernel install --prefix .venv --name benchlib --display-name "benchlib (.venv)"
ENV PATH=/opt/benchlib/.venv/bin:$PATH

# One task at a time: a benchmark owns the GPU while it runs.
CMD ["sh", "-c", "exec dask worker \"$SCHEDULER\" --resources \"$INSTANCE=1\" --nthreads 1 --name \"$INSTANCE-$(hostname)\""]
