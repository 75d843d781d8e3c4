# segflow GPU image: training and prediction (the train, validate and predict rules).
# Build from the repository root:
#   docker build -f containers/gpu.Dockerfile -t ghcr.io/segflow/segflow-gpu:0.1.0 .
# or `make images KINDS=gpu` (containers/build_images.py). It installs exactly
# requirements.lock, with torch==2.13.0 from PyPI, which on Linux x86_64 is the CUDA build:
# its CUDA libraries come as pip packages pinned by torch itself, so the base image needs no
# CUDA toolkit, only the host's NVIDIA driver at run time (`docker run --gpus all`,
# `apptainer exec --nv`). Then segflow itself without dependencies.
#
# Build arguments, all optional:
#   BASE_IMAGE       the image to start from: the public Python 3.11 image, or one with the
#                    same `python` and `pip` made elsewhere (containers/debian-python.Dockerfile)
#   PIP_CERT, PIP_FIND_LINKS, PIP_INDEX_URL   pip's site settings for this build only (a
#                    CA bundle and a folder of wheels, each bind-mounted into the build, a
#                    mirror of PyPI); unset unless given, and not kept in the image
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG PIP_CERT
ARG PIP_FIND_LINKS
ARG PIP_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 PYTHONNOUSERSITE=1
WORKDIR /opt/segflow
COPY requirements.lock containers/check_install.py ./
COPY pyproject.toml README.md src/
COPY segflow src/segflow
# torch with its own dependencies (the CUDA libraries), from the index even where a wheel
# folder is given (a CPU wheel there, 2.13.0+cpu, would win over 2.13.0); then the lock without
# dependencies: it pins every other package an install resolves (checked below).
RUN env -u PIP_FIND_LINKS pip install torch==2.13.0 \
 && pip install --no-deps -r requirements.lock \
 && pip install --no-deps ./src \
 && rm -rf src \
 && pip check \
 && python check_install.py --torch cuda
WORKDIR /work
