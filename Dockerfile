# minisir in a container. CUDA by default; a CPU image with --build-arg FLAVOR=cpu.
#
#   docker build -t minisir .                                # CUDA (llama.cpp built with -DGGML_CUDA=on)
#   docker build -t minisir:cpu --build-arg FLAVOR=cpu .     # CPU only
#   docker run --gpus all -v $PWD/runs:/runs minisir run recipes/gemma2b.yaml --set run.dir=/runs/gemma2b
#
# Running the same command again resumes from /runs/gemma2b. Recipes are read relative to
# /opt/minisir (the bundled recipes/ are there); mount your own GGUF files, e.g.
# `-v $PWD/models:/opt/minisir/models` for recipes/gemma2b.yaml. Derived files (assembled
# bundled model, dequantised checkpoints) go to /runs/.cache so later containers reuse them.
# Building needs BuildKit (DOCKER_BUILDKIT=1): only the stages of the chosen FLAVOR are built.
# Offline or behind a proxy, these optional build inputs help (none is needed otherwise):
#   --build-arg CPU_BASE=IMAGE         a local base for the CPU flavor (e.g. one made with
#                                      debootstrap and `docker import`), instead of ubuntu
#   --secret id=ca_bundle,src=FILE     a CA bundle for pip, when TLS goes through a local CA
#   --build-arg PIP_FIND_LINKS=URL     a wheelhouse (e.g. a CPU-only torch wheel) for pip
# `docker stop` sends SIGTERM: the run stops at the end of the current phase (give it time
# with `docker stop -t 600`); nothing half-written is ever committed either way.

ARG FLAVOR=cuda
ARG CUDA_VERSION=12.8.1
ARG UBUNTU_VERSION=24.04
ARG CPU_BASE=ubuntu:${UBUNTU_VERSION}

# ---------------------------------------------------------------- bases, picked by FLAVOR
FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu${UBUNTU_VERSION} AS build-cuda
# llama.cpp's CUDA kernels for these GPU generations (Ampere, Ada, Hopper); override to trim build time.
ARG CUDA_ARCHITECTURES="80;86;89;90"
ENV LLAMA_CMAKE_ARGS="-DGGML_CUDA=on -DLLAVA_BUILD=OFF -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES}"

FROM ${CPU_BASE} AS build-cpu
ENV LLAMA_CMAKE_ARGS="-DLLAVA_BUILD=OFF"

FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu${UBUNTU_VERSION} AS runtime-cuda

FROM ${CPU_BASE} AS runtime-cpu

# ---------------------------------------------------------------- build: the llama-cpp-python wheel
FROM build-${FLAVOR} AS build
ARG LLAMA_VERSION=0.3.36
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-dev python3-venv build-essential cmake git ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/build-venv
# The source package is kept beside the wheel: it also carries llama.cpp's HF -> GGUF converter,
# which docker-install.sh copies into the venv for `minisir export`.
# No GPU while building: link against the driver stub the devel image ships.
ARG PIP_FIND_LINKS=""
RUN --mount=type=secret,id=ca_bundle \
    if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
 && if [ -z "$PIP_FIND_LINKS" ]; then unset PIP_FIND_LINKS; fi \
 && /opt/build-venv/bin/python -m pip download --no-deps --no-binary llama-cpp-python "llama-cpp-python==${LLAMA_VERSION}" -d /wheels \
 && if [ -d /usr/local/cuda/lib64/stubs ]; then ln -sf libcuda.so /usr/local/cuda/lib64/stubs/libcuda.so.1; fi \
 && LD_LIBRARY_PATH=/usr/local/cuda/lib64/stubs:${LD_LIBRARY_PATH:-} CMAKE_ARGS="$LLAMA_CMAKE_ARGS" \
      /opt/build-venv/bin/python -m pip wheel --no-deps "/wheels/llama_cpp_python-${LLAMA_VERSION}.tar.gz" -w /wheels

# ---------------------------------------------------------------- runtime
FROM runtime-${FLAVOR} AS runtime
# torch requirement, as in setup.sh (the default wheel carries its own CUDA libraries).
ARG TORCH_SPEC=torch==2.13.0
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv libgomp1 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
WORKDIR /opt/minisir
COPY pyproject.toml README.md ./
COPY minisir ./minisir
COPY recipes ./recipes
COPY tests ./tests
COPY scripts ./scripts
ARG PIP_FIND_LINKS=""
RUN --mount=type=secret,id=ca_bundle \
    if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
 && if [ -z "$PIP_FIND_LINKS" ]; then unset PIP_FIND_LINKS; fi \
 && MINISIR_VENV=/opt/venv WHEELS=/wheels TORCH_SPEC="$TORCH_SPEC" scripts/docker-install.sh \
 && rm -rf /wheels /root/.cache/pip
ENV PATH=/opt/venv/bin:$PATH \
    MINISIR_CACHE=/runs/.cache \
    PYTHONUNBUFFERED=1
VOLUME ["/runs"]
ENTRYPOINT ["minisir"]
CMD ["--help"]
