# syntax=docker/dockerfile:1
# Build: install consentd into a virtual environment.
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install .

# Run: the virtual environment only, as a non-root user.
FROM python:3.11-slim
RUN useradd --system --uid 10001 --create-home --home-dir /srv/consentd consentd
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 CONSENTD_ENV=production
WORKDIR /srv/consentd
USER consentd
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
# Behind a load balancer, set CONSENTD_FORWARDED_ALLOW_IPS to its addresses or network (e.g. 10.0.0.0/8): only then
# is its X-Forwarded-For believed, so that rate limits and evidence see each visitor's address, not the balancer's.
# Left at 127.0.0.1, every visitor shares the balancer's rate-limit bucket. Never "*" if anything else can reach us.
ENV CONSENTD_FORWARDED_ALLOW_IPS=127.0.0.1
# With --workers N, /metrics adds up every worker (serve keeps their metrics in a temporary folder under /tmp);
# set CONSENTD_METRICS_TOKEN to require a bearer token on /metrics.
# Migrate, then serve. Set CONSENTD_DATABASE_URL, CONSENTD_JWT_SECRET, CONSENTD_IDENTIFIER_KEY and CONSENTD_SIGNING_KEY
# (a PEM private key or the path of one, e.g. a mounted secret): production refuses to start without each, in one line.
CMD ["consentd", "serve", "--migrate", "--host", "0.0.0.0", "--port", "8000"]
