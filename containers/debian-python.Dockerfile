# A stand-in for the public base image (python:3.11-slim-bookworm) where no registry can be
# reached: Debian 12's own Python 3.11 in a virtual environment whose `python` and `pip` come
# first on PATH, as they do in the public image. containers/build_images.py --base debootstrap
# builds it on a root file system that debootstrap made from a Debian mirror and
# `podman import` turned into an image (DEBIAN_IMAGE); the segflow recipes then take it as
# their BASE_IMAGE. Nothing here is segflow's.
ARG DEBIAN_IMAGE
FROM ${DEBIAN_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && python3 -m venv /usr/local/python
ENV PATH=/usr/local/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["python3"]
