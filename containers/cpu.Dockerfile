# segflow CPU image: every stage but training and prediction (intake, fingerprint, planning,
# preprocessing, splits, cross-validation merge, selection, postprocessing, evaluation, export,
# report). Build from the repository root:
#   docker build -f containers/cpu.Dockerfile -t ghcr.io/segflow/segflow-cpu:0.1.0 .
# or `make images` (containers/build_images.py). It installs exactly requirements.lock, with
# torch==2.13.0 taken from PyTorch's CPU wheel index (splits, selection and export load torch;
# the CUDA libraries are not needed), then segflow itself without dependencies.
# containers/gpu.Dockerfile differs only in the torch build.
#
# Build arguments, all optional:
#   BASE_IMAGE       the image to start from: the public Python 3.11 image, or one with the
#                    same `python` and `pip` made elsewhere (containers/debian-python.Dockerfile)
#   TORCH_INDEX_URL  where torch's CPU wheel comes from
#   PIP_CERT, PIP_FIND_LINKS, PIP_INDEX_URL   pip's site settings for this build only (a
#                    CA bundle and a folder of wheels, each bind-mounted into the build, a
#                    mirror of PyPI); unset unless given, and not kept in the image
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_CERT
ARG PIP_FIND_LINKS
ARG PIP_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 PYTHONNOUSERSITE=1
WORKDIR /opt/segflow
COPY requirements.lock containers/check_install.py ./
COPY pyproject.toml README.md src/
COPY segflow src/segflow
# The lock without its dependencies: it pins every package an install resolves (the
# check of the installed set below would fail otherwise).
RUN pip install --no-deps --index-url "${TORCH_INDEX_URL}" torch==2.13.0 \
 && pip install --no-deps -r requirements.lock \
 && pip install --no-deps ./src \
 && rm -rf src \
 && pip check \
 && python check_install.py --torch cpu
WORKDIR /work
