# segflow CPU image: every stage but training and prediction (intake, fingerprint, planning,
# preprocessing, splits, cross-validation merge, selection, postprocessing, evaluation, export,
# report). Build from the repository root:
#   docker build -f containers/cpu.Dockerfile -t ghcr.io/segflow/segflow-cpu:0.1.0 .
# It installs exactly requirements.lock, with torch==2.13.0 taken from PyTorch's CPU wheel
# index (splits, selection and export load torch; the CUDA libraries are not needed), then
# segflow itself without dependencies. containers/gpu.Dockerfile differs only in the torch build.
FROM python:3.11-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 PYTHONNOUSERSITE=1
WORKDIR /opt/segflow
COPY requirements.lock containers/check_install.py ./
COPY pyproject.toml README.md src/
COPY segflow src/segflow
RUN pip install --no-deps --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install -r requirements.lock \
 && pip install --no-deps ./src \
 && rm -rf src \
 && pip check \
 && python check_install.py --torch cpu
WORKDIR /work
