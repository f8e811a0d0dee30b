# One image for every Switchyard process: gateway, worker, bridge, watchdog, batch worker.
# GPU hosts: build FROM an image with CUDA's torch instead, or install the CUDA wheel.
FROM python:3.11-slim
WORKDIR /app
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md constraints.txt ./
COPY broker ./broker
COPY dispatcher ./dispatcher
COPY workers ./workers
COPY ops ./ops
# src/switchyard/ links to the folders above: the image installs them as switchyard.*
COPY src ./src
RUN pip install --no-cache-dir -c constraints.txt '.[gpu,gateway,batch]'
ENTRYPOINT ["switchyard"]
CMD ["--help"]
