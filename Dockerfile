# NeuroChip for NVIDIA GPU machines.
#   docker build -t neurochip .
#   docker run --gpus all -p 127.0.0.1:8501:8501 \
#     -v neurochip-hf:/data/hf -v neurochip-takes:/data/takes neurochip
# Weights download once into the neurochip-hf volume; takes live in neurochip-takes.

# A CUDA build of PyTorch comes with the base image; the rest of requirements.txt goes on top.
ARG BASE_IMAGE=pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HOME=/data/hf \
    NEUROCHIP_HOME=/data/takes

# ffmpeg (Debian/Ubuntu builds decode tracker modules and chip rips); curl for the healthcheck.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg curl \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 neurochip \
    && mkdir -p /data/hf /data/takes \
    && chown -R neurochip:neurochip /data

WORKDIR /opt/neurochip
COPY requirements.txt pyproject.toml README.md ./
COPY tools ./tools
# Keep the base image's CUDA torch: the pinned torch line in requirements.txt is for CPU hosts.
# Then basic-pitch without TensorFlow, as the Makefile installs it (tools/basic_pitch_wheel.py
# rewrites the official wheel's metadata to need onnxruntime instead).
RUN grep -v '^torch==' requirements.txt > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && python tools/basic_pitch_wheel.py /tmp/wheels \
    && pip install /tmp/wheels/basic_pitch-0.4.0+onnx-py2.py3-none-any.whl \
    && rm -rf /tmp/wheels
COPY neurochip ./neurochip
COPY app ./app
COPY .streamlit ./.streamlit
COPY assets ./assets
RUN pip install --no-deps -e .

USER neurochip
VOLUME ["/data/hf", "/data/takes"]
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8501/_stcore/health || exit 1
# 0.0.0.0 inside the container only; the run line above publishes it on the host's loopback.
# The HTTP API instead (a second entry point, same image; it refuses to start without a token,
# since 0.0.0.0 is beyond localhost):
#   docker run --gpus all -p 127.0.0.1:8000:8000 -e NEUROCHIP_API_TOKEN=... \
#     -v neurochip-hf:/data/hf -v neurochip-takes:/data/takes neurochip \
#     neurochip serve --host 0.0.0.0 --port 8000
EXPOSE 8000
CMD ["neurochip", "app", "--host", "0.0.0.0", "--port", "8501"]
