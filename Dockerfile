# The OneVision image: the README's install on Python 3.11, run as a non-root user. One image for
# every role: KubeRay's head and worker pods (deploy/rayservice.yaml), the stream workers
# (`python -m streaming.run_worker`) and the near-streaming DPO job (`python -m training.run_dpo_stream`).
#   docker build -t onevision:0.1.0 .
FROM python:3.11.7-slim-bookworm

# wget: KubeRay's liveness and readiness probes call it; tini: a proper PID 1 for ray start
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wget tini \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 onevision
WORKDIR /app
COPY --chown=onevision:onevision . /app
USER onevision

# the README's install (step 1 of its quick start), into /app/.venv
RUN python3.11 -m venv .venv && .venv/bin/pip install --no-cache-dir -e .

ENV PATH=/app/.venv/bin:$PATH \
    ONEVISION_CACHE=/home/onevision/.cache/onevision \
    ONEVISION_KAFKA__EMBEDDED=false \
    ONEVISION_REDIS__EMBEDDED=false
EXPOSE 8000
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "-m", "serving.run", "--config", "serving/config.yaml"]
