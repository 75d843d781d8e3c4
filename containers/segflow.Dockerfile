# One image for every segflow stage, installing exactly requirements.lock and the package.
#   docker build -f containers/segflow.Dockerfile -t segflow:0.1.0 .
# PyPI's torch==2.13.0 for Linux x86_64 is a CUDA build: it runs on CPU and on NVIDIA GPUs.
# (Separate lighter CPU and GPU images come with the cluster/containers work.)
FROM python:3.11-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
WORKDIR /opt/segflow
COPY requirements.lock pyproject.toml README.md ./
COPY segflow ./segflow
RUN pip install torch==2.13.0 \
 && pip install -r requirements.lock \
 && pip install --no-deps . \
 && python -c "import segflow, torch, SimpleITK; print('segflow', segflow.__version__)"
WORKDIR /work
