# segflow GPU image: training and prediction (the train, validate and predict rules).
# Build from the repository root:
#   docker build -f containers/gpu.Dockerfile -t ghcr.io/segflow/segflow-gpu:0.1.0 .
# It installs exactly requirements.lock, with torch==2.13.0 from PyPI, which on Linux x86_64
# is the CUDA build: its CUDA libraries come as pip packages pinned by torch itself, so the
# base image needs no CUDA toolkit, only the host's NVIDIA driver at run time
# (`docker run --gpus all`, `apptainer exec --nv`). Then segflow itself without dependencies.
FROM python:3.11-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 PYTHONNOUSERSITE=1
WORKDIR /opt/segflow
COPY requirements.lock containers/check_install.py ./
COPY pyproject.toml README.md src/
COPY segflow src/segflow
RUN pip install torch==2.13.0 \
 && pip install -r requirements.lock \
 && pip install --no-deps ./src \
 && rm -rf src \
 && pip check \
 && python check_install.py --torch cuda
WORKDIR /work
