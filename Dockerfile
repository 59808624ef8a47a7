# paperboy production image.
#   docker build -t paperboy .
#   docker run -d -p 8080:8080 -v paperboy-data:/data -v "$PWD/config:/config:ro" paperboy
# /data holds the database, the inbox, the maildir and the feeds; /config the configuration
# (mount the folder, not the file, so that edits reach the running service). The process
# runs as uid 10001: a bind-mounted /data must be writable by it (chown -R 10001 ./data).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin paperboy \
 && mkdir -p /data/inbox /config \
 && chown -R paperboy:paperboy /data

WORKDIR /app

# The dependencies (and the build backend) in a layer of their own, read from pyproject.toml
# alone: a change of the code does not install them again.
COPY pyproject.toml ./
RUN python -c "import tomllib; t = tomllib.load(open('pyproject.toml', 'rb')); p = t['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['postgres'] + t['build-system']['requires']))" \
    > requirements.txt \
 && pip install -r requirements.txt

COPY README.md ./
COPY service ./service
COPY templates ./templates
RUN pip install --no-deps --no-build-isolation . && rm -rf /app/service /app/templates

COPY config/docker/paperboy.yaml /config/paperboy.yaml

USER paperboy
WORKDIR /data
VOLUME ["/data", "/config"]
EXPOSE 8080

# paperboy health asks /healthz where the configuration says the server listens (http.port);
# 503 (a failed poll or delivery, no poll for three intervals, the store away) is unhealthy.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
  CMD ["paperboy", "--config", "/config/paperboy.yaml", "-q", "health"]

CMD ["paperboy", "--config", "/config/paperboy.yaml", "run"]
