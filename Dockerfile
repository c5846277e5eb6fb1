# Worker image for docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
COPY schemas ./schemas
COPY topics.yaml ./
RUN pip install --no-cache-dir .
ENV CONTACT_PIPELINE_SCHEMAS_DIR=/app/schemas \
    CONTACT_PIPELINE_TOPICS_FILE=/app/topics.yaml
CMD ["contact-pipeline", "worker"]
