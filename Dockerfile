# paperboy production image: docker build -t paperboy . && docker run -p 8080:8080 -v paperboy-data:/data -v ./inbox:/inbox paperboy
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin paperboy \
 && mkdir -p /data /inbox /config \
 && chown paperboy:paperboy /data /inbox

WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY templates ./templates
RUN pip install '.[postgres]' && rm -rf /app/service /app/templates

COPY config/docker.yaml /config/paperboy.yaml

USER paperboy
WORKDIR /data
VOLUME ["/data", "/inbox", "/config"]
EXPOSE 8080

# The web server answers /healthz with 200 while the store is reachable (503 when not).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status != 200)"]

CMD ["paperboy", "--config", "/config/paperboy.yaml", "run"]
