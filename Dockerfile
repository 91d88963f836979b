# Res-MTNet Serve images. Two targets, each built in two stages (a venv is built, then copied into a clean runtime):
#   gpu (default): CUDA 12 + cuDNN 9 runtime, Python 3.11, onnxruntime-gpu  docker build -t resmtnet-serve:gpu .
#   cpu:           Python 3.11 slim, onnxruntime                     docker build --target cpu -t resmtnet-serve:cpu .
# The default model is baked in at /app/model_store; mount another store and point RESMTNET_MODEL_STORE at it.
# The pins below are checked against onnxruntime's published CUDA/cuDNN requirements by tests/deploy/test_dockerfile.py.

ARG PYTHON_VERSION=3.11
# onnxruntime-gpu 1.26.0 is the newest PyPI release built for CUDA 12 (12.8) and cuDNN 9; 1.27 onwards need CUDA 13.
ARG ONNXRUNTIME_GPU_VERSION=1.26.0
ARG CUDA_VERSION=12.8.1
ARG CUDNN_MAJOR=9
ARG UBUNTU_VERSION=22.04

# ---- cpu: build the venv -------------------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS cpu-build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY service ./service
RUN /opt/venv/bin/pip install --no-cache-dir -c constraints.txt ".[cpu]"

# ---- cpu: runtime --------------------------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS cpu
RUN groupadd --gid 10001 resmtnet \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin resmtnet
COPY --from=cpu-build /opt/venv /opt/venv
WORKDIR /app
COPY deploy/docker/healthcheck.py /app/healthcheck.py
COPY model_store /app/model_store
# The user has no home and the root filesystem may be read-only: HOME is /tmp. onnxruntime's telemetry stays off
# (the service sets it too): no device id written, no look-up of Microsoft's collector from a hospital network.
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    RESMTNET_HOST=0.0.0.0 RESMTNET_PORT=8000 RESMTNET_MODEL_STORE=/app/model_store \
    RESMTNET_PROVIDER=cpu RESMTNET_MAX_DELAY_MS=0 \
    HOME=/tmp ORT_DISABLE_TELEMETRY=1
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "/app/healthcheck.py", "/healthz"]
ENTRYPOINT ["python", "-m", "service"]

# ---- gpu: build the venv -------------------------------------------------------------------------------------------
FROM nvidia/cuda:${CUDA_VERSION}-cudnn-runtime-ubuntu${UBUNTU_VERSION} AS gpu-build
ARG PYTHON_VERSION
ARG ONNXRUNTIME_GPU_VERSION
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The base image tag pins the distribution; Ubuntu's security updates replace any pinned package version.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends "python${PYTHON_VERSION}" "python${PYTHON_VERSION}-venv" \
    && rm -rf /var/lib/apt/lists/* \
    && "python${PYTHON_VERSION}" -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md constraints.txt constraints-gpu.txt ./
COPY service ./service
# onnxruntime-gpu alone, not the gpu extra: its nvidia-* CUDA and cuDNN wheels are for hosts with only a driver (make
# run). Here the base image has both, so the image holds one CUDA stack, the one the runtime stage's check tests.
RUN /opt/venv/bin/pip install --no-cache-dir -c constraints.txt -c constraints-gpu.txt . \
        "onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}" \
    && /opt/venv/bin/python -c "import importlib.util, onnxruntime as ort, sys; \
assert ort.__version__ == sys.argv[1], ort.__version__; \
assert 'CUDAExecutionProvider' in ort.get_available_providers(); \
assert importlib.util.find_spec('nvidia') is None, 'a second CUDA stack (nvidia-* wheels)'" \
        "${ONNXRUNTIME_GPU_VERSION}"

# ---- gpu: runtime (the default target) -----------------------------------------------------------------------------
FROM nvidia/cuda:${CUDA_VERSION}-cudnn-runtime-ubuntu${UBUNTU_VERSION} AS gpu
ARG PYTHON_VERSION
ARG CUDNN_MAJOR
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends "python${PYTHON_VERSION}" \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 resmtnet \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin resmtnet
COPY --from=gpu-build /opt/venv /opt/venv
# Fail the build, not the first request, when the base image lacks a library onnxruntime's CUDA provider links to.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN ldconfig -p | grep "libcudnn.so.${CUDNN_MAJOR} " \
    && ldd "/opt/venv/lib/python${PYTHON_VERSION}/site-packages/onnxruntime/capi/libonnxruntime_providers_cuda.so" \
        > /tmp/ldd.txt \
    && if grep "not found" /tmp/ldd.txt; then exit 1; fi \
    && rm /tmp/ldd.txt
WORKDIR /app
COPY deploy/docker/healthcheck.py /app/healthcheck.py
COPY model_store /app/model_store
# The user has no home and the root filesystem is read-only: HOME and CUDA's kernel cache live in /tmp (an emptyDir or
# tmpfs), so a GPU newer than the prebuilt kernels compiles them once per container, not on every request.
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    RESMTNET_HOST=0.0.0.0 RESMTNET_PORT=8000 RESMTNET_MODEL_STORE=/app/model_store \
    RESMTNET_PROVIDER=cuda RESMTNET_MAX_DELAY_MS=2 \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    HOME=/tmp CUDA_CACHE_PATH=/tmp/cuda-cache ORT_DISABLE_TELEMETRY=1
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "/app/healthcheck.py", "/healthz"]
ENTRYPOINT ["python", "-m", "service"]
