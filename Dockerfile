# One image for the API and the workers. CPU-only torch is installed first so pip never pulls a CUDA build.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
WORKDIR /app
RUN pip install --no-cache-dir "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY switchboard ./switchboard
COPY service ./service
COPY routers ./routers
COPY classifiers ./classifiers
COPY workers ./workers
RUN pip install --no-cache-dir .
# The encoder's ONNX graphs, exported from the torch model at build time (the service would do it on first start).
ENV SWITCHBOARD_ONNX_CACHE_DIR=/opt/switchboard/onnx
RUN python -m classifiers.onnx_export --backend onnx --cache-dir "$SWITCHBOARD_ONNX_CACHE_DIR"
RUN useradd --system --uid 10001 switchboard && chown -R switchboard "$SWITCHBOARD_ONNX_CACHE_DIR"
USER switchboard
EXPOSE 8000
CMD ["switchboard", "serve", "--host", "0.0.0.0", "--port", "8000"]
